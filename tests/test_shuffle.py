"""The write order (beam_pipelines/stages/shuffle.py): examples bucketed by impression
fingerprint and sorted by it within a bucket, whatever the batching; the batcher's memory is
bounded."""

from __future__ import annotations

import random

import pytest

from beam_pipelines import transforms
from beam_pipelines.stages.shuffle import BucketBatcher, bucket_of, in_write_order

BUCKETS = 7
# 200 examples: (split, fingerprint, value); fingerprints as assemble_user makes them.
EXAMPLES = [("train" if i % 5 else "eval",
             transforms.impression_fingerprint({"user_id": f"u{i % 13}", "entity_id": f"item:{i}",
                                                "entity_type": "item", "domain": "d0",
                                                "timestamp": 1000 + i, "click": 1}),
             f"value-{i}".encode()) for i in range(200)]


def test_bucket_of_is_the_first_64_bits_mod_buckets():
    # 0x0000000000000009 = 9 → 9 mod 7 = 2; the last 8 hex digits do not count.
    assert bucket_of("0000000000000009ffffffff", 7) == 2
    assert bucket_of("ffffffffffffffff00000000", 1) == 0
    assert len(EXAMPLES[0][1]) == transforms.FINGERPRINT_CHARS


def _batches(max_bytes, examples=EXAMPLES):
    batcher = BucketBatcher(BUCKETS, max_bytes=max_bytes)
    return [b for s, fp, v in examples for b in batcher.add(s, fp, v)] + batcher.flush()


@pytest.mark.parametrize("max_bytes", [1, 100, 1 << 20])
def test_batches_hold_every_value_once_under_its_split_and_bucket(max_bytes):
    batches = _batches(max_bytes)
    seen = [(split_name, v[24:]) for (split_name, bucket), vs in batches for v in vs
            if bucket == bucket_of(v[:24].decode(), BUCKETS)]
    assert sorted(seen) == sorted((s, v) for s, _, v in EXAMPLES)
    if max_bytes == 1:  # every value is handed out at once: nothing is held
        assert len(batches) == len(EXAMPLES)
    if max_bytes == 1 << 20:  # all held until the flush: one batch per (split, bucket)
        assert len(batches) == len({(s, bucket_of(fp, BUCKETS)) for s, fp, _ in EXAMPLES})


@pytest.mark.parametrize("max_bytes", [1, 100, 1 << 20])
def test_order_within_a_bucket_is_the_fingerprint_order_whatever_the_batching(max_bytes):
    shuffled = list(EXAMPLES)
    random.Random(max_bytes).shuffle(shuffled)  # arrival order must not matter either
    grouped = {}
    for key, values in _batches(max_bytes, shuffled):
        grouped.setdefault(key, []).append(values)
    for (split_name, bucket), batches in grouped.items():
        expected = [v for s, fp, v in sorted(EXAMPLES, key=lambda e: e[1])
                    if s == split_name and bucket_of(fp, BUCKETS) == bucket]
        assert in_write_order(reversed(batches)) == expected


def test_a_malformed_fingerprint_is_refused():
    with pytest.raises(ValueError, match="fingerprint"):
        BucketBatcher(BUCKETS).add("train", "abc", b"v")
