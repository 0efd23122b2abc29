"""The write-order shuffle (beam_pipelines/stages/shuffle.py): batching does not change the
order, and the batcher's memory is bounded."""

from __future__ import annotations

import struct

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that

from beam_pipelines.stages.shuffle import (HASH_BYTES, BucketBatcher, ShuffleRecords,
                                           record_digest, record_hash)

RECORDS = [f"record-{i}".encode() for i in range(200)]
BUCKETS = 7


def _expected_order():
    """Bucket by bucket (any bucket order), records sorted by hash within a bucket."""
    by_bucket = {}
    for r in RECORDS:
        by_bucket.setdefault(record_hash(r) % BUCKETS, []).append(r)
    return {b: sorted(rs, key=record_hash) for b, rs in by_bucket.items()}


@pytest.mark.parametrize("max_bytes", [1, 100, 1 << 20])
def test_batches_hold_every_record_once_in_its_bucket(max_bytes):
    batcher = BucketBatcher(BUCKETS, max_bytes=max_bytes)
    batches = [b for r in RECORDS for b in batcher.add(r)] + list(batcher.flush())
    # Each record crosses prefixed with its 8-byte hash, in the bucket of that hash.
    seen = [rec[HASH_BYTES:] for bucket, recs in batches for rec in recs
            if rec[:HASH_BYTES] == record_digest(rec[HASH_BYTES:])
            and bucket == record_hash(rec[HASH_BYTES:]) % BUCKETS]
    assert sorted(seen) == sorted(RECORDS)
    if max_bytes == 1:  # every record is handed out at once: nothing is held
        assert len(batches) == len(RECORDS)


@pytest.mark.parametrize("max_bytes", [1, 1 << 20])
def test_order_within_a_bucket_does_not_depend_on_batching(max_bytes):
    def batches():
        batcher = BucketBatcher(BUCKETS, max_bytes=max_bytes)
        return [b for r in RECORDS for b in batcher.add(r)] + list(batcher.flush())

    expected = _expected_order()

    def check(blocks):
        # One framed block per bucket (tfrecord_blocks.frame_records): unframe them.
        assert len(blocks) == len(expected)
        records = []
        for block in blocks:
            at = 0
            while at < len(block):
                (n,) = struct.unpack("<Q", block[at:at + 8])
                records.append(block[at + 12:at + 12 + n])
                at += 16 + n
        # Cut the output into runs of one bucket; each run is that bucket, sorted by hash.
        runs, last = [], None
        for r in records:
            bucket = record_hash(r) % BUCKETS
            if bucket != last:
                runs.append((bucket, []))
                last = bucket
            runs[-1][1].append(r)
        assert sorted(b for b, _ in runs) == sorted(expected)  # each bucket in one run
        for bucket, rs in runs:
            assert rs == expected[bucket]

    with beam.Pipeline(argv=["--direct_running_mode=in_memory"]) as p:
        out = (p | beam.Create(batches()) | ShuffleRecords()
               | beam.combiners.ToList())
        assert_that(out, lambda lists: check(lists[0]))
