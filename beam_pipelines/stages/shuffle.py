"""The write order of the examples: deterministic and pseudo-random.

Examples leave the per-entity join grouped by entity; written in that order, a bounded tf.data
shuffle buffer would yield batches full of copies of one entity, and the in-batch negatives
would not follow the frequency Q of Eq. 2. Records are bucketed by a hash of their bytes and
sorted by it within a bucket: the order is the same on every run.
"""

from __future__ import annotations

import hashlib

import apache_beam as beam


def record_hash(record: bytes) -> int:
    """A 64-bit hash of a serialized record (blake2b: the same in every process and run)."""
    return int.from_bytes(hashlib.blake2b(record, digest_size=8).digest(), "big")


class ShuffleRecords(beam.PTransform):
    """Deterministic pseudo-random order of serialized records: bucket by hash, sort by hash."""

    def __init__(self, buckets: int):
        super().__init__()
        self._buckets = max(1, buckets)

    def expand(self, records):
        buckets = self._buckets
        return (records
                | "HashBucket" >> beam.Map(lambda r: (record_hash(r) % buckets, r))
                | "GroupBuckets" >> beam.GroupByKey()
                | "SortBucket" >> beam.FlatMap(lambda kv: sorted(kv[1], key=record_hash)))
