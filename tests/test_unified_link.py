"""The Beam link on hand-built rows (see conftest.write_hand_built_raw for the catalogs)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import IN_MEMORY, read_records, write_hand_built_raw, write_untimed_raw
from tfrrl.data import schema


@pytest.fixture(scope="module")
def prepared(hand_built_prepared):
    out = hand_built_prepared["out"]
    train = read_records(out / "train")
    evals = read_records(out / "eval")
    corpus = {r["entity_id"]: r for r in read_records(out / "corpus")}
    return {"out": out, "train": train, "eval": evals, "corpus": corpus,
            "examples": train + evals, "result": hand_built_prepared["result"]}


def test_live_stream_carries_linked_item_category_and_brand(prepared):
    live = prepared["corpus"]["live:l1"]  # l1 → i1 (c1, b1, shop s1, 10.5)
    assert (live["entity_category"], live["entity_brand"]) == ("c1", "b1")
    assert (live["entity_shop"], live["entity_price"]) == ("s1", 10.5)
    assert live["entity_creator"] == "h1" and live["entity_type"] == "live"
    ex = [e for e in prepared["examples"] if e["entity_id"] == "live:l1"][0]
    assert (ex["entity_category"], ex["entity_brand"]) == ("c1", "b1")


def test_video_takes_its_product_but_keeps_its_own_fields(prepared):
    video = prepared["corpus"]["video:v1"]  # v1 → i2 (c2, b2, s1, 3.0), author a1, 30 s
    assert (video["entity_category"], video["entity_brand"], video["entity_price"]) == (
        "c2", "b2", 3.0)
    assert video["entity_creator"] == "a1" and video["entity_duration"] == 30.0


def test_shop_ad_has_defaults_for_item_only_fields(prepared):
    shop = prepared["corpus"]["shop:s1"]
    assert shop["entity_category"] == "c1" and shop["entity_shop_level"] == "3"
    assert shop["entity_shop"] == "s1"  # its own id, shared with the items it sells
    for field in ("entity_brand", "entity_creator"):
        assert shop[field] == schema.DEFAULT_TOKEN
    assert shop["entity_price"] == 0.0 and shop["entity_duration"] == 0.0


def test_link_to_missing_product_keeps_defaults_and_is_counted(prepared):
    live = prepared["corpus"]["live:l2"]  # l2 → i9, not in the item catalog
    assert live["entity_category"] == schema.DEFAULT_TOKEN and live["entity_creator"] == "h2"
    assert prepared["result"]["accounting"]["catalog_link_unresolved"] == 1


def test_no_sequence_contains_an_entity_at_or_after_the_timestamp(prepared, hand_built_prepared):
    # Timestamps of each (user, entity) exposure from the raw rows.
    times = {}
    for user, eid, etype, _, ts, _ in hand_built_prepared["rows"]:
        times.setdefault((user, f"{etype}:{eid}"), []).append(int(ts))
    checked = 0
    for ex in prepared["examples"]:
        for key in ex["seq_entity_id"][: ex["seq_length"]]:
            assert min(times[(ex["user_id"], key)]) < ex["timestamp"]
            checked += 1
    assert checked > 0
    # Hand-checked: u1's shop s1 at t=200 shares l1's timestamp → neither sees the other.
    s1 = [e for e in prepared["examples"] if e["entity_id"] == "shop:s1"][0]
    assert s1["seq_entity_id"] == ["item:i1", "", ""] and s1["seq_length"] == 1
    v1 = [e for e in prepared["examples"] if e["entity_id"] == "video:v1"][0]
    assert v1["seq_entity_id"] == ["item:i1", "live:l1", "shop:s1"]
    assert v1["seq_category"] == ["c1", "c1", "c1"]


def test_time_split_and_logq_probability(prepared):
    # cutoff 400: u1's i1@400 and u3's i2@500 are eval; 9 train rows.
    assert sorted((e["user_id"], e["entity_id"]) for e in prepared["eval"]) == [
        ("u1", "item:i1"), ("u3", "item:i2")]
    assert len(prepared["train"]) == 9
    # item:i1 appears 3 times in train; corpus has 3+2+1+2 = 8 entities; Q = (3+1)/(9+8).
    assert prepared["corpus"]["item:i1"]["train_count"] == 3
    assert prepared["corpus"]["item:i1"]["sampling_prob"] == pytest.approx(4 / 17)
    eval_i1 = [e for e in prepared["eval"] if e["entity_id"] == "item:i1"][0]
    assert eval_i1["sampling_prob"] == pytest.approx(4 / 17)


def test_stats(prepared):
    stats = json.loads((prepared["out"] / "stats.json").read_text())
    assert stats["domain_sizes"] == {"d0": 6, "d1": 3}
    assert stats["corpus_size"] == 8
    assert stats["corpus_entity_type_counts"] == {"item": 3, "live": 2, "shop": 2, "video": 1}
    assert stats["split"] == {"kind": "time", "cutoff_timestamp": 400}


def test_rare_ids_map_to_oov_through_the_reader(prepared):
    from tfrrl.data.reader import PreparedDataset

    data = PreparedDataset(str(prepared["out"]))
    vocab = data.vocabulary("entity_id")
    assert vocab[0] == schema.DEFAULT_TOKEN
    # train counts: i1 3, l1 1, s1 1, v1 1, i2 1, i3 1, l2 1 → only i1 reaches min_frequency 2.
    assert vocab == [schema.DEFAULT_TOKEN, "item:i1"]
    ids = {}
    for raw, mapped in zip(data.raw_dataset("train", 64), data.dataset("train", 64)):
        for key, idx in zip(raw["entity_id"].numpy(), mapped["entity_id"].numpy()):
            ids[key.decode()] = int(idx)
        seq = mapped["seq_entity_id"].numpy()
        assert ((seq == schema.PAD_ID) == (raw["seq_entity_id"].numpy() == b"")).all()
    assert ids["item:i1"] == 3  # first real value after padding, OOV, <none>
    assert ids["item:i3"] == schema.OOV_ID and ids["shop:s1"] == schema.OOV_ID


def test_accounting_balances(prepared):
    imp = prepared["result"]["accounting"]["impressions"]
    assert imp["rows_read"] == 11 and imp["train"] + imp["eval"] == 11
    assert imp["balanced"] and not imp["dead_letter"]


def test_click_label_rule_filters_and_counts(tmp_path):
    from beam_pipelines.run import PrepareConfig, run
    from tfrrl.data.link_spec import DatasetSpec

    write_hand_built_raw(tmp_path / "raw", [
        ["u1", "i1", "item", "d0", "100", "0"],
        ["u1", "i2", "item", "d0", "200", "1"],
        ["u2", "i2", "item", "d0", "300", "1"],
    ])
    spec = DatasetSpec.synthetic_default()
    spec.label = "click"
    result = run(str(tmp_path / "raw"), str(tmp_path / "out"),
                 PrepareConfig(cutoff_timestamp=300), spec=spec, beam_args=IN_MEMORY)
    imp = result["accounting"]["impressions"]
    assert imp["filtered"] == {"not_clicked": 1}
    assert (imp["train"], imp["eval"]) == (1, 1) and imp["balanced"]
    (ex,) = read_records(tmp_path / "out" / "train")
    assert ex["seq_entity_id"][0] == "item:i1"  # the non-clicked exposure stays in the sequence


def test_per_user_split_through_the_link(tmp_path):
    """``split: per_user`` through Beam and back from the TFRecords: by hand, eval_fraction 0.25
    → u1's 4 rows (t 100..400) give round(1.0) = 1 EVAL row (shop s1), u2's 2 rows (t 900,
    1000) give 1 (live l1), u3's single row trains; a global cutoff at the 0.75 quantile (950)
    would test none of u1's rows. stats.json records the rule."""
    from beam_pipelines.run import PrepareConfig, run

    write_hand_built_raw(tmp_path / "raw", [
        ["u1", "i1", "item", "d0", "100", "1"], ["u1", "i2", "item", "d0", "200", "1"],
        ["u1", "i3", "item", "d0", "300", "1"], ["u1", "s1", "shop", "d0", "400", "1"],
        ["u2", "v1", "video", "d0", "900", "1"], ["u2", "l1", "live", "d0", "1000", "1"],
        ["u3", "i1", "item", "d0", "950", "1"],
    ])
    cfg = PrepareConfig(split="per_user", eval_fraction=0.25, min_frequency=1)
    result = run(str(tmp_path / "raw"), str(tmp_path / "out"), cfg, beam_args=IN_MEMORY)
    assert result["stats"]["split"] == {"kind": "per_user_time", "eval_fraction": 0.25,
                                        "seed": 0}
    evals = read_records(tmp_path / "out" / "eval")
    assert sorted((r["user_id"], r["entity_id"]) for r in evals) == [
        ("u1", "shop:s1"), ("u2", "live:l1")]
    assert len(read_records(tmp_path / "out" / "train")) == 5
    s1 = next(r for r in evals if r["entity_id"] == "shop:s1")
    assert _sequence(s1) == ["item:i1", "item:i2", "item:i3"]  # the time rule's sequence


