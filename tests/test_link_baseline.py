"""The benchmark baseline (benchmarks/link_baseline.py) does THE SAME transform as the Beam link.

``benchmarks/pipeline_throughput.py`` compares rows/s of both; that comparison only means
something if they produce the same records. Here both run on the hand-built raw folder, on a
hand-built folder full of edge cases (dead letters, ties in time, the click label rule) and on a
5,000-impression synthetic dataset, with a fixed cutoff so that the split is identical.
"""

from __future__ import annotations

import collections
import csv
import pathlib
from typing import Dict, List

import pytest

from beam_pipelines.run import PrepareConfig, run
from beam_pipelines import transforms
from beam_pipelines.stages.shuffle import bucket_of
from benchmarks import link_baseline
from tests.conftest import (IN_MEMORY, read_records, read_records_of, write_csv,
                            write_hand_built_raw)
from tfrrl.artifacts import prepared
from tfrrl.data import link_spec


def _canonical(record: Dict) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                        for k, v in record.items() if k != "sampling_prob"))


def _assert_same_records(beam: List[Dict], base: List[Dict], what: str) -> None:
    assert len(beam) == len(base), what
    beam = sorted(beam, key=_canonical)
    base = sorted(base, key=_canonical)
    assert [_canonical(r) for r in beam] == [_canonical(r) for r in base], what
    assert [r["sampling_prob"] for r in base] == pytest.approx(
        [r["sampling_prob"] for r in beam], rel=1e-6), what


def _dead_letters(out: pathlib.Path) -> collections.Counter:
    dead = collections.Counter()
    for path in (out / prepared.DEAD_LETTER_DIR).glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            dead[line] += 1
    return dead


def _assert_same_outputs(beam_out: pathlib.Path, base_out: pathlib.Path, beam_result: Dict,
                         base_result: Dict) -> None:
    for split in (prepared.TRAIN_DIR, prepared.EVAL_DIR):
        _assert_same_records(read_records(beam_out / split), read_records(base_out / split),
                             split)
    train_eval = (read_records(beam_out / "train") + read_records(beam_out / "eval"))
    assert train_eval, "nothing to compare"
    _assert_same_records(read_records(beam_out / prepared.CORPUS_DIR),
                         read_records(base_out / prepared.CORPUS_DIR), "corpus")
    beam_vocab = sorted(p.name for p in (beam_out / prepared.VOCAB_DIR).iterdir())
    assert beam_vocab == sorted(p.name for p in (base_out / prepared.VOCAB_DIR).iterdir())
    for name in beam_vocab:  # same tokens in the same order (the ids)
        assert ((beam_out / prepared.VOCAB_DIR / name).read_text()
                == (base_out / prepared.VOCAB_DIR / name).read_text()), name
    assert base_result["accounting"] == beam_result["accounting"]
    assert base_result["stats"] == beam_result["stats"]
    freq = [set((o / prepared.FREQUENCY_FILE).read_text().splitlines())
            for o in (beam_out, base_out)]
    assert freq[0] == freq[1]
    assert _dead_letters(base_out) == _dead_letters(beam_out)
    snapshots = [sorted(line for f in sorted((o / prepared.USER_SNAPSHOT_DIR).glob("*.jsonl"))
                        for line in f.read_text(encoding="utf-8").splitlines())
                 for o in (beam_out, base_out)]
    assert snapshots[0] and snapshots[0] == snapshots[1]


def _run_both(raw: pathlib.Path, tmp_path: pathlib.Path, cfg: PrepareConfig):
    beam_out, base_out = tmp_path / "beam", tmp_path / "base"
    beam_result = run(str(raw), str(beam_out), cfg, beam_args=IN_MEMORY)
    base_result = link_baseline.run(str(raw), str(base_out), cfg)
    return beam_out, base_out, beam_result, base_result


def test_hand_built_rows_give_the_same_records(hand_built_prepared, tmp_path):
    cfg = PrepareConfig(sequence_length=3, min_frequency=2, cutoff_timestamp=400)
    base_out = tmp_path / "base"
    base_result = link_baseline.run(str(hand_built_prepared["raw"]), str(base_out), cfg)
    _assert_same_outputs(hand_built_prepared["out"], base_out, hand_built_prepared["result"],
                         base_result)


