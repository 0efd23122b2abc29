"""benchmarks/quality.py ``--merge``: the runs of several results folders in one report."""

from __future__ import annotations

import math
import json
import os
import re
import subprocess

import pytest

from benchmarks import quality
from benchmarks import quality_results
from benchmarks import quality_tables

ARGS = {"data": "/d/ml", "max_queries": 0, "monitor": "val_ce_loss", "epochs": 30,
        "steps_per_epoch": 0, "patience": 3}


def _stored(runs, dataset="movielens", **args):
    return {"dataset": dataset, "args": {**ARGS, **args},
            "runs": [{"config": c, "seed": s, "tag": t} for c, s, t in runs]}


def test_merge_appends_new_runs_and_keeps_the_first_copy_of_a_duplicate():
    own = [{"config": "dnn", "seed": 0, "tag": "own"}]
    others = [("q2/results.json", _stored([("dnn", 1, "q2"), ("dnn", 0, "q2")])),
              ("q3/results.json", _stored([("ple", 0, "q3"), ("dnn", 1, "q3")]))]
    merged, notes = quality_results.merge_runs(own, others, "movielens", ARGS)
    assert [(r["config"], r["seed"], r["tag"]) for r in merged] == [
        ("dnn", 0, "own"), ("dnn", 1, "q2"), ("ple", 0, "q3")]
    assert notes == ["dnn seed 0 of q2/results.json left out: already in this --out",
                     "dnn seed 1 of q3/results.json left out: already in q2/results.json"]