def _sequence(record) -> list:
    return [e for e in record["seq_entity_id"] if e != schema.PAD_TOKEN]


def test_untimed_sequences_hold_the_users_other_train_entities(tmp_path):
    """Without timestamps, through the Beam link and back from the TFRecords: each TRAIN
    example's sequence is min(L, |TRAIN| - 1) of the user's other TRAIN entities, each EVAL
    example's min(L, |TRAIN|) of them, no EVAL entity is ever in a sequence, the snapshot is the
    EVAL history, and a rerun writes the same records."""
    import tensorflow as tf

    from beam_pipelines.run import PrepareConfig, run

    raw = write_untimed_raw(tmp_path / "raw")
    L = 2
    cfg = PrepareConfig(sequence_length=L, min_frequency=1, eval_fraction=0.3)
    result = run(str(raw), str(tmp_path / "out"), cfg, beam_args=IN_MEMORY)
    assert result["stats"]["split"]["kind"] == "random"
    train, evals = read_records(tmp_path / "out" / "train"), read_records(tmp_path / "out" / "eval")
    assert len(train) + len(evals) == 15 and evals
    train_of = {}
    for r in train:
        train_of.setdefault(r["user_id"], set()).add(r["entity_id"])
    eval_of = {}
    for r in evals:
        eval_of.setdefault(r["user_id"], set()).add(r["entity_id"])
    truncated = 0
    for r in train:
        seq, others = _sequence(r), train_of[r["user_id"]] - {r["entity_id"]}
        assert set(seq) <= others and len(seq) == len(set(seq)) == min(L, len(others))
        assert r["seq_length"] == len(seq) and not set(seq) & eval_of.get(r["user_id"], set())
        truncated += len(others) > L
    for r in evals:
        seq = _sequence(r)
        assert set(seq) <= train_of[r["user_id"]]
        assert len(seq) == min(L, len(train_of[r["user_id"]])) == r["seq_length"]
    assert truncated, "no user with more than L other TRAIN rows: nothing truncated"
    snapshots = {}
    for path in (tmp_path / "out" / "user_snapshot").glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            snap = json.loads(line)
            snapshots[snap["user_id"]] = snap
    assert set(snapshots) == {"u1", "u2", "u3"}
    for user, snap in snapshots.items():
        seq = [e for e in snap["seq_entity_id"] if e != schema.PAD_TOKEN]
        assert set(seq) <= train_of[user] and len(seq) == min(L, len(train_of[user]))
    for r in evals:  # an EVAL example's history is the snapshot's, in the same order
        assert r["seq_entity_id"] == snapshots[r["user_id"]]["seq_entity_id"]
    # Deterministic: a second run writes the same serialized records.
    run(str(raw), str(tmp_path / "again"), cfg, beam_args=IN_MEMORY)
    for split in ("train", "eval", "user_snapshot"):
        files = [sorted((tmp_path / o / split).glob("*")) for o in ("out", "again")]
        if split == "user_snapshot":
            lines = [sorted(x for f in fs for x in f.read_text().splitlines()) for fs in files]
        else:
            lines = [sorted(bytes(x) for f in fs
                            for x in tf.data.TFRecordDataset(str(f)).as_numpy_iterator())
                     for fs in files]
        assert lines[0] and lines[0] == lines[1], split


def test_examples_are_written_in_shuffled_order(small_synthetic_prepared):
    """The per-entity join groups examples by entity; the writer must scatter them, or batches
    read through a bounded shuffle buffer are full of copies of one entity (a biased Q)."""
    import collections

    records = read_records(small_synthetic_prepared / "train")
    keys = [r["entity_id"] for r in records]
    adjacent_same = sum(a == b for a, b in zip(keys, keys[1:])) / (len(keys) - 1)
    freq = collections.Counter(keys)
    expected_if_random = sum((c / len(keys)) ** 2 for c in freq.values())
    assert adjacent_same < 2 * expected_if_random + 0.002, (adjacent_same, expected_if_random)
