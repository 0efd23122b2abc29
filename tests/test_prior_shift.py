"""The prior shift (tfrrl/evaluation/prior_shift.py): the table and the grid choice by hand on a
toy table, the time hold-out's queries and the choice on the hand-built dataset, the report's
``model_shifted`` and the command line's check of ``--prior-shift``."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from tests.test_references import RECENT_ROWS, toy_rows
from tfrrl.evaluation.prior_shift import (BETAS, PriorShift, best_of_grid, grid_recall, ranked,
                                          shift_offsets, shift_table)
from tfrrl.evaluation.queries import Queries


def test_shift_table_by_hand():
    """RECENT_ROWS (d0 over [10, 95]): all rows e0 3, e1 2, e2 1, e3 1; window 0.2 (t ≥ 78):
    e1 2, e2 1. With a = 1: e0 log(1/4), e1 log(3/3) = 0, e2 log(2/2) = 0, e3 log(1/2); the last
    row (a domain without TRAIN rows) is zeros. Window 1.0: every row is recent → all zeros."""
    names, table = shift_table(toy_rows(RECENT_ROWS), 0.2)
    assert names == ["d0"]
    np.testing.assert_allclose(table, [[-math.log(4), 0, 0, -math.log(2)], [0, 0, 0, 0]],
                               rtol=1e-6)
    np.testing.assert_allclose(shift_table(toy_rows(RECENT_ROWS), 1.0)[1], 0.0)
    # smoothing a = 3: e0 log(3/6), e1 log(5/5), e2 log(4/4), e3 log(3/4)
    np.testing.assert_allclose(shift_table(toy_rows(RECENT_ROWS), 0.2, 3.0)[1][0],
                               [math.log(0.5), 0, 0, math.log(0.75)], rtol=1e-6)


def test_offsets_grid_and_choice_by_hand():
    """Two d0 queries with flat model scores s = [1.0, 0.9, 0.8, 0.7] (rank e0 e1 e2 e3), G {e1}
    and {e2}; one query of a domain without rows (d9). Window 0.2 (table above): β 0.5 gives
    [0.307, 0.9, 0.8, 0.353] → top-1 e1: Recall@1 d0 = (1 + 0) / 2 = 0.5; β 1.0 gives
    [−0.386, 0.9, 0.8, 0.007] → e1 again, 0.5: tied → the smaller β. β 0 → e0 → 0. d9's query
    (G {e3}) is never shifted: top-1 e0 → 0; macro = mean(d0, d9) = 0.25 at best. Window 1.0
    shifts nothing: 0 at every β."""
    rows = toy_rows(RECENT_ROWS)
    scores = np.tile(np.float32([1.0, 0.9, 0.8, 0.7]), (3, 1))
    queries = Queries(domains=np.asarray(["d0", "d0", "d9"], object),
                      ground_truth=[np.asarray([1]), np.asarray([2]), np.asarray([3])],
                      corpus_size=4)
    grid = grid_recall(scores, queries, rows, (1,), windows=(0.2, 1.0), betas=(0.0, 0.5, 1.0))
    assert grid == pytest.approx({(0.2, 0.0): 0.0, (0.2, 0.5): 0.25, (0.2, 1.0): 0.25,
                                  (1.0, 0.0): 0.0, (1.0, 0.5): 0.0, (1.0, 1.0): 0.0})
    assert best_of_grid(grid) == PriorShift(window=0.2, beta=0.5)
    # All tied at 0: β 0 (the model unchanged), the larger window.
    assert best_of_grid({(0.2, 0.0): 0.0, (1.0, 0.0): 0.0, (1.0, 0.5): 0.0}) == PriorShift(1.0, 0.0)
    offset = shift_offsets(rows, PriorShift(0.2, 0.5), queries.domains)
    np.testing.assert_allclose(offset(0, 3, 0, 4), [[-0.5 * math.log(4), 0, 0, -0.5 * math.log(2)]]
                               * 2 + [[0, 0, 0, 0]], rtol=1e-6)
    np.testing.assert_allclose(offset(1, 2, 3, 4), [[-0.5 * math.log(2)]], rtol=1e-6)
    # ranked: ties → the lower column
    np.testing.assert_array_equal(ranked(np.asarray([[1.0, 2.0, 2.0, 0.0]]), 3), [[1, 2, 0]])


def test_holdout_queries_and_choice_on_the_hand_built_dataset(hand_built_evaluation):
    """Hand-built TRAIN timestamps 100 120 130 150 200 200 250 260 300: the last 0.1 by time
    starts at 300 (the 0.9 quantile, method higher), so the hold-out is u1's v1 in d1 alone, a
    warm query (u1 has rows before 300); its features are those of that example."""
    from tfrrl.data.reader import TRAIN
    from tfrrl.evaluation.prior_shift import choose_prior_shift
    from tfrrl.evaluation.queries import build_queries

    data, lookup = hand_built_evaluation["data"], hand_built_evaluation["lookup"]
    queries = build_queries(data, lookup, split=TRAIN, since=300)
    keys = [k.decode() for k in queries.corpus["entity_key"]]
    assert queries.user_ids.tolist() == [b"u1"] and queries.domains.tolist() == ["d1"]
    assert [keys[i] for i in queries.ground_truth[0]] == ["video:v1"]
    assert queries.timestamps.tolist() == [300]
    shift, details = choose_prior_shift(hand_built_evaluation["model"], data, (1, 2))
    assert details["holdout_start"] == 300 and details["holdout_queries"] == 1
    assert len(details["grid"]) == 5 * len(BETAS)
    assert details["grid"][f"w={shift.window:g},beta={shift.beta:g}"] == max(
        details["grid"].values())
    json.dumps(details)


def test_report_with_a_zero_shift_equals_the_model(hand_built_evaluation):
    """β = 0 moves no score: ``model_shifted`` ranks exactly as ``model`` (all queries, warm and
    cold), and the printed table names the shift."""
    from tfrrl.evaluation.report import SHIFTED, evaluation_report, format_evaluation

    chosen = {"window": 0.5, "beta": 0.0, "fraction": 0.1, "holdout_queries": 1}
    result = evaluation_report(hand_built_evaluation["model"], hand_built_evaluation["data"],
                               (1, 2), prior_shift=(PriorShift(0.5, 0.0), chosen))
    assert result[SHIFTED]["macro"] == result["model"]["macro"]
    for group in ("warm", "cold"):
        part = result["warm_cold"][group]
        if part["num_queries"]:
            assert part[SHIFTED]["macro"] == part["model"]["macro"]
    assert "model + prior shift (w=0.5, β=0)" in format_evaluation(result)


def test_prior_shift_needs_a_run_trained_without_the_time_hold_out(tmp_path):
    """`tfrrl evaluate --prior-shift RUN` refuses a run that trained on the whole period or on
    other data, in one line, before any TensorFlow work."""
    from tfrrl import config
    from tfrrl.errors import UserError
    from tfrrl_cli.evaluate import check_time_run, chosen_before

    def fake_run(name, data_dir, overrides):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.yaml").write_text(config.load_experiment(None, overrides).to_yaml())
        (folder / "run.json").write_text(json.dumps({"data_dir": str(data_dir)}))
        return str(folder)

    data = tmp_path / "data"
    data.mkdir()
    whole = fake_run("whole", data, ["train.validation_fraction=0.1"])
    with pytest.raises(UserError, match="validation_split=time"):
        check_time_run(whole, str(data))
    timed = fake_run("timed", data, ["train.validation_fraction=0.2",
                                     "train.validation_split=time"])
    assert check_time_run(timed, str(data)) == 0.2
    # `tfrrl export --prior-shift` needs the shift chosen first (by `tfrrl evaluate`).
    from tfrrl_cli.export import chosen_shift

    with pytest.raises(UserError, match="tfrrl evaluate --run RUN --prior-shift"):
        chosen_shift(timed, str(data))
    with pytest.raises(UserError, match="same prepared data"):
        check_time_run(timed, str(tmp_path / "other"))
    # A choice made before with this run is reused for the same Ns and hold-out only, and only
    # while it is newer than the run's weights.
    assert chosen_before(timed, (1, 2), 0.2) is None
    (tmp_path / "timed" / "prior_shift.json").write_text(json.dumps(
        {"window": 0.2, "beta": 0.5, "smoothing": 1.0, "ns": [1, 2], "fraction": 0.2}))
    assert chosen_before(timed, (1, 2), 0.2)[0] == PriorShift(0.2, 0.5)
    assert chosen_shift(timed, str(data))["beta"] == 0.5
    assert chosen_before(timed, (1,), 0.2) is None and chosen_before(timed, (1, 2), 0.1) is None
    weights = tmp_path / "timed" / "model.weights.h5"
    weights.write_bytes(b"")
    later = os.path.getmtime(tmp_path / "timed" / "prior_shift.json") + 10
    os.utime(weights, (later, later))
    assert chosen_before(timed, (1, 2), 0.2) is None


def test_warm_hold_out_users_are_those_with_rows_before_it():
    """toy_rows lists users A, B, C; keeping only the rows before t = 60 of RECENT_ROWS leaves A
    (t 10, 50), B (t 20) and C (t 30): all warm. Before t = 25: A and B only; D is unknown."""
    from tfrrl.evaluation.prior_shift import has_rows

    rows = toy_rows(RECENT_ROWS)
    ids = np.asarray([b"A", b"B", b"C", b"D"], object)
    assert has_rows(rows.rows(rows.timestamp < 60), ids).tolist() == [True, True, True, False]
    assert has_rows(rows.rows(rows.timestamp < 25), ids).tolist() == [True, True, False, False]


def test_domain_offsets_follow_the_given_domain_order():
    """β 0.5 on the window-0.2 table: d9 (no rows) → zeros; d0 → 0.5 · [−log 4, 0, 0, −log 2]."""
    from tfrrl.evaluation.prior_shift import domain_offsets

    got = domain_offsets(toy_rows(RECENT_ROWS), PriorShift(0.2, 0.5), ["d9", "d0"])
    np.testing.assert_allclose(got, [[0, 0, 0, 0],
                                     [-0.5 * math.log(4), 0, 0, -0.5 * math.log(2)]], rtol=1e-6)
    assert got.dtype == np.float32
    assert PriorShift.from_details({"window": 0.2, "beta": 0.5}) == PriorShift(0.2, 0.5)


def test_served_offsets_are_aligned_to_the_index_order(tmp_path):
    """The file's entities b, a, z; the index's a, b, c: a takes the file's column 1, b column
    0, c (absent) 0. A domain list other than the export's, or a NaN, is refused."""
    from tfrrl_serving.indexing.index_set import read_prior_offsets

    assert read_prior_offsets(str(tmp_path), np.asarray(["a"])) is None
    np.savez(tmp_path / "prior_shift.npz", entity_keys=np.asarray(["b", "a", "z"]),
             domains=np.asarray(["d0", "d1"]), offsets=np.float32([[1, 2, 3], [4, 5, 6]]))
    got = read_prior_offsets(str(tmp_path), np.asarray(["a", "b", "c"]), ["d0", "d1"])
    np.testing.assert_array_equal(got, [[2, 1, 0], [5, 4, 0]])
    with pytest.raises(ValueError, match="differ from the export"):
        read_prior_offsets(str(tmp_path), np.asarray(["a"]), ["d1", "d0"])
    np.savez(tmp_path / "prior_shift.npz", entity_keys=np.asarray(["a"]),
             domains=np.asarray(["d0"]), offsets=np.float32([[np.nan]]))
    with pytest.raises(ValueError, match="not finite"):
        read_prior_offsets(str(tmp_path), np.asarray(["a"]))
