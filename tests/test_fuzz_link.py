"""Fuzz: 1,000 malformed rows mixed into 10,000 good ones, in CSV, JSONL and Parquet."""

from __future__ import annotations

import collections
import json
import random

import pytest

from tests.conftest import IN_MEMORY, read_records, write_csv
from tfrrl.data.link_spec import DatasetSpec

N_GOOD, N_BAD = 10_000, 1_000
USERS = [f"u{i}" for i in range(200)]
ITEMS = [f"i{i}" for i in range(300)]
COLUMNS = ["user_id", "entity_id", "entity_type", "domain", "timestamp", "click"]


def _good_rows(rng):
    # Unique (user, item, timestamp) so no good row duplicates another.
    return [[USERS[rng.randrange(len(USERS))], ITEMS[rng.randrange(len(ITEMS))], "item",
             f"d{rng.randrange(3)}", str(1_000_000 + i), "1"] for i in range(N_GOOD)]


# Each kind: (reason, make(rng, good_rows) -> raw line or dict). Lines are CSV/JSONL bytes.
def _bad_row(kind, rng, good):
    base = list(rng.choice(good))
    if kind == "missing_column":
        return base[:4]
    if kind == "bad_number":
        base[4] = rng.choice(["abc", "12x", "nan", "1e400"])
        return base
    if kind == "unknown_entity_type":
        base[2] = "gadget"
        return base
    if kind == "unknown_user":
        base[0] = f"ghost{rng.randrange(10**6)}"
        return base
    if kind == "unknown_entity":
        base[1] = f"nope{rng.randrange(10**6)}"
        return base
    if kind == "duplicate_row":
        return base  # an exact copy of a good row
    if kind == "empty_line":
        return None
    if kind == "bad_encoding":
        return "bad_encoding"
    raise AssertionError(kind)


TEXT_KINDS = ["missing_column", "bad_number", "unknown_entity_type", "unknown_user",
              "unknown_entity", "duplicate_row", "empty_line", "bad_encoding"]
PARQUET_KINDS = ["bad_number", "unknown_entity_type", "unknown_user", "unknown_entity",
                 "duplicate_row"]


def _line(fmt, row):
    if fmt == "csv":
        return (",".join(row)).encode()
    return json.dumps(dict(zip(COLUMNS, row))).encode()


def _write_raw(root, fmt, rng):
    good = _good_rows(rng)
    kinds = TEXT_KINDS if fmt != "parquet" else PARQUET_KINDS
    expected = collections.Counter()
    mixed = [("good", r) for r in good]
    for i in range(N_BAD):
        kind = kinds[i % len(kinds)]
        bad = _bad_row(kind, rng, good)
        # A truncated JSON object is bad JSON rather than a missing column.
        expected["bad_json" if (fmt == "jsonl" and kind == "missing_column") else kind] += 1
        mixed.insert(rng.randrange(len(mixed) + 1), (kind, bad))
    write_csv(root / "users.csv", ["user_id", "age_bucket", "gender", "city_tier"],
              [[u, "a", "g", "c"] for u in USERS])
    write_csv(root / "catalogs/item.csv", ["entity_id", "category", "brand", "shop", "price"],
              [[i, f"c{int(i[1:]) % 7}", "b", "s", "1.0"] for i in ITEMS])
    spec = DatasetSpec.from_dict({
        "impressions": {"path": f"impressions/*.{fmt}", "format": fmt},
        "users": {"path": "users.csv", "fields": {"age_bucket": "age_bucket"}},
        "entity_types": {"item": {"path": "catalogs/item.csv",
                                  "fields": {"category": "category", "price": "price"}}},
    })
    (root / "impressions").mkdir(parents=True)
    path = root / f"impressions/part-0.{fmt}"
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = [r for _, r in mixed]
        pq.write_table(pa.table({c: [r[j] for r in rows] for j, c in enumerate(COLUMNS)}), path)
    else:
        with open(path, "wb") as f:
            if fmt == "csv":
                f.write((",".join(COLUMNS) + "\n").encode())
            for kind, row in mixed:
                if row is None:
                    f.write(b"\n")
                elif row == "bad_encoding":
                    f.write(b"u1,i1,item,d0,\xff\xfe\xfa,1\n")
                elif kind == "missing_column" and fmt == "jsonl":
                    f.write(_line(fmt, row)[:-3] + b"\n")
                else:
                    f.write(_line(fmt, row) + b"\n")
    return spec, good, expected


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_malformed_rows_go_to_dead_letter_and_every_good_row_is_written(tmp_path, fmt):
    from beam_pipelines.run import PrepareConfig, run

    rng = random.Random(42)
    spec, good, expected = _write_raw(tmp_path / "raw", fmt, rng)
    (tmp_path / "raw" / "link_spec.yaml").write_text(spec.to_yaml())
    out = tmp_path / "out"
    result = run(str(tmp_path / "raw"), str(out), PrepareConfig(sequence_length=4),
                 beam_args=IN_MEMORY)
    acc = result["accounting"]["impressions"]
    assert acc["rows_read"] == N_GOOD + N_BAD and acc["balanced"]
    assert acc["train"] + acc["eval"] == N_GOOD
    assert acc["dead_letter"] == dict(expected)

    written = collections.Counter(
        (r["user_id"], r["entity_id"], r["timestamp"])
        for r in read_records(out / "train") + read_records(out / "eval"))
    assert written == collections.Counter(
        (u, f"item:{e}", int(t)) for u, e, _, _, t, _ in good)

    dead = [json.loads(line) for p in sorted((out / "dead_letter").glob("*.jsonl"))
            for line in p.read_text().splitlines()]
    assert collections.Counter(d["reason"] for d in dead) == expected
    assert all(d["source"] == "impressions" and "row" in d for d in dead)
