"""Figures (tfrrl/plots/): Fig. 6's PCA and domain separation by hand, Fig. 4's recall curves."""

from __future__ import annotations

import numpy as np
import pytest

from tfrrl.plots import recall_curves
from tfrrl.plots import shared_representation as fig6


def test_pca_and_domain_separation_by_hand():
    # Points on the line y = 2x: all variance on the first axis, none on the second.
    x = np.array([[0.0, 0.0], [1.0, 2.0], [2.0, 4.0], [3.0, 6.0]])
    xy = fig6.pca_2d(x)
    np.testing.assert_allclose(np.abs(xy[:, 0]), np.array([1.5, 0.5, 0.5, 1.5]) * np.sqrt(5))
    np.testing.assert_allclose(xy[:, 1], 0.0, atol=1e-12)
    # Domains A = {0, 2}, B = {1, 3} in 1-D, mean 1.5: S_T = 2.25 + 0.25 + 0.25 + 2.25 = 5;
    # A's mean 1, B's mean 2: S_B = 2 · 0.25 + 2 · 0.25 = 1 → 0.2.
    pts, doms = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array(["A", "B", "A", "B"])
    assert fig6.domain_separation(pts, doms) == pytest.approx(0.2)
    assert fig6.domain_separation(np.array([[1.0], [1.0], [5.0], [5.0]]),
                                  np.array(["A", "A", "B", "B"])) == pytest.approx(1.0)
    assert fig6.domain_separation(pts, np.array(["A", "A", "A", "A"])) == 0.0


def test_recall_curves_average_seeds_per_domain(tmp_path):
    def run(name, d0, d1):
        return {"config": name, "recall": {"per_domain": {
            "d0": {"recall@10": d0[0], "recall@20": d0[1]},
            "d1": {"recall@10": d1[0], "recall@20": d1[1]}}}}

    results = [run("dnn", (0.1, 0.2), (0.3, 0.4)), run("dnn", (0.3, 0.4), (0.5, 0.6)),
               run("ple", (0.5, 0.5), (0.5, 0.5))]
    curves = recall_curves.mean_curves(results, [10, 20])
    assert curves["d0"]["dnn"] == pytest.approx([0.2, 0.3])  # (0.1 + 0.3) / 2, (0.2 + 0.4) / 2
    assert curves["d1"]["dnn"] == pytest.approx([0.4, 0.5])
    assert curves["d1"]["ple"] == pytest.approx([0.5, 0.5])
    path = recall_curves.plot_recall_curves(results, [10, 20], str(tmp_path / "fig4.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
