"""A child for tests/test_train_step_levers.py: answers each round with the pool sizes in its
environment (as [value, round]); no TensorFlow."""

import os

from benchmarks import thread_children


def _pools(r: int):
    return {name: [float(os.environ.get(f"TF_NUM_{name.upper()}OP_THREADS", 0)), float(r)]
            for name in ("intra", "inter")}


if __name__ == "__main__":
    thread_children.serve_rounds(_pools)
