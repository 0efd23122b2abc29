"""The user-hash sharded link (PrepareConfig.user_shards > 1) writes the one-pass dataset.

A small synthetic raw folder (2,000 impressions) with bad rows mixed in and one catalog-less
entity type goes through the one-pass link and through the sharded link with N = 3, both on the
in-memory runner; everything except the division into files must be the same.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import dataclasses
import json
import logging
import os
import pathlib
import shutil
from typing import Dict, Iterator, List

import pytest

from tests.conftest import IN_MEMORY, read_records

N_SHARDS = 3
# Bad rows added to the raw folder, and the dead-letter counts they must give (hand-checked).
EXPECTED_IMPRESSION_DEAD = {"bad_number": 1, "duplicate_row": 1, "missing_column": 1,
                            "unknown_entity": 1, "unknown_user": 1}
EXPECTED_USER_DEAD = {"duplicate_user": 1, "missing_value": 1}
EXPECTED_ITEM_DEAD = {"bad_number": 1, "duplicate_entity": 1}


def _append_lines(path: pathlib.Path, lines: List[str]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


def _spoil(raw: pathlib.Path) -> None:
    """Adds one row of each kind in the EXPECTED_* tables to the synthetic raw folder."""
    imp_path = next((raw / "impressions").glob("*.csv"))
    with open(imp_path, encoding="utf-8") as f:
        first = next(r for i, r in enumerate(csv.reader(f)) if i == 1)
    user, entity, etype, domain, ts, click = first
    _append_lines(imp_path, [
        ",".join(first),  # duplicate_row
        f"ghost,{entity},{etype},{domain},{ts},{click}",  # unknown_user
        f"{user},nope,item,{domain},{ts},{click}",  # unknown_entity
        f"{user},{entity},{etype},{domain},soon,{click}",  # bad_number
        f"{user},{entity},{etype}",  # missing_column
    ])
    with open(raw / "users.csv", encoding="utf-8") as f:
        first_user = f.read().splitlines()[1]
    _append_lines(raw / "users.csv", [first_user, ",18-24,F,1"])  # duplicate_user, missing_value
    with open(raw / "catalogs/item.csv", encoding="utf-8") as f:
        first_item = f.read().splitlines()[1]
    _append_lines(raw / "catalogs/item.csv", [first_item,  # duplicate_entity
                                              "i_bad,c1,b1,s1,cheap"])  # bad_number


def _spec():
    """The synthetic layout with live streams catalog-less: their entities are the ids seen in
    the impressions, so every shard that sees one emits it and the merge must keep one."""
    from tfrrl.data.link_spec import DatasetSpec, EntityTypeSpec

    spec = DatasetSpec.synthetic_default()
    spec.entity_types["live"] = EntityTypeSpec(path=None)
    return spec


@pytest.fixture(scope="module")
def both(tmp_path_factory) -> Dict:
    from beam_pipelines.run import PrepareConfig, run
    from tfrrl.data import synthetic

    root = tmp_path_factory.mktemp("sharded")
    raw = root / "raw"
    synthetic.generate(synthetic.SyntheticConfig(impressions=2_000, seed=3), str(raw),
                       verbose=False)
    _spoil(raw)
    cfg = PrepareConfig(sequence_length=5)
    one = run(str(raw), str(root / "one"), cfg, spec=_spec(), beam_args=IN_MEMORY)
    sharded_cfg = PrepareConfig(sequence_length=5, user_shards=N_SHARDS)
    with _recording_passes() as passes:
        sharded = run(str(raw), str(root / "sharded"), sharded_cfg, spec=_spec(),
                      beam_args=IN_MEMORY)
    return {"root": root, "raw": raw, "one": root / "one", "sharded": root / "sharded",
            "one_result": one, "sharded_result": sharded, "passes": passes}


@contextlib.contextmanager
def _recording_passes() -> Iterator[Dict]:
    """Records the sharded mode's progress lines and the pipelines run in this process
    (``runner.run_pipeline`` calls; the passes run in a pool are not among them)."""
    from beam_pipelines import runner, sharded

    record: Dict = {"lines": [], "pipelines": 0}
    real = runner.run_pipeline

    def counting(*args, **kwargs):
        record["pipelines"] += 1
        return real(*args, **kwargs)

    class Lines(logging.Handler):
        def emit(self, rec: logging.LogRecord) -> None:
            message = rec.getMessage()
            record["lines"].append(message[:message.rindex(" done in ")])

    logger, handler, level = sharded.log, Lines(), sharded.log.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    runner.run_pipeline = counting
    try:
        yield record
    finally:
        runner.run_pipeline = real
        logger.removeHandler(handler)
        logger.setLevel(level)


def _serialized(folder: pathlib.Path) -> List[bytes]:
    import tensorflow as tf

    return sorted(raw for path in sorted(folder.glob("*.tfrecord"))
                  for raw in tf.data.TFRecordDataset(str(path)).as_numpy_iterator())


def _lines(folder: pathlib.Path) -> List[str]:
    return sorted(line for path in folder.glob("*.jsonl")
                  for line in path.read_text(encoding="utf-8").splitlines())


def test_user_shard_is_a_stable_hash():
    from beam_pipelines.transforms import user_shard

    # blake2b of the id, not Python's per-process salted hash(): these values never change.
    assert [user_shard(f"u{i}", 3) for i in range(10)] == [0, 1, 2, 2, 0, 0, 1, 2, 1, 0]
    assert [user_shard(u, 5) for u in ("u1", "u2", "u3")] == [0, 4, 1]


@pytest.mark.parametrize("split", ["train", "eval"])
def test_examples_are_the_same_multiset(both, split):
    one, sharded = _serialized(both["one"] / split), _serialized(both["sharded"] / split)
    assert len(one) > 100 and one == sharded
    # Every shard wrote its own files, side by side in the one folder.
    names = sorted(p.name for p in (both["sharded"] / split).glob("*.tfrecord"))
    assert [n.split("-")[1] for n in names] == [f"u{i:03d}of{N_SHARDS:03d}"
                                                for i in range(N_SHARDS)]


def test_train_counts_are_summed_over_shards(both):
    """Q(a) needs an entity's train count over ALL users: the most frequent entity has train
    examples in every shard, and its corpus count is their total, not one shard's."""
    from beam_pipelines.transforms import user_shard

    train = read_records(both["sharded"] / "train")
    top, n_top = collections.Counter(e["entity_id"] for e in train).most_common(1)[0]
    assert {user_shard(e["user_id"], N_SHARDS) for e in train
            if e["entity_id"] == top} == set(range(N_SHARDS))
    corpus = {r["entity_id"]: r for r in read_records(both["sharded"] / "corpus")}
    assert corpus[top]["train_count"] == n_top
    stats = json.loads((both["sharded"] / "stats.json").read_text())
    assert corpus[top]["sampling_prob"] == pytest.approx(
        (n_top + 1) / (stats["num_train"] + stats["corpus_size"]))


