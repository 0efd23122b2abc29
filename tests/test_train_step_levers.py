"""benchmarks/train_step.py: the cumulative speed levers and the --threads settings."""

from __future__ import annotations

import pytest

from benchmarks import thread_children, train_step


def test_each_lever_adds_one_switch_to_the_path_before():
    names = [name for name, _ in train_step.SPEED_LEVERS]
    assert names == ["reference", "+blocks", "+blocks+unique", "+blocks+unique+fused",
                     "+blocks+unique+fused+bf16"]
    paths = [dict(o.split("=") for o in overrides) for _, overrides in train_step.SPEED_LEVERS]
    assert paths[0] == {"model.pair_blocks": "false", "train.unique_candidates": "false",
                        "train.fused_adam": "false", "model.compute_dtype": "float32"}
    for before, after in zip(paths, paths[1:]):
        assert len({k for k in after if after[k] != before[k]}) == 1
    assert paths[-1] == {"model.pair_blocks": "true", "train.unique_candidates": "true",
                         "train.fused_adam": "true", "model.compute_dtype": "bfloat16"}


@pytest.mark.parametrize("text,env", [
    ("default", {}),
    ("1", {"TF_NUM_INTRAOP_THREADS": "1"}),
    ("1:2", {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "2"}),
])
def test_thread_settings(text, env):
    assert thread_children.parse_thread_setting(text) == env


@pytest.mark.parametrize("lever,overrides,shown", [
    ("+blocks+unique+fused+bf16", [], "+blocks+unique+fused+bf16"),
    ("+blocks+unique+fused+bf16", ["model.compute_dtype=float32"], "+blocks+unique+fused"),
    ("+blocks+unique", ["model.pair_blocks=false", "train.batch_size=64"], "+unique"),
    ("+blocks", ["model.pair_blocks=true"], "+blocks"),  # the lever's own value: kept
    ("+blocks", ["model.pair_blocks=false"], "reference"),
])
def test_a_lever_turned_back_off_by_set_leaves_the_label(lever, overrides, shown):
    assert train_step.shown_lever(lever, overrides) == shown


def test_children_take_turns_with_their_own_pools():
    """Each setting's child sees its pool sizes in its environment (TensorFlow reads them at
    its first op) and answers every round; 'default' leaves both unset."""
    times = thread_children.take_turns(thread_children.pool_children(["1:2", "default"]),
                                       ["tests.thread_child_probe"], rounds=3)
    assert times == {("1:2", "intra"): [(1.0, 0.0), (1.0, 1.0), (1.0, 2.0)],
                     ("1:2", "inter"): [(2.0, 0.0), (2.0, 1.0), (2.0, 2.0)],
                     ("default", "intra"): [(0.0, 0.0), (0.0, 1.0), (0.0, 2.0)],
                     ("default", "inter"): [(0.0, 0.0), (0.0, 1.0), (0.0, 2.0)]}


@pytest.mark.parametrize("bad", ["0:2", "1:0", "x", "1:2:3", ""])
def test_a_bad_thread_setting_is_one_clear_error(bad, capsys):
    with pytest.raises(SystemExit):
        train_step.main(["--threads", f"default,{bad}"])
    assert "is not 'default' or INTRA[:INTER]" in capsys.readouterr().err


_PROBE = '''import json, sys
print("@@" + json.dumps({"ready": True}), flush=True)
for r, line in enumerate(sys.stdin):
    print("@@" + json.dumps({"here": [%s, float(r)]}), flush=True)
'''


def test_checkout_children_each_run_their_own_checkouts_code(tmp_path):
    """Two checkouts holding a module of the same name that answers differently: each child
    answers with its own directory's module (what --against relies on to time REV's code)."""
    dirs = []
    for name, value in (("one", 1.0), ("two", 2.0)):
        d = tmp_path / name
        d.mkdir()
        (d / "probe_here.py").write_text(_PROBE % value)
        dirs.append((name, str(d)))
    times = thread_children.take_turns(thread_children.checkout_children(dirs),
                                       ["probe_here"], rounds=2)
    assert times == {("one", "here"): [(1.0, 0.0), (1.0, 1.0)],
                     ("two", "here"): [(2.0, 0.0), (2.0, 1.0)]}


def test_against_an_unknown_revision_is_one_clear_error(capsys):
    with pytest.raises(SystemExit):
        train_step.main(["--against", "no-such-revision-0123"])
    err = capsys.readouterr().err
    assert "--against no-such-revision-0123: git cannot check it out here" in err
    assert "Traceback" not in err


def test_against_takes_one_thread_setting(capsys):
    with pytest.raises(SystemExit):
        train_step.main(["--against", "HEAD", "--threads", "default,1:2"])
    assert "--against takes one --threads setting" in capsys.readouterr().err