@pytest.mark.parametrize("stored,message", [
    (_stored([], dataset="ciao"), "holds ciao runs, not movielens"),
    (_stored([], data="/d/other"), "--data /d/other, this table with /d/ml"),
    (_stored([], max_queries=500), "--max-queries 500, this table with 0"),
    (_stored([], monitor="val_recall@50"), "--monitor val_recall@50, this table with "),
    (_stored([], steps_per_epoch=200), "--steps-per-epoch 200, this table with 0"),
    (_stored([], patience=5), "--patience 5, this table with 3"),
])
def test_merge_refuses_runs_measured_otherwise(stored, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        quality_results.merge_runs([], [("q2/results.json", stored)], "movielens", ARGS)


def test_a_flag_newer_than_the_file_is_not_compared():
    stored = _stored([("dnn", 0, "old")])
    del stored["args"]["patience"]
    merged, _ = quality_results.merge_runs([], [("old/results.json", stored)], "movielens", ARGS)
    assert [r["tag"] for r in merged] == ["old"]


@pytest.mark.parametrize("drop", [True, False])
def test_a_results_file_without_monitor_was_measured_on_val_ce_loss(drop):
    stored = _stored([("dnn", 0, "old")])
    if drop:
        del stored["args"]["monitor"]
    else:
        stored["args"]["monitor"] = None
    merged, _ = quality_results.merge_runs([], [("old/results.json", stored)], "movielens", ARGS)
    assert [r["tag"] for r in merged] == ["old"]


def test_merge_of_a_folder_without_results_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        quality.main(["--dataset", "movielens", "--data", str(tmp_path), "--out",
                      str(tmp_path / "q"), "--report-only", "--merge", str(tmp_path / "none")])
    assert stop.value.code == 2
    assert f"--merge {tmp_path / 'none'}: no results.json there" in capsys.readouterr().err


def test_merge_of_another_dataset_is_one_line(tmp_path, capsys):
    other = tmp_path / "q2"
    other.mkdir()
    (other / "results.json").write_text(json.dumps(_stored([], dataset="ciao")))
    with pytest.raises(SystemExit) as stop:
        quality.main(["--dataset", "movielens", "--data", str(tmp_path), "--out",
                      str(tmp_path / "q"), "--report-only", "--merge", str(other)])
    assert stop.value.code == 2
    assert "holds ciao runs, not movielens" in capsys.readouterr().err


def test_data_prepared_alike_elsewhere_is_the_same_data(tmp_path):
    ours, copy, other = (tmp_path / n for n in ("ours", "copy", "other"))
    for folder, corpus in ((ours, 10), (copy, 10), (other, 11)):
        folder.mkdir()
        (folder / "stats.json").write_text(json.dumps({"corpus_size": corpus}))
    assert quality_results.same_data_as(str(ours), str(copy)) == str(ours)
    assert quality_results.same_data_as(str(ours), str(ours / ".")) == str(ours)
    assert quality_results.same_data_as(str(ours), str(other)) == str(other)
    assert quality_results.same_data_as(str(ours), str(tmp_path / "missing")) == str(
        tmp_path / "missing")


@pytest.mark.parametrize("recorded,same", [({"corpus_size": 10}, True),
                                           ({"corpus_size": 11}, False), (None, False)])
def test_a_kept_results_file_is_matched_by_the_stats_it_recorded(tmp_path, recorded, same):
    # The folder the runs were trained on is gone (another machine); the results file's
    # data_stats stand in for its stats.json.
    ours, gone = tmp_path / "ours", tmp_path / "gone"
    ours.mkdir()
    (ours / "stats.json").write_text(json.dumps({"corpus_size": 10}))
    got = quality_results.same_data_as(str(ours), str(gone), recorded)
    assert got == (str(ours) if same else str(gone))


@pytest.mark.parametrize("given,expected", [
    ("benchmarks/results/movielens/uwl_cap.json", "benchmarks/results/movielens/uwl_cap.json"),
    ("runs/q2", "runs/q2/results.json")])
def test_merge_takes_a_folder_or_a_kept_results_file(given, expected):
    assert quality_results.results_file(given) == expected


def test_merge_of_a_missing_results_file_is_one_line(tmp_path, capsys):
    missing = str(tmp_path / "kept.json")
    with pytest.raises(SystemExit) as stop:
        quality.main(["--dataset", "movielens", "--data", str(tmp_path), "--out",
                      str(tmp_path / "q"), "--report-only", "--merge", missing])
    assert stop.value.code == 2
    assert f"--merge {missing}: no such file" in capsys.readouterr().err


def _entry(config, seed, recall):
    """A results.json run whose every Recall@N is ``recall`` (all queries warm or not)."""
    report = {f"recall@{n}": recall for n in quality.NS}
    block = {"macro": report, "per_domain": {"d0": report}}
    return {"config": config, "seed": seed, "recall": block,
            "recall_warm_cold": {"warm": block, "cold": block}, "parameters_backbone": 1000,
            "auc": 0.7, "gauc": 0.8, "best_epoch": 2, "steps_to_best": 20, "train_seconds": 60}


def _results_folder(folder, data, runs):
    folder.mkdir()
    args = {"data": str(data), "max_queries": 0, "monitor": "val_ce_loss", "epochs": 30,
            "steps_per_epoch": 0, "patience": 3}
    (folder / "results.json").write_text(json.dumps(
        {"dataset": "synthetic", "args": args, "runs": runs}))


@pytest.mark.slow
def test_report_only_merges_the_rows_of_two_folders(small_synthetic_prepared, tmp_path,
                                                    capsys):
    # DNN seeds 0–1 in one folder, Backbone&RRL seeds 0–1 and a duplicate DNN seed 1 in the
    # other: one table with both rows, each over 2 seeds; RRL at 0.33 against 1.1 × DNN's
    # 0.30 = 0.33 (both sides without spread, equal: p 1.00, PASS).
    q1, q2 = tmp_path / "q1", tmp_path / "q2"
    _results_folder(q1, small_synthetic_prepared, [_entry("dnn", 0, 0.30),
                                                   _entry("dnn", 1, 0.30)])
    _results_folder(q2, small_synthetic_prepared, [_entry("backbone_rrl", 0, 0.33),
                                                   _entry("backbone_rrl", 1, 0.33),
                                                   _entry("dnn", 1, 0.99)])
    kept = tmp_path / "kept" / "q1.json"
    assert quality.main(["--dataset", "synthetic", "--data", str(small_synthetic_prepared),
                         "--out", str(q1), "--report-only", "--merge", str(q2),
                         "--keep", str(kept)]) == 0
    out = capsys.readouterr().out
    # The first table (warm queries) rows of the two configs: their params cell is 1,000.
    rows = {}
    for line in out.splitlines():
        if line.startswith("| ") and " | 1,000 | " in line:
            rows.setdefault(line.split(" | ")[0], line)
    assert "| dnn" in rows and "| backbone_rrl" in rows
    assert "0.3000 ± 0.0000" in rows["| dnn"]        # the duplicate (0.99) was left out
    cells = rows["| backbone_rrl"].split(" | ")
    assert cells[-4] == "2"                 # the seeds column
    assert cells[-7] == "+10.00%"           # Δ@100 vs DNN: 0.33 / 0.30 − 1
    claim = [line for line in out.splitlines() if "backbone_rrl ≥ 1.1 × dnn" in line][0]
    assert "PASS, p 1.00" in claim
    # The budget lists the reported rows, not the default --configs.
    budget = out.split("Parameter budget")[1].split("Recall-all@N")[0]
    assert "| dnn |" in budget and "| backbone_rrl |" in budget and "| ple |" not in budget
    # Nothing of q2 was copied into q1's results, nor into the kept copy of them.
    assert len(json.loads((q1 / "results.json").read_text())["runs"]) == 2
    stored = json.loads(kept.read_text())
    assert len(stored["runs"]) == 2
    assert stored["data_stats"] == json.loads(
        (small_synthetic_prepared / "stats.json").read_text())


@pytest.mark.parametrize("stored,key,default,value", [
    ({"monitor": None}, "monitor", None, "val_ce_loss"),     # null: before --monitor
    ({}, "monitor", None, "val_ce_loss"),                    # missing: the same
    ({"monitor": "val_recall@50"}, "monitor", None, "val_recall@50"),
    ({}, "max_queries", 500, 500),                           # another flag: the default
    ({"max_queries": 0}, "max_queries", 500, 0),
])
def test_recorded_flag(stored, key, default, value):
    assert quality_results.recorded_flag(stored, key, default) == value


def test_a_run_folder_lists_every_code_version_that_trained_it(tmp_path):
    run = str(tmp_path / "dnn-seed0")
    assert quality_results.record_code_version(run, "abc1234") == ["abc1234"]
    assert quality_results.record_code_version(run, "abc1234") == ["abc1234"]  # resumed, same code
    assert quality_results.record_code_version(run, "def5678") == ["abc1234", "def5678"]
    assert (tmp_path / "dnn-seed0" / quality_results.CODE_FILE).read_text() == "abc1234\ndef5678\n"


def test_the_table_says_which_code_trained_which_run():
    one = [{"config": "dnn", "seed": 0, "code": ["abc1234"]},
           {"config": "ple", "seed": 0, "code": ["abc1234"]}]
    assert quality_tables.code_note(one) == "\ncode: every run by abc1234\n"
    mixed = one + [{"config": "dnn", "seed": 1, "code": ["abc1234", "def5678"]},
                   {"config": "two_tower", "seed": 0}]  # a run from before the record
    assert quality_tables.code_note(mixed) == (
        "\ncode versions (config:seed):\n"
        "- abc1234: dnn:0, ple:0\n"
        "- abc1234 → def5678 (resumed by other code): dnn:1\n"
        "- not recorded: two_tower:0\n")
    assert re.fullmatch(r"[0-9a-f]{4,40}(\+changes)?|unknown", quality_results.code_version())


def test_the_code_version_is_read_once_per_process(monkeypatch):
    """A commit made while a benchmark runs must not relabel its later runs: git is asked once."""
    quality_results.code_version.cache_clear()
    calls = []

    def fake_run(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, 0, stdout=f"abc{len(calls)}\n")
    monkeypatch.setattr(quality_results.subprocess, "run", fake_run)
    assert quality_results.code_version() == quality_results.code_version() == "abc1"
    assert len(calls) == 2  # rev-parse and diff, once
    quality_results.code_version.cache_clear()


def _prepared(folder, corpus):
    folder.mkdir()
    (folder / "stats.json").write_text(json.dumps({"corpus_size": corpus}))
    return folder


def test_kept_results_carry_the_data_stats_and_merge_after_the_data_is_gone(tmp_path):
    data = _prepared(tmp_path / "data", 10)
    out = tmp_path / "q"
    _results_folder(out, data, [_entry("dnn", 0, 0.3)])
    kept = tmp_path / "repo" / "results" / "dnn.json"
    assert quality_results.keep_results(str(out / "results.json"), str(kept), str(data)) == 1
    stored = json.loads(kept.read_text())
    assert stored["data_stats"] == {"corpus_size": 10}
    assert [r["config"] for r in stored["runs"]] == ["dnn"]
    # Another machine: the original folder is gone, the data prepared again elsewhere.
    (data / "stats.json").unlink()
    data.rmdir()
    again = _prepared(tmp_path / "again", 10)
    assert quality_results.same_data_as(str(again), stored["args"]["data"],
                                 stored["data_stats"]) == str(again)


def test_keep_refuses_results_of_other_data_and_a_missing_file(tmp_path):
    data, other = _prepared(tmp_path / "data", 10), _prepared(tmp_path / "other", 11)
    out = tmp_path / "q"
    _results_folder(out, data, [_entry("dnn", 0, 0.3)])
    with pytest.raises(ValueError, match="not on the data of --data"):
        quality_results.keep_results(str(out / "results.json"), str(tmp_path / "k.json"), str(other))
    with pytest.raises(ValueError, match="no run finished yet"):
        quality_results.keep_results(str(tmp_path / "none.json"), str(tmp_path / "k.json"), str(data))
    assert not (tmp_path / "k.json").exists()


CAPPED = {"model": {"backbone": "rrl", "rrl": {"uwl": True, "uwl_max_weight": 0.05}},
          "train": {"learning_rate": 0.001}}
UNCAPPED = {"model": {"backbone": "rrl", "rrl": {"uwl": True, "uwl_max_weight": None}},
            "train": {"learning_rate": 0.001}}


def test_experiment_differences_by_hand():
    assert quality_results.experiment_differences(CAPPED, UNCAPPED) == [
        "model.rrl.uwl_max_weight: 0.05 vs None"]
    assert quality_results.experiment_differences(CAPPED, CAPPED) == []
    # A field one record predates is not compared.
    newer = {"model": {**CAPPED["model"], "interaction": False}, "train": CAPPED["train"]}
    assert quality_results.experiment_differences(CAPPED, newer) == []
    # The seed has its own field; the name is not part of the record.
    assert quality_results.experiment_record({"name": "x", "model": {"a": 1},
                                      "train": {"seed": 3, "epochs": 30}}) == {
        "model": {"a": 1}, "train": {"epochs": 30}}


def test_a_record_compares_equal_after_the_round_trip_through_results_json():
    # ExperimentConfig.to_dict holds tuples (critic_units); results.json holds lists. A run
    # must not look like another experiment for that alone.
    from tfrrl import config

    record = quality_results.experiment_record(config.load_experiment(
        os.path.join(quality_results.REPO, "configs", "movielens", "backbone_rrl.yaml")).to_dict())
    assert record["model"]["rrl"]["critic_units"] == [128, 64, 1]
    assert quality_results.experiment_differences(record, json.loads(json.dumps(record))) == []


def test_merge_refuses_one_name_for_two_experiments():
    own = [{"config": "backbone_rrl", "seed": 0, "experiment": CAPPED}]
    other = _stored([])
    other["runs"] = [{"config": "backbone_rrl", "seed": 1, "experiment": UNCAPPED}]
    with pytest.raises(ValueError, match=re.escape(
            "backbone_rrl seed 0 and seed 1 were trained as different experiments "
            "(model.rrl.uwl_max_weight: 0.05 vs None): report them from separate folders")):
        quality_results.merge_runs(own, [("old/results.json", other)], "movielens", ARGS)
    # Runs recorded before entries kept their experiment are not compared.
    other["runs"] = [{"config": "backbone_rrl", "seed": 1}]
    merged, _ = quality_results.merge_runs(own, [("old/results.json", other)], "movielens", ARGS)
    assert [r["seed"] for r in merged] == [0, 1]


def test_keep_records_each_runs_experiment_from_its_run_folder(tmp_path):
    import yaml

    data = _prepared(tmp_path / "data", 10)
    out = tmp_path / "q"
    _results_folder(out, data, [_entry("backbone_rrl", 0, 0.3), _entry("backbone_rrl", 1, 0.3)])
    for seed, cfg in ((0, CAPPED), (1, UNCAPPED)):
        run = out / "runs" / f"backbone_rrl-seed{seed}"
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(yaml.safe_dump({"name": "b", **cfg}))
    with pytest.raises(ValueError, match="different experiments .*: keep them in separate files"):
        quality_results.keep_results(str(out / "results.json"), str(tmp_path / "k.json"), str(data))
    (out / "runs" / "backbone_rrl-seed1" / "config.yaml").write_text(
        yaml.safe_dump({"name": "b", **CAPPED, "train": {"seed": 1, "learning_rate": 0.001}}))
    quality_results.keep_results(str(out / "results.json"), str(tmp_path / "k.json"), str(data))
    kept = json.loads((tmp_path / "k.json").read_text())
    assert [r["experiment"] for r in kept["runs"]] == [CAPPED, CAPPED]


def test_the_budget_of_a_renamed_config_is_one_row_not_an_error():
    table = quality.budget_table("movielens", ["backbone", "backbone_rrl_renamed_long_ago"], 3)
    assert "| backbone | rrl | 317,667 | +0.0% |" in table   # the hybrid experts, RRL off
    assert "| backbone_rrl_renamed_long_ago | — | — (no configs/movielens/" in table


@pytest.mark.slow
def test_a_run_of_another_experiment_is_refused_before_training(small_synthetic_prepared,
                                                                 tmp_path, capsys):
    # Seed 0 of backbone_rrl was trained uncapped (before the cap became the default); seed 1
    # would train today's default under the same name: refused, nothing trained.
    q = tmp_path / "q"
    entry = {**_entry("backbone_rrl", 0, 0.3), "experiment": quality_results.experiment_record(
        {"model": {"rrl": {"uwl_max_weight": None}}, "train": {}})}
    _results_folder(q, small_synthetic_prepared, [entry])
    with pytest.raises(SystemExit) as stop:
        quality.main(["--dataset", "synthetic", "--data", str(small_synthetic_prepared),
                      "--out", str(q), "--configs", "backbone_rrl", "--first-seed", "1",
                      "--seeds", "1"])
    assert stop.value.code == 2
    assert ("backbone_rrl seed 0 and seed 1 were trained as different experiments "
            "(model.rrl.uwl_max_weight: None vs 0.05): train it into another --out"
            in capsys.readouterr().err)
    assert not (q / "runs" / "backbone_rrl-seed1").exists()


@pytest.mark.parametrize("completes, expected", [
    ((None, None), "1.5"),    # entries from before the record: taken as they are
    ((True, True), "1.5"),    # (60 s + 120 s) / 2 = 90 s = 1.5 min
    ((True, False), "≥ 1.5"),  # one run resumed from a backup that did not hold its earlier time
])
def test_train_minutes_say_when_a_resumed_run_lost_its_earlier_time(completes, expected):
    runs = [{"train_seconds": 60}, {"train_seconds": 120}]
    for run, complete in zip(runs, completes):
        if complete is not None:
            run["train_seconds_complete"] = complete
    assert quality_tables._train_minutes(runs) == expected  # pylint: disable=protected-access


def test_the_seen_corpus_group_and_a_run_measured_before_it():
    """``warm_seen`` reads ``recall_seen_corpus``; a run written before that view has none: its
    cell is "—" (not a number) and so is its Δ vs DNN."""
    with_view = _entry("dnn", 0, 0.30)
    with_view["recall_seen_corpus"] = {"warm": {"macro": {f"recall@{n}": 0.40
                                                          for n in quality.NS}}}
    older = _entry("ple", 0, 0.31)
    assert quality_tables.run_recall(with_view, "warm_seen", 100) == 0.40
    assert math.isnan(quality_tables.run_recall(older, "warm_seen", 100))
    table = quality_tables.write_table([with_view, older], {}, (50, 100), "title", "warm_seen")
    rows = {line.split(" | ")[0]: line.split(" | ") for line in table.splitlines()
            if line.startswith("| dnn") or line.startswith("| ple")}
    assert rows["| dnn"][2:5] == ["0.4000", "0.4000", "+0.00%"]
    assert rows["| ple"][2:5] == ["—", "—", "—"]


def test_reevaluate_needs_report_only(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        quality.main(["--dataset", "synthetic", "--data", str(tmp_path), "--out", str(tmp_path),
                      "--reevaluate"])
    assert stop.value.code == 2
    assert "--reevaluate re-measures finished runs: add --report-only" in capsys.readouterr().err


@pytest.mark.slow
def test_reevaluate_measures_a_finished_run_again(small_synthetic_prepared, tmp_path, capsys):
    """A two-tower trained 2 steps in this process; its recall in results.json overwritten
    with 0: --reevaluate puts the model's own numbers back (the same as at the end of its
    training) and says by how much the headline moved."""
    out = tmp_path / "q"
    common = ["--dataset", "synthetic", "--data", str(small_synthetic_prepared), "--out",
              str(out)]
    assert quality.main(common + ["--configs", "two_tower", "--seeds", "1", "--epochs", "1",
                                  "--steps-per-epoch", "2", "--validation-steps", "1",
                                  "--in-process"]) == 0
    path = out / "results.json"
    stored = json.loads(path.read_text())
    measured = stored["runs"][0]["recall"]["macro"]
    stored["runs"][0]["recall"]["macro"] = {k: 0.0 for k in measured}
    path.write_text(json.dumps(stored))
    capsys.readouterr()
    assert quality.main(common + ["--report-only", "--reevaluate"]) == 0
    assert f"moved by at most {max(measured.values()):.4f}" in capsys.readouterr().out
    again = json.loads(path.read_text())["runs"][0]
    assert again["recall"]["macro"] == pytest.approx(measured, abs=1e-12)
    assert set(again["recall_warm_cold"]) <= {"warm", "cold"}


def test_versus_reference_table_pools_seeds_on_the_same_queries():
    import numpy as np

    from tfrrl.evaluation.queries import Queries

    # Corpus 4; warm q0 (d0, G {0}), q1 (d1, G {1}); q2 is cold and left out.
    queries = Queries(domains=np.asarray(["d0", "d1", "d0"], object),
                      ground_truth=[np.asarray([0]), np.asarray([1]), np.asarray([2])],
                      corpus_size=4, user_ids=np.asarray([b"u0", b"u1", b"u2"]),
                      domain_names=["d0", "d1"])
    cold = np.asarray([False, False, True])
    # popularity @1: q0 hits, q1 misses → per-query [1, 0], macro 0.5; item-CF never hits.
    refs = {"popularity": np.asarray([[0, 1], [2, 3], [2, 3]]),
            "item_cf": np.asarray([[3, 2], [3, 2], [3, 2]])}
    labels = {"popularity": "popularity", "item_cf": "item-item CF"}
    # Two seeds of "a": [1, 1] and [1, 0] → pooled [1, 0.5], macro 0.75: +50% over 0.5, and
    # every stratified resample redraws the one query of each domain, so the interval is
    # [+50%, +50%] and p 0. "b" has only a run measured before per-query recall was kept:
    # "—". "c" has one of each: its one kept run [1, 1] (macro 1.0, +100%) counts, "1 of 2".
    runs = [{"config": "a", "seed": 0, "recall_per_query_warm": {"recall@1": [1.0, 1.0]}},
            {"config": "a", "seed": 1, "recall_per_query_warm": {"recall@1": [1.0, 0.0]}},
            {"config": "b", "seed": 0},
            {"config": "c", "seed": 0},
            {"config": "c", "seed": 1, "recall_per_query_warm": {"recall@1": [1.0, 1.0]}}]
    table = quality_tables.versus_reference_table(runs, refs, queries, cold, [1], labels)
    assert "Against: @1 popularity" in table and "warm queries (2)" in table
    assert "| a | 2 | +50.0% [+50.0%, +50.0%], p 0.00 |" in table
    assert "| b | 0 of 1 | — |" in table
    assert "| c | 1 of 2 | +100.0% [+100.0%, +100.0%], p 0.00 |" in table
    assert quality_tables.versus_reference_table(runs, refs, queries, np.ones(3, bool), [1],
                                          labels) == ""


def test_a_renamed_config_is_reported_under_its_new_name_only_if_the_same_experiment():
    # Kept seed 0 of "old_name" trained {lr 0.001}; today "new_name" trains the same, and
    # "other" trains lr 0.01. The rename moves the run under new_name and says so; a rename
    # onto another experiment, or of a run without a record, is refused.
    today = {"new_name": {"model": {"backbone": "rrl"}, "train": {"learning_rate": 0.001}},
             "other": {"model": {"backbone": "rrl"}, "train": {"learning_rate": 0.01}}}
    kept = ("k.json", {"runs": [
        {"config": "old_name", "seed": 0,
         "experiment": {"model": {"backbone": "rrl"}, "train": {"learning_rate": 0.001}}},
        {"config": "dnn", "seed": 0}]})
    others, notes = quality_results.rename_runs([kept], {"old_name": "new_name"},
                                        lambda name, seed: today[name])
    runs = others[0][1]["runs"]
    assert [(r["config"], r.get("renamed_from")) for r in runs] == [("new_name", "old_name"),
                                                                   ("dnn", None)]
    assert notes == ["old_name seed 0 of k.json reported as new_name (the same experiment, "
                     "kept under its earlier name)"]
    assert "new_name:0 (kept as old_name), dnn:0" in quality_tables.code_note(runs)
    with pytest.raises(ValueError, match="not the experiment other trains today "
                                         r"\(train.learning_rate: 0.001 vs 0.01\)"):
        quality_results.rename_runs([kept], {"old_name": "other"}, lambda name, seed: today[name])
    with pytest.raises(ValueError, match="kept no experiment record"):
        quality_results.rename_runs([kept], {"dnn": "new_name"}, lambda name, seed: today[name])
    assert quality_results.rename_runs([kept], {}, lambda name, seed: today[name]) == ([kept], [])


def test_a_kept_file_writes_each_vector_on_one_line_with_the_same_values():
    stored = {"args": {"ns": [50, 100]}, "runs": [
        {"config": "a", "note": "x", "recall_per_query_warm": {"recall@1": [1.0, None, 0.5]},
         "nested": [[1, 2], [3]], "empty": []}]}
    text = quality_results.compact_json(stored)
    assert json.loads(text) == stored
    assert '"recall@1": [1.0, null, 0.5]' in text and '"ns": [50, 100]' in text
    assert text.count("\n") < json.dumps(stored, indent=2).count("\n")
    # A string whose bracket would fool the pattern: the plain indented form, same values.
    tricky = {"names": ["a]", "b"]}
    assert json.loads(quality_results.compact_json(tricky)) == tricky


def test_only_edits_that_can_change_a_run_mark_its_code_as_changed(tmp_path):
    """A test or a results table edited while a benchmark runs leaves the commit's label; an
    edit of the library, a config or a benchmark script adds ``+changes``."""
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    for path in ("tfrrl/model.py", "configs/a.yaml", "benchmarks/quality.py",
                 "benchmarks/RESULTS.md", "tests/test_a.py", "README.md"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("v1\n")
    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "x", "--allow-empty")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "files")
    commit = quality_results.version_of(str(tmp_path))
    assert re.fullmatch(r"[0-9a-f]{4,40}", commit)
    for path in ("benchmarks/RESULTS.md", "tests/test_a.py", "README.md"):
        (tmp_path / path).write_text("v2\n")
    assert quality_results.version_of(str(tmp_path)) == commit
    for path in ("tfrrl/model.py", "configs/a.yaml", "benchmarks/quality.py"):
        git("checkout", "-q", "--", ".")
        (tmp_path / path).write_text("v2\n")
        assert quality_results.version_of(str(tmp_path)) == commit + "+changes", path
