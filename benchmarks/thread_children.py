"""Comparing TensorFlow thread-pool sizes side by side: one child process per setting.

TensorFlow fixes a process's intra-op and inter-op pools at its first op, so two pool settings
cannot share a process. A benchmark's ``--threads default,1:2,…`` mode starts one child per
setting (``TF_NUM_INTRAOP_THREADS`` / ``TF_NUM_INTEROP_THREADS`` in its environment), and the
children take turns: each times one round of its work while the others wait idle, in an order
that alternates between rounds, so every setting meets the same machine load.

The protocol: a child prints ``CHILD_MARK + json`` lines (``{"ready": true}`` once built and
warmed up, then one answer per ``round`` line read on stdin: ``{name: [wall_s, cpu_s]}``);
any other line it prints is passed through, prefixed with its setting. The children are
``benchmarks.train_step --threads`` and ``benchmarks.scoring_speed --threads``.

The same turns compare two versions of the code: ``benchmarks.train_step --against REV`` runs
one child in this checkout and one in a git worktree of REV (:func:`checkout_children`).
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from typing import Callable, Dict, List, Sequence, Tuple

CHILD_MARK = "@@"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_POOL_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def parse_thread_setting(text: str) -> Dict[str, str]:
    """``default`` → TensorFlow's own pools; ``INTRA[:INTER]`` → the environment of a process
    with those pool sizes (``TF_NUM_INTRAOP_THREADS`` / ``TF_NUM_INTEROP_THREADS``)."""
    if text == "default":
        return {}
    intra, _, inter = text.partition(":")
    if not intra.isdigit() or int(intra) < 1 or (inter and (not inter.isdigit() or int(inter) < 1)):
        raise ValueError(f"--threads: {text!r} is not 'default' or INTRA[:INTER] "
                         "(positive integers), e.g. 1:2")
    env = {"TF_NUM_INTRAOP_THREADS": intra}
    if inter:
        env["TF_NUM_INTEROP_THREADS"] = inter
    return env


def parse_thread_settings(text: str) -> List[str]:
    """The comma-separated settings of ``--threads``, each checked."""
    settings = text.split(",")
    for setting in settings:
        parse_thread_setting(setting)
    return settings


def child_say(payload) -> None:
    """A child's answer line."""
    print(CHILD_MARK + json.dumps(payload), flush=True)


def serve_rounds(time_round: Callable[[int], Dict[str, Tuple[float, float]]]) -> None:
    """A child's loop, once its work is built and warmed up: says it is ready, then answers
    each ``round`` line on stdin with ``time_round(round_index)``."""
    child_say({"ready": True})
    for r, line in enumerate(sys.stdin):
        if line.strip() != "round":
            break
        child_say(time_round(r))


# A child: (its label in the results, its thread-pool setting, the checkout it runs in).
ChildSpec = Tuple[str, str, str]


def pool_children(settings: Sequence[str]) -> List[ChildSpec]:
    """One child per thread-pool setting, each in this checkout, labelled by its setting."""
    return [(setting, setting, REPO) for setting in settings]


def checkout_children(checkouts: Sequence[Tuple[str, str]], setting: str = "default"
                      ) -> List[ChildSpec]:
    """One child per (label, checkout directory), every one with the pools of ``setting``:
    ``python -m`` puts the child's working directory first on its path, so each runs its own
    checkout's code."""
    return [(label, setting, directory) for label, directory in checkouts]


class ThreadChild:
    """One child process (label, pools of ``setting``, working directory ``cwd``);
    ``module_args`` is its command after ``python -m``."""

    def __init__(self, spec: ChildSpec, module_args: Sequence[str]):
        label, setting, cwd = spec
        env = {k: v for k, v in os.environ.items() if k not in _POOL_VARIABLES}
        env.update(parse_thread_setting(setting))
        self.label = label
        self.process = subprocess.Popen([sys.executable, "-m", *module_args], cwd=cwd, env=env,
                                        text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def answer(self) -> Dict:
        for line in self.process.stdout:
            if line.startswith(CHILD_MARK):
                return json.loads(line[len(CHILD_MARK):])
            print(f"  [{self.label}] {line.rstrip()}", flush=True)
        raise RuntimeError(f"the {self.label} child ended early "
                           f"(exit {self.process.wait()})")

    def round(self) -> Dict:
        self.process.stdin.write("round\n")
        self.process.stdin.flush()
        return self.answer()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait()


def take_turns(specs: Sequence[ChildSpec], module_args: Sequence[str], rounds: int,
               on_round: Callable[[int], None] = lambda r: None,
               ) -> Dict[Tuple[str, str], List[Tuple[float, float]]]:
    """Starts one child per spec (:func:`pool_children`, :func:`checkout_children`; one at a
    time: a build does not slow another's warm-up), then runs ``rounds`` rounds, the children
    in alternating order; returns the (wall, CPU) seconds of each (label, name) per round."""
    children: List[ThreadChild] = []
    times: Dict[Tuple[str, str], List[Tuple[float, float]]] = collections.defaultdict(list)
    try:
        for spec in specs:
            children.append(ThreadChild(spec, module_args))
            children[-1].answer()
        for r in range(max(1, rounds)):
            for child in (children if r % 2 == 0 else children[::-1]):
                for name, (wall, cpu) in child.round().items():
                    times[(child.label, name)].append((wall, cpu))
            on_round(r)
    finally:
        for child in children:
            child.close()
    return times
