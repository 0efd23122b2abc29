"""The equal-quality comparison of benchmarks/quality.py (``--paired-with``): seed by seed."""

from __future__ import annotations

from benchmarks.quality_tables import paired_table


def _run(config, seed, ce, recall):
    return {"config": config, "seed": seed, "best_val_ce_loss": ce,
            "recall": {"macro": {"recall@100": recall}}}


def test_paired_differences_and_verdicts_by_hand():
    results = [
        _run("ref", 0, 4.00, 0.20), _run("ref", 1, 5.00, 0.22),
        # fast: CE 4.02 / 4.00 - 1 = +0.50 %, 4.96 / 5.00 - 1 = -0.80 % → both within 1 %: PASS.
        # Recall mean 0.21 vs 0.21 → |Δ| 0 ≤ std: PASS.
        _run("fast", 0, 4.02, 0.21), _run("fast", 1, 4.96, 0.21),
        # off: +5.00 % on seed 0 → MISS. Recall mean 0.30 vs 0.21, stds 0 and 0.01 → MISS.
        _run("off", 0, 4.20, 0.30), _run("off", 1, 5.00, 0.30),
        # A seed the reference does not have is left out: one seed, +0.00 %.
        _run("lone", 1, 5.00, 0.22), _run("lone", 7, 9.00, 0.99),
    ]
    rows = {line.split(" | ")[0].strip("| "): line
            for line in paired_table(results, "ref").splitlines() if line.startswith("| ")}
    assert "ref" not in rows
    assert "+0.50%, -0.80%" in rows["fast"] and rows["fast"].count("PASS") == 2
    assert "+5.00%, +0.00%" in rows["off"] and rows["off"].count("MISS") == 2
    assert rows["lone"].startswith("| lone | 1 | +0.00% | PASS")


def test_without_reference_runs():
    assert "no ref runs" in paired_table([_run("x", 0, 1.0, 0.1)], "ref")