def test_corpus_frequency_vocab_stats_accounting_are_identical(both):
    one, sharded = both["one"], both["sharded"]
    assert _serialized(one / "corpus") == _serialized(sharded / "corpus")
    freq_one = (one / "entity_frequency.tsv").read_text().splitlines()
    freq_sharded = (sharded / "entity_frequency.tsv").read_text().splitlines()
    assert freq_one[0] == freq_sharded[0] and sorted(freq_one) == sorted(freq_sharded)
    vocab = sorted(p.name for p in (one / "vocab").iterdir())
    assert vocab == sorted(p.name for p in (sharded / "vocab").iterdir()) and vocab
    for name in vocab:
        assert (one / "vocab" / name).read_bytes() == (sharded / "vocab" / name).read_bytes()
    for name in ("stats.json", "accounting.json", "link_spec.yaml"):
        assert (one / name).read_bytes() == (sharded / name).read_bytes(), name
    assert both["one_result"]["stats"] == both["sharded_result"]["stats"]
    assert both["one_result"]["accounting"] == both["sharded_result"]["accounting"]


def test_catalog_less_entities_are_in_the_corpus_once(both):
    corpus = [r["entity_id"] for r in read_records(both["sharded"] / "corpus")]
    live = [k for k in corpus if k.startswith("live:")]
    assert live and len(corpus) == len(set(corpus))
    stats = json.loads((both["sharded"] / "stats.json").read_text())
    assert stats["corpus_entity_type_counts"]["live"] == len(live)


