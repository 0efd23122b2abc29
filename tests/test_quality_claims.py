"""The paper's claims as benchmarks/quality_tables.py reports them (``claims_table``), by hand."""

from __future__ import annotations

import pytest

from benchmarks import quality_tables
from benchmarks.quality import best_epoch_of
from benchmarks.quality_tables import claims_table


def _run(config, seed, r50, r100):
    report = {"macro": {"recall@50": r50, "recall@100": r100}}
    return {"config": config, "seed": seed, "recall": report,
            "recall_warm_cold": {"warm": report}}


def _rows(results):
    return {line.split(" | ")[1]: line for line in
            claims_table(results, (50, 100)).splitlines() if line.startswith("| III")
            or line.startswith("| IV")}


def test_table_iii_claims_by_hand():
    results = [_run("dnn", s, 0.30, 0.40) for s in range(3)]
    results += [_run("ple", s, 0.31, 0.42) for s in range(3)]
    # Backbone&RRL: means 0.32 @50 ((0.31 + 0.33) / 2) and 0.45 @100, two seeds only.
    results += [_run("backbone_rrl", 0, 0.31, 0.44), _run("backbone_rrl", 1, 0.33, 0.46)]
    rows = _rows(results)
    # RRL ≥ PLE: 0.32 ≥ 0.31 (+3.2%) and 0.45 ≥ 0.42 (+7.1%): PASS at both N; 2 seeds.
    assert rows["backbone_rrl ≥ ple"].count("PASS") == 2
    assert "0.3200 vs 0.3100 (+3.2%)" in rows["backbone_rrl ≥ ple"]
    assert rows["backbone_rrl ≥ ple"].endswith("| 2 (provisional) |")
    # PLE ≥ DNN on 3 seeds each: settled, not provisional.
    assert rows["ple ≥ dnn"].endswith("| 3 |")
    # +10% over DNN: 0.32 < 1.1 × 0.30 = 0.33 → MISS @50; 0.45 ≥ 0.44 → PASS @100.
    cells = rows["backbone_rrl ≥ 1.1 × dnn"].split(" | ")
    assert "MISS" in cells[2] and "PASS" in cells[3]


def test_claims_carry_welchs_p_from_two_seeds_on_each_side():
    results = [_run("dnn", s, 0.30, 0.40) for s in range(3)]
    results += [_run("ple", s, 0.31, 0.42) for s in range(3)]
    results += [_run("backbone_rrl", 0, 0.31, 0.44), _run("backbone_rrl", 1, 0.33, 0.46)]
    results += [_run("backbone", 0, 0.30, 0.40)]
    rows = _rows(results)
    # RRL vs PLE @100: RRL's seeds 0.44, 0.46 (mean 0.45, sample variance 0.0002, so the
    # standard error of its mean is sqrt(0.0002 / 2) = 0.01); PLE's three seeds 0.42 have no
    # spread. t = (0.45 - 0.42) / 0.01 = 3 with Welch's df = 1 (a Cauchy t): two-sided
    # p = 1 - (2/π)·arctan(3) = 0.2048. @50: t = (0.32 - 0.31) / 0.01 = 1, p = 1 - (2/π)·π/4 = 0.5.
    cells = rows["backbone_rrl ≥ ple"].split(" | ")
    assert cells[2].endswith("PASS, p 0.50") and cells[3].endswith("PASS, p 0.20")
    # +10% over DNN: RRL's seeds against 1.1 × DNN's (0.33 @50): t = (0.32 - 0.33) / 0.01 = -1.
    assert rows["backbone_rrl ≥ 1.1 × dnn"].split(" | ")[2].endswith("MISS, p 0.50")
    # Neither side has a spread and the means differ: p 0 (scipy's test is undefined there).
    assert rows["ple ≥ dnn"].split(" | ")[2].endswith("PASS, p 0.00")
    # One seed of the Backbone: no test, no p.
    assert "p " not in rows["backbone_rrl ≥ backbone"].split(" | ")[2]


def test_claims_of_configs_not_run_are_left_out():
    rows = _rows([_run("backbone", 0, 0.3, 0.4), _run("backbone_dal", 0, 0.29, 0.41)])
    assert list(rows) == ["backbone_dal ≥ backbone"]
    assert claims_table([_run("dnn", 0, 0.3, 0.4)], (50,)) == ""


@pytest.mark.parametrize("history,monitor,epoch", [
    ({"val_ce_loss": [4.9, 4.7, 4.8]}, "val_ce_loss", 2),      # the lowest loss
    ({"val_recall@50": [0.30, 0.35, 0.33]}, "val_recall@50", 2),  # the highest recall
    ({"val_recall@50": [0.40, 0.35, 0.33]}, "val_recall@50", 1),
    ({"val_ce_loss": [4.9]}, "val_recall@50", 0),              # never logged
])
def test_best_epoch_follows_the_monitor(history, monitor, epoch):
    assert best_epoch_of(history, monitor) == epoch


@pytest.mark.parametrize("values,cell", [
    # mean 0.2; deviations ±0.1 → sample std sqrt(0.02 / 2) = 0.1 (ddof 1: three seeds
    # estimate the spread of one seed; ddof 0 would print 0.0816).
    ([0.1, 0.2, 0.3], "0.2000 ± 0.1000"),
    ([0.3, float("nan")], "0.3000 (1 of 2)"),  # a run that did not measure it is left out
    ([0.1, float("nan"), 0.3], "0.2000 ± 0.1414 (2 of 3)"),  # sqrt(0.02 / 1) = 0.1414
    ([], "—"),
])
def test_table_cells_use_the_sample_std(values, cell):
    assert quality_tables._mean_std(values) == cell
