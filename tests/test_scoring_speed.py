"""benchmarks/scoring_speed.py: the agreement of two top-N lists, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.scoring_speed import topn_agreement


def test_topn_agreement_by_hand():
    # Row 1: {1, 2} ∩ {2, 3} = {2} → 1/2; row 2: the same set reordered → 2/2; mean 0.75.
    assert topn_agreement(np.array([[1, 2], [4, 5]]), np.array([[2, 3], [5, 4]])) == 0.75
    assert topn_agreement(np.zeros((0, 5), int), np.zeros((0, 5), int)) == 1.0
    with pytest.raises(ValueError):
        topn_agreement(np.zeros((2, 3), int), np.zeros((2, 4), int))
