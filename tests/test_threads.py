"""train.intra_op_threads / inter_op_threads: TensorFlow's pool sizes for training
(tfrrl.training.threads)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO
from tfrrl import config
from tfrrl.training import threads


@pytest.mark.parametrize("intra,inter,cores,branched,sizes", [
    (None, None, 2, True, (1, 2)),   # the measured point: one intra-op thread, two inter-op
    (None, None, 1, True, (1, 2)),   # never below one thread
    (None, None, 8, True, (4, 2)),   # half the cores intra-op
    (None, None, 2, False, (0, 0)),  # not branched (the DNN): TensorFlow's default
    (3, 1, 2, True, (3, 1)),         # as written
    (None, 1, 2, False, (0, 1)),     # one of the two given
    (0, 0, 2, True, (0, 0)),         # 0: TensorFlow chooses (its default)
])
def test_pool_sizes(intra, inter, cores, branched, sizes):
    assert threads.pool_sizes(intra, inter, cores, branched) == sizes


def test_only_the_hybrid_expert_backbone_is_branched():
    from tfrrl.model.backbones import backbone_names, backbone_spec  # registers them all
    from tfrrl.model.backbones.registry import BRANCHED

    assert [n for n in backbone_names() if BRANCHED in backbone_spec(n).capabilities] == ["rrl"]


@pytest.mark.parametrize("bad", ["train.intra_op_threads=-1", "train.inter_op_threads=two",
                                 "train.intra_op_threads=1.5"])
def test_a_bad_size_is_refused_when_the_config_loads(bad):
    with pytest.raises(ValueError, match=r"train\.(intra|inter)_op_threads must be"):
        config.load_experiment(None, [bad])


def test_the_environment_wins(monkeypatch):
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "1")
    assert threads.apply(3, 3, True) is None


_FRESH_PROCESS = """
import os
for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
    os.environ.pop(name, None)
import tensorflow as tf
from tfrrl.training import threads
print(threads.apply(1, 3, False))
tf.constant(1.0) + 1.0  # the runtime starts with the pools set above
print(tf.config.threading.get_intra_op_parallelism_threads(),
      tf.config.threading.get_inter_op_parallelism_threads())
print(threads.apply(2, 2, False))  # too late: left as it is
print(tf.config.threading.get_intra_op_parallelism_threads())
"""


def test_applied_before_the_runtime_starts_and_left_alone_after():
    out = subprocess.run([sys.executable, "-c", _FRESH_PROCESS], cwd=REPO, check=True,
                         capture_output=True, text=True, timeout=300).stdout.split("\n")
    assert out[:4] == ["(1, 3)", "1 3", "None", "1"]
