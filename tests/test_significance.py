"""The paired, domain-stratified bootstrap of tfrrl/evaluation/significance.py, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from tfrrl.evaluation.queries import Queries
from tfrrl.evaluation.significance import (format_versus, macro_mean, paired_bootstrap,
                                           versus_best_reference)


def test_macro_mean_by_hand():
    # domain x: (1 + 0 + 0.5) / 3 = 0.5; domain y: 1 → (0.5 + 1) / 2 = 0.75 (plain mean 0.625).
    assert macro_mean(np.asarray([1, 0, 0.5, 1]), ["x", "x", "x", "y"]) == pytest.approx(0.75)


def test_identical_methods_differ_by_nothing():
    a = np.asarray([0.2, 0.4, 0.9, 0.1])
    out = paired_bootstrap(a, a.copy(), ["x", "x", "y", "y"], resamples=200)
    assert out["difference"] == 0.0 and out["relative"] == 0.0
    assert out["interval"] == [0.0, 0.0] and out["p"] == 1.0


def test_a_constant_lift_is_certain():
    # b = 0.5 on every query, a = 0.6: every resample's difference is 0.1, relative 0.2.
    out = paired_bootstrap(np.full(6, 0.6), np.full(6, 0.5), ["x"] * 3 + ["y"] * 3,
                           resamples=300)
    assert out["difference"] == pytest.approx(0.1) and out["relative"] == pytest.approx(0.2)
    assert out["interval"] == pytest.approx([0.2, 0.2]) and out["p"] == 0.0


def test_p_matches_the_exact_resampling_distribution():
    # One domain, differences [1, 0]: a resample of 2 queries has difference 0 with
    # probability 1/4 (both draws the second query), else > 0; so P(d ≤ 0) = 1/4,
    # P(d ≥ 0) = 1 and p = 2 · 1/4 = 0.5 (20,000 resamples: standard error 0.006).
    out = paired_bootstrap(np.asarray([1.5, 0.5]), np.asarray([0.5, 0.5]), ["x", "x"],
                           resamples=20_000, seed=3)
    assert out["p"] == pytest.approx(0.5, abs=0.03)
    assert out["relative"] == pytest.approx(1.0)  # (1.0 − 0.5) / 0.5


def test_resamples_stay_within_each_domain():
    # One query per domain: every resample redraws the same two queries, so the macro
    # difference is always (0.5 + 0) / 2 = 0.25 and relative 0.25 / 0.5. Unstratified draws
    # would also give 0 and 0.5.
    out = paired_bootstrap(np.asarray([1.0, 0.5]), np.asarray([0.5, 0.5]), ["x", "y"],
                           resamples=500)
    assert out["interval"] == pytest.approx([0.5, 0.5]) and out["p"] == 0.0


def test_queries_without_a_recall_are_left_out_and_bad_input_refused():
    out = paired_bootstrap(np.asarray([0.6, np.nan, 0.6]), np.asarray([0.5, 0.5, np.nan]),
                           ["x", "x", "x"], resamples=50)
    assert out["queries"] == 1 and out["difference"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="same Q queries"):
        paired_bootstrap(np.zeros(3), np.zeros(2), ["x"] * 3)
    with pytest.raises(ValueError, match="no query"):
        paired_bootstrap(np.asarray([np.nan]), np.asarray([0.5]), ["x"])


def test_versus_best_reference_picks_the_best_reference_at_each_n():
    # Corpus of 4; q0 (d0, G {0}), q1 (d1, G {1}).
    queries = Queries(domains=np.asarray(["d0", "d1"], object),
                      ground_truth=[np.asarray([0]), np.asarray([1])], corpus_size=4,
                      user_ids=np.asarray([b"u0", b"u1"]), domain_names=["d0", "d1"])
    topn = {"model": np.asarray([[0, 2], [3, 1]]),   # @1: 1, 0 → macro 0.5; @2: 1, 1 → 1
            "pop": np.asarray([[2, 0], [1, 3]]),     # @1: 0, 1 → 0.5;  @2: 1, 1 → 1
            "cf": np.asarray([[2, 3], [2, 3]])}      # @1: 0, 0 → 0;    @2: 0, 0 → 0
    out = versus_best_reference(topn, queries, (1, 2), ["model"], ["cf", "pop"],
                                resamples=100)
    assert out["recall@1"]["model"]["reference"] == "pop"
    assert out["recall@1"]["model"]["difference"] == pytest.approx(0.0)
    assert out["recall@2"]["model"]["relative"] == pytest.approx(0.0)
    text = format_versus(out, str.upper)
    assert "MODEL @1: +0.0%" in text and "against POP" in text and len(text.splitlines()) == 2