def test_dead_letters_and_snapshots_are_identical(both):
    for folder in ("dead_letter", "user_snapshot"):
        assert _lines(both["one"] / folder) == _lines(both["sharded"] / folder), folder
    dead = [json.loads(line) for line in _lines(both["sharded"] / "dead_letter")]
    reasons = collections.Counter((d["source"], d["reason"]) for d in dead)
    # Each bad row once: the catalog and user table are read by one pass, not by each shard.
    assert reasons == collections.Counter(
        {**{("impressions", r): n for r, n in EXPECTED_IMPRESSION_DEAD.items()},
         **{("users", r): n for r, n in EXPECTED_USER_DEAD.items()},
         **{("catalog:item", r): n for r, n in EXPECTED_ITEM_DEAD.items()}})
    # A row dead-lettered after parsing (it travelled compactly, as its values alone) shows
    # its columns by name, like the rows rejected while parsing.
    rows = {d["reason"]: d["row"] for d in dead if d["source"] == "impressions"}
    columns = ["user_id", "entity_id", "entity_type", "domain", "timestamp", "click"]
    for reason, column, value in (("unknown_user", "user_id", "ghost"),
                                  ("unknown_entity", "entity_id", "nope")):
        assert sorted(rows[reason]) == sorted(columns) and rows[reason][column] == value
    assert sorted(rows["duplicate_row"]) == sorted(columns)


def test_accounting_balances_with_each_bad_row_once(both):
    acc = both["sharded_result"]["accounting"]
    imp = acc["impressions"]
    assert imp["rows_read"] == 2_000 + 5 and imp["balanced"]
    assert imp["dead_letter"] == EXPECTED_IMPRESSION_DEAD
    assert imp["train"] + imp["eval"] == 2_000  # one copy of the duplicated row is kept
    assert acc["users"]["dead_letter"] == EXPECTED_USER_DEAD
    assert acc["catalog:item"]["dead_letter"] == EXPECTED_ITEM_DEAD
    assert "catalog:live" not in acc


def test_merge_and_summarize_fold_into_the_last_shard_passes(both):
    """One pass at a time, N = 3: 2N + 1 = 7 pipelines, not 2N + 3 = 9 (partition, the first
    N - 1 shards, then the last shard with the merge; the same for finalize/summarize), and the
    progress lines count to the new total."""
    assert both["passes"]["pipelines"] == 2 * N_SHARDS + 1 == 7
    assert both["passes"]["lines"] == [
        "user shards: pass 1/7 (partition)",
        "user shards: pass 2/7 (assemble 1/3)", "user shards: pass 3/7 (assemble 2/3)",
        "user shards: pass 4/7 (assemble 3/3 + merge)",
        "user shards: pass 5/7 (finalize 1/3)", "user shards: pass 6/7 (finalize 2/3)",
        "user shards: pass 7/7 (finalize 3/3 + summarize)"]


@pytest.mark.parametrize("shards, parallelism, folds, pipelines", [
    (2, 1, True, 5), (3, 1, True, 7), (16, 1, True, 33),
    # With P at a time the last shard joins a round of its own unless the other N - 1 fill
    # whole rounds: (3 - 1) mod 2 = 0 folds; (2 - 1) mod 2 = 1 and (4 - 1) mod 2 = 1 do not.
    (2, 2, False, 7), (3, 2, True, 7), (4, 2, False, 11), (5, 2, True, 11),
    (5, 4, True, 11), (2, 4, False, 7),  # P is capped at N: (2 - 1) mod 2 = 1
])
def test_when_merge_and_summarize_fold(shards, parallelism, folds, pipelines):
    from beam_pipelines import sharded

    assert sharded.folds_for_free(shards, parallelism) is folds
    assert sharded.pass_count(shards, parallelism) == pipelines