def test_edge_cases_give_the_same_records_and_dead_letters(tmp_path):
    raw = tmp_path / "raw"
    rows = [
        # u1: three exposures share t=100 (their order is the fingerprint order) and the
        # window (L=2) at t=200 holds only two of them.
        ["u1", "i1", "item", "d0", "100", "1"],
        ["u1", "i2", "item", "d1", "100", "0"],
        ["u1", "s1", "shop", "d0", "100", "1"],
        ["u1", "v1", "video", "d1", "200", "1"],
        ["u1", "v1", "video", "d1", "200", "1"],        # exact duplicate → duplicate_row
        ["u1", "l1", "live", "d0", "300", "0"],         # not clicked: filtered, still exposed
        ["u1", "i3", "item", "d0", "300.9", "1"],       # timestamps truncate like int(float)
        ["u1", " i1 ", "item", "d1", "400", "1"],        # padded tokens are stripped
        ["u2", "i1", "item", "d0", "150", "1"],
        ["u2", "l2", "live", "d1", "250", ""],          # empty click counts as 0
        ["u2", "i2", "item", "d0", "450", "1"],
        ["u3", "i3", "item", "d1", "120", "1"],
        ["u3", "i1", "item", "d0", "460", "1"],
        ["u4", "i1", "item", "d0", "130", "1"],         # u4 has no profile → unknown_user
        ["u2", "i7", "item", "d0", "140", "1"],         # not in the item catalog
        ["u2", "i1", "podcast", "d0", "150", "1"],      # unknown entity type
        ["u2", "i1", "item", "d0", "soon", "1"],        # bad timestamp
        ["u2", "i1", "item", "d0", "", "1"],            # missing timestamp
        ["u2", "i1", "item", "d0", "160", "2"],         # click not 0/1
        ["", "i1", "item", "d0", "170", "1"],           # missing user
        ["u3", "i2", "item", "", "180", "1"],           # missing domain
    ]
    write_hand_built_raw(raw, rows)
    with open(raw / "impressions/part-0.csv", "a", encoding="utf-8") as f:
        f.write("u1,i1,item\n")  # wrong number of fields → missing_column
        f.write("   \n")  # whitespace-only line → empty_line
    write_csv(raw / "impressions/part-1.csv", ["user_id", "entity_id", "entity_type", "domain",
                                               "timestamp", "click"],
              [["u3", "v1", "video", "d1", "470", "1"], ["u1", "i2", "item", "d0", "500", "1"]])
    with open(raw / "catalogs/item.csv", "a", encoding="utf-8") as f:
        f.write("i4,c4,b4,s2,cheap\n")  # bad price → catalog bad_number
        f.write("i3,c9,b9,s2,1\n")  # a second i3 → duplicate_entity (JSON order decides)
        f.write(",c1,b1,s1,1\n")  # no id → missing_value
    with open(raw / "users.csv", "a", encoding="utf-8") as f:
        f.write("u2,45-54,M,3\n")  # a second u2 → duplicate_user
    spec = link_spec.DatasetSpec.synthetic_default()
    spec.label = "click"
    (raw / link_spec.SPEC_FILENAME).write_text(spec.to_yaml(), encoding="utf-8")

    cfg = PrepareConfig(sequence_length=2, min_frequency=1, cutoff_timestamp=450)
    beam_out, base_out, beam_result, base_result = _run_both(raw, tmp_path, cfg)
    _assert_same_outputs(beam_out, base_out, beam_result, base_result)
    dead = base_result["accounting"]["impressions"]["dead_letter"]
    for reason in ("duplicate_row", "unknown_user", "unknown_entity", "unknown_entity_type",
                   "bad_number", "missing_value", "missing_column", "empty_line"):
        assert dead.get(reason), reason  # every path above was exercised
    assert base_result["accounting"]["impressions"]["filtered"]["not_clicked"] == 3


