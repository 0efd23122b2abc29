"""Real data through adapter + Beam link (reads ../shared/data; skipped when it is absent)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import IN_MEMORY, SHARED_DATA


def _require(name):
    if not (SHARED_DATA / name).is_dir():
        pytest.skip(f"{SHARED_DATA / name} not present (shared datasets are not in the repo)")


@pytest.mark.slow
def test_ciao_all_284k_rows_through_the_link(tmp_path):
    """Every Ciao row (28 categories, no k-core) goes through; the accounting balances."""
    _require("ciao")
    from beam_pipelines import adapters
    from beam_pipelines.accounting import format_accounting
    from beam_pipelines.run import PrepareConfig, run

    summary = adapters.convert("ciao", str(SHARED_DATA / "ciao"), str(tmp_path / "raw"),
                               num_domains=28, min_count=1)
    assert summary["impressions"] == 284_086
    result = run(str(tmp_path / "raw"), str(tmp_path / "out"), PrepareConfig(eval_fraction=0.1),
                 beam_args=IN_MEMORY)
    print(format_accounting(result["accounting"]))
    imp = result["accounting"]["impressions"]
    assert imp["rows_read"] == 284_086 and imp["balanced"]
    # The only losses are the exact duplicates the adapter itself counts.
    assert imp["dead_letter"] == {"duplicate_row": summary["duplicate_rows"]}
    stats = result["stats"]
    # Every category appears in train or eval (a tiny one may fall in eval only).
    assert len(set(stats["domains"]) | set(stats["eval_domain_sizes"])) == 28
    assert stats["corpus_size"] == 105_114
    # Time split: the eval period is the last ~10% of rows (day-resolution timestamps, ties
    # at the cut-off day all go to eval).
    assert 0.08 < imp["eval"] / imp["rows_read"] < 0.2


@pytest.mark.slow
def test_ciao_protocol_and_movielens_click_rule(tmp_path):
    _require("ciao")
    _require("ml-100k")
    from beam_pipelines import adapters
    from beam_pipelines.run import run

    adapters.convert("ciao", str(SHARED_DATA / "ciao"), str(tmp_path / "ciao_raw"))
    ciao = run(str(tmp_path / "ciao_raw"), str(tmp_path / "ciao"), beam_args=IN_MEMORY)
    assert ciao["accounting"]["impressions"]["rows_read"] == 67_230
    assert len(ciao["stats"]["domains"]) == 5 and ciao["stats"]["corpus_size"] == 4_822

    adapters.convert("ml100k", str(SHARED_DATA / "ml-100k"), str(tmp_path / "ml_raw"))
    ml = run(str(tmp_path / "ml_raw"), str(tmp_path / "ml"), beam_args=IN_MEMORY)
    imp = ml["accounting"]["impressions"]
    assert imp["rows_read"] == 100_000 and imp["balanced"]
    assert imp["filtered"] == {"not_clicked": 100_000 - 55_375}
    assert sorted(ml["stats"]["domains"]) == ["1-24", "25-34", "35+"]
    stats = json.loads((tmp_path / "ml" / "stats.json").read_text())
    assert stats["label"] == "click"


def test_douban_three_entity_types_random_split(tmp_path):
    _require("douban-sample")
    from beam_pipelines import adapters
    from beam_pipelines.run import PrepareConfig, run

    adapters.convert("douban", str(SHARED_DATA / "douban-sample"), str(tmp_path / "raw"))
    result = run(str(tmp_path / "raw"), str(tmp_path / "out"), PrepareConfig(seed=3),
                 beam_args=IN_MEMORY)
    stats = result["stats"]
    assert stats["split"]["kind"] == "random"
    assert set(stats["corpus_entity_type_counts"]) == {"book", "music", "movie"}
    assert result["accounting"]["impressions"]["balanced"]


@pytest.mark.slow
def test_ciao_core_on_train_rows_keeps_the_protocols_cutoff(tmp_path):
    """`tfrrl prepare --adapter ciao --adapter-option core_scope=train`: the adapter's cutoff
    (the protocol's: 1247986800, where the protocol's own preparation cuts) reaches the link,
    and every corpus item has TRAIN rows (the k-core ran on them)."""
    _require("ciao")
    from beam_pipelines.run import run_prepare

    result = run_prepare(str(SHARED_DATA / "ciao"), str(tmp_path / "out"), "ciao",
                         beam_args=IN_MEMORY, adapter_options={"core_scope": "train"})
    assert result["stats"]["split"] == {"kind": "time", "cutoff_timestamp": 1_247_986_800}
    imp = result["accounting"]["impressions"]
    assert imp["rows_read"] == 59_746 and imp["eval"] == 1_786 and imp["balanced"]
    assert result["stats"]["corpus_size"] == 3_956