def test_counters_are_the_one_pass_counters(hand_built_prepared, tmp_path):
    """Folded or not, every counter is incremented in exactly one pipeline: the sum over the
    2N + 1 = 5 pipelines (N = 2) is the one-pass run's counter dict, key for key."""
    from beam_pipelines import one_pass, sharded
    from beam_pipelines.config import PrepareConfig
    from tfrrl.data import link_spec

    raw = str(hand_built_prepared["raw"])
    spec = link_spec.load(raw)
    cfg = PrepareConfig(sequence_length=3, min_frequency=2, cutoff_timestamp=400)
    one = one_pass.run_one_pass(raw, str(tmp_path / "one"), spec, cfg, IN_MEMORY)
    with _recording_passes() as passes:
        two = sharded.run_passes(raw, str(tmp_path / "two"), spec,
                                 dataclasses.replace(cfg, user_shards=2), IN_MEMORY)
    assert passes["pipelines"] == 5 and len(passes["lines"]) == 5
    assert two == one and one["impressions/rows_read"] == 11


def test_folded_with_a_pool(hand_built_prepared, tmp_path, monkeypatch):
    """--direct_num_workers=2 with N = 3: shards 1 and 2 of each kind run in the pool, side by
    side; the last shard with the merge (the summary) runs after them; 7 pipelines and the
    one-pass dataset."""
    import concurrent.futures

    from beam_pipelines.run import PrepareConfig, run

    pooled = []
    real_submit = concurrent.futures.ProcessPoolExecutor.submit

    def recording_submit(self, fn, build, beam_args, verbose, args):
        pooled.append((build.__name__, args[2]))  # args[2]: the shard
        return real_submit(self, fn, build, beam_args, verbose, args)

    monkeypatch.setattr(concurrent.futures.ProcessPoolExecutor, "submit", recording_submit)
    cfg = PrepareConfig(sequence_length=3, min_frequency=2, cutoff_timestamp=400, user_shards=3)
    with _recording_passes() as passes:
        run(str(hand_built_prepared["raw"]), str(tmp_path / "out"), cfg,
            beam_args=["--direct_num_workers=2"])
    assert sorted(pooled) == [("build_assemble_pass", 0), ("build_assemble_pass", 1),
                              ("build_finalize_pass", 0), ("build_finalize_pass", 1)]
    assert passes["pipelines"] == 3  # partition and the two folded passes, in this process
    assert [line.split(" (")[1] for line in passes["lines"]][3::3] == [
        "assemble 3/3 + merge)", "finalize 3/3 + summarize)"]
    assert len(passes["lines"]) == 7 and passes["lines"][-1].startswith("user shards: pass 7/7")
    one = hand_built_prepared["out"]
    for split in ("train", "eval", "corpus"):
        assert _serialized(tmp_path / "out" / split) == _serialized(one / split), split
    for name in ("stats.json", "accounting.json"):
        assert (tmp_path / "out" / name).read_bytes() == (one / name).read_bytes(), name


def test_published_like_one_pass(both):
    sharded = both["sharded"]
    assert (sharded / "_SUCCESS").exists()
    from beam_pipelines import sharded as sharded_mode

    assert not (sharded / sharded_mode.STAGING_DIR).exists()
    assert sorted(os.listdir(both["root"])) == ["one", "raw", "sharded"]  # no staging left


def test_untimed_data_gives_the_one_pass_dataset(both, tmp_path):
    """The same synthetic raw folder read WITHOUT its timestamps (``timestamp: null``: random
    split, untimed histories of the other TRAIN exposures, clicked or not): one pass and N
    shards write the same records and snapshots, and the sequences are not empty."""
    from beam_pipelines.run import PrepareConfig, run

    spec = _spec()
    spec.impressions.columns = dict(spec.impressions.columns, timestamp=None)
    one = run(str(both["raw"]), str(tmp_path / "one"), PrepareConfig(sequence_length=5),
              spec=spec, beam_args=IN_MEMORY)
    run(str(both["raw"]), str(tmp_path / "sharded"),
        PrepareConfig(sequence_length=5, user_shards=N_SHARDS), spec=spec, beam_args=IN_MEMORY)
    assert one["stats"]["split"]["kind"] == "random"
    for split in ("train", "eval", "corpus"):
        assert _serialized(tmp_path / "sharded" / split) == _serialized(tmp_path / "one" / split)
    snapshots = _lines(tmp_path / "one" / "user_snapshot")
    assert snapshots == _lines(tmp_path / "sharded" / "user_snapshot")
    assert sum(json.loads(line)["seq_length"] > 0 for line in snapshots) > len(snapshots) // 2
    evals = read_records(tmp_path / "one" / "eval")
    assert evals and sum(r["seq_length"] > 0 for r in evals) > len(evals) // 2