def test_synthetic_impressions_give_the_same_records(tmp_path):
    synthetic = pytest.importorskip("tfrrl.data.synthetic")
    raw = tmp_path / "raw"
    summary = synthetic.generate(synthetic.SyntheticConfig(impressions=5_000, seed=0), str(raw),
                                 verbose=False)
    cutoff = summary["start_time"] + int(0.9 * (summary["end_time"] - summary["start_time"]))
    cfg = PrepareConfig(cutoff_timestamp=cutoff)
    beam_out, base_out, beam_result, base_result = _run_both(raw, tmp_path, cfg)
    _assert_same_outputs(beam_out, base_out, beam_result, base_result)
    assert base_result["stats"]["num_train"] > 0 and base_result["stats"]["num_eval"] > 0
    # Written in stages/shuffle.py's order: the write bucket of the impression fingerprint,
    # then the fingerprint (recomputed here from each record and its raw row's click), so not
    # grouped by user or entity. The baseline writes one file in that order; Beam writes every
    # bucket as one sorted run, the runs in the runner's order.
    clicks = {(r["user_id"], link_spec.entity_key(r["entity_type"], r["entity_id"]), r["domain"],
               int(r["timestamp"])): r["click"]
              for path in (raw / "impressions").glob("*.csv")
              for r in csv.DictReader(open(path, encoding="utf-8"))}

    def fingerprints(path: pathlib.Path) -> List[str]:
        out = []
        for r in read_records_of(path):
            values = dict(r, click=clicks[(r["user_id"], r["entity_id"], r["domain"],
                                           r["timestamp"])])
            out.append(transforms.impression_fingerprint(values))
        return out

    buckets = cfg.shuffle_buckets
    (base_file,) = sorted((base_out / "train").glob("*.tfrecord"))
    base_fps = fingerprints(base_file)
    assert base_fps == sorted(base_fps, key=lambda fp: (bucket_of(fp, buckets), fp))
    first = read_records_of(base_file)[:50]
    assert len({r["user_id"] for r in first}) > 25 and len({r["entity_id"] for r in first}) > 25
    beam_fps = []
    for path in sorted((beam_out / "train").glob("*.tfrecord")):
        fps = fingerprints(path)
        beam_fps += fps
        runs = [[fps[0]]] if fps else []
        for prev, fp in zip(fps, fps[1:]):
            if bucket_of(fp, buckets) == bucket_of(prev, buckets):
                runs[-1].append(fp)
            else:
                runs.append([fp])
        assert all(run == sorted(run) for run in runs)
        assert len({bucket_of(run[0], buckets) for run in runs}) == len(runs)
    assert sorted(beam_fps) == sorted(base_fps)


@pytest.mark.parametrize("label", ["impression", "click"])
def test_no_users_no_timestamps_and_a_type_without_catalog(tmp_path, label):
    """Random split (fingerprints of every row), default profiles and default entities; the
    untimed histories (the other TRAIN exposures, truncated at L = 4; with ``label: click``
    the not-clicked ones too)."""
    raw = tmp_path / "raw"
    rows = [[f"u{i % 5}", f"i{1 + i % 3}" if i % 4 else f"k{i % 6}",
             "item" if i % 4 else "coupon", f"d{i % 2}", "0", str(int(i % 7 != 3))]
            for i in range(60)]
    # Without timestamps equal rows are exact duplicates (rows 60 apart, and row 7 again).
    rows.append(list(rows[7]))
    write_hand_built_raw(raw, rows)
    spec = link_spec.DatasetSpec.synthetic_default()
    spec.users = None
    spec.impressions.columns = dict(spec.impressions.columns, timestamp=None)
    spec.entity_types["coupon"] = link_spec.EntityTypeSpec()  # no catalog: ids → defaults
    spec.label = label
    (raw / link_spec.SPEC_FILENAME).write_text(spec.validate().to_yaml(), encoding="utf-8")
    cfg = PrepareConfig(sequence_length=4, min_frequency=1, eval_fraction=0.3)
    beam_out, base_out, beam_result, base_result = _run_both(raw, tmp_path, cfg)
    _assert_same_outputs(beam_out, base_out, beam_result, base_result)
    lengths = [r["seq_length"] for r in read_records(base_out / "train")]
    assert 4 in lengths and min(lengths) > 0  # truncated histories; none empty
    if label == "click":  # rows i % 7 == 3 are not clicked (but stay exposures)
        assert base_result["accounting"]["impressions"]["filtered"]["not_clicked"] > 0
    assert base_result["stats"]["split"]["kind"] == "random"
    assert base_result["stats"]["corpus_entity_type_counts"]["coupon"] == 3  # k0, k2, k4
    assert set(base_result["accounting"]["impressions"]["dead_letter"]) == {"duplicate_row"}
