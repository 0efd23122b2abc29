"""Runs side by side in benchmarks/quality.py (``--jobs``): each run a child with a share of
the cores and a log of its own, a failed run reported without stopping the others; and the
share itself (tfrrl/training/sweep.py ``threads_per_run``)."""

from __future__ import annotations

import os

import pytest

from benchmarks import quality
from tfrrl.training import sweep


def test_threads_per_run_shares_the_cores(monkeypatch):
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    assert sweep.threads_per_run(1) is None          # one run: TensorFlow's default
    assert sweep.threads_per_run(2) == 4             # 8 cores / 2 runs
    assert sweep.threads_per_run(3) == 2             # 8 // 3
    assert sweep.threads_per_run(16) == 1            # never below one
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "3")
    assert sweep.threads_per_run(2) is None          # the user's setting is kept


def test_run_side_by_side_gives_every_run_its_share_and_log(monkeypatch, tmp_path):
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    calls = []

    def fake_run(argv, name, seed, out, threads=None, log=None):
        calls.append((name, seed, threads, log))
        if name == "ple":
            raise RuntimeError(f"run {name} seed {seed} failed (exit 1); see {log}")
        return {"config": name, "seed": seed}

    monkeypatch.setattr(quality, "run_isolated", fake_run)
    todo = [(0, "dnn"), (0, "ple"), (1, "dnn")]
    got = {key: (entry, error) for key, entry, error in
           quality.run_side_by_side(["--dataset", "synthetic"], todo, str(tmp_path), jobs=2)}
    assert set(got) == set(todo)
    assert got[0, "dnn"] == ({"config": "dnn", "seed": 0}, "")
    assert got[1, "dnn"][0] == {"config": "dnn", "seed": 1}
    # The failed run is reported, the others still ran.
    assert got[0, "ple"][0] is None and "ple seed 0 failed" in got[0, "ple"][1]
    assert sorted(c[:3] for c in calls) == [("dnn", 0, 2), ("dnn", 1, 2), ("ple", 0, 2)]
    assert {c[3] for c in calls} == {str(tmp_path / "runs" / f"{n}-seed{s}.log")
                                     for s, n in todo}


def test_jobs_below_one_is_refused(capsys):
    with pytest.raises(SystemExit) as stop:
        quality.main(["--dataset", "synthetic", "--jobs", "0"])
    assert stop.value.code == 2
    assert "--jobs must be at least 1" in capsys.readouterr().err