def test_more_shards_than_users(hand_built_prepared, tmp_path):
    """The hand-built rows (3 users: shards 0, 4, 1 of 5) leave two shards empty."""
    from beam_pipelines.run import PrepareConfig, run

    cfg = PrepareConfig(sequence_length=3, min_frequency=2, cutoff_timestamp=400, user_shards=5)
    run(str(hand_built_prepared["raw"]), str(tmp_path / "out"), cfg, beam_args=IN_MEMORY)
    one = hand_built_prepared["out"]
    for split in ("train", "eval", "corpus"):
        assert _serialized(tmp_path / "out" / split) == _serialized(one / split), split
    for name in ("stats.json", "accounting.json"):
        assert (tmp_path / "out" / name).read_bytes() == (one / name).read_bytes(), name


def test_refuses_a_distributed_runner(hand_built_prepared, tmp_path):
    from beam_pipelines.run import PrepareConfig, run

    with pytest.raises(ValueError, match="user_shards > 1 is the local runner"):
        run(str(hand_built_prepared["raw"]), str(tmp_path / "out"), PrepareConfig(user_shards=2),
            beam_args=["--runner=DataflowRunner"])
    assert not (tmp_path / "out").exists()


def test_refuses_to_overwrite(both):
    from beam_pipelines.run import OutputExistsError, PrepareConfig, run

    with pytest.raises(OutputExistsError):
        run(str(both["raw"]), str(both["sharded"]), PrepareConfig(user_shards=N_SHARDS),
            spec=_spec(), beam_args=IN_MEMORY)


def test_crash_in_a_late_pass_publishes_nothing(hand_built_prepared, tmp_path, monkeypatch):
    """A crash in the last shard's finalize pass (train/ and eval/ already partly written)
    leaves no output and no staging; with --overwrite the old dataset stays as it was."""
    import apache_beam as beam

    from beam_pipelines import sharded
    from beam_pipelines.run import PrepareConfig, run

    real = sharded.build_finalize_pass

    def crashing(p, out_dir, layout, shard, cfg):
        finalized = real(p, out_dir, layout, shard, cfg)
        if shard == layout.num_shards - 1:  # the pass the summary is folded into
            _ = p | "Crash" >> beam.Create([0]) | "Boom" >> beam.Map(_boom)
        return finalized

    monkeypatch.setattr(sharded, "build_finalize_pass", crashing)
    raw = str(hand_built_prepared["raw"])
    cfg = PrepareConfig(sequence_length=3, cutoff_timestamp=400, user_shards=2)
    fresh = tmp_path / "fresh" / "out"
    with pytest.raises(Exception, match="injected crash"):
        run(raw, str(fresh), cfg, beam_args=IN_MEMORY)
    assert not fresh.exists() and os.listdir(fresh.parent) == []
    old = tmp_path / "old"
    shutil.copytree(hand_built_prepared["out"], old)
    before = {str(p.relative_to(old)): p.read_bytes() for p in old.rglob("*") if p.is_file()}
    with pytest.raises(Exception, match="injected crash"):
        run(raw, str(old), cfg, beam_args=IN_MEMORY, overwrite=True)
    assert {str(p.relative_to(old)): p.read_bytes()
            for p in old.rglob("*") if p.is_file()} == before
    assert sorted(os.listdir(tmp_path)) == ["fresh", "old"]


def _boom(_):
    raise RuntimeError("injected crash")


def test_cli_flag(hand_built_prepared, tmp_path, capsys):
    from tfrrl_cli import main as cli

    out = tmp_path / "out"
    assert cli.main(["prepare", "--input", str(hand_built_prepared["raw"]), "--out", str(out),
                     "--user-shards", "2", "--direct_running_mode=in_memory"]) == 0
    assert "[balanced]" in capsys.readouterr().out
    assert len(list((out / "train").glob("part-u00*of002-*.tfrecord"))) == 2
