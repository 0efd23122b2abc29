"""The write order of the examples: deterministic and pseudo-random.

Examples leave the per-entity join grouped by entity; written in that order, a bounded tf.data
shuffle buffer would yield batches full of copies of one entity, and the in-batch negatives
would not follow the frequency Q of Eq. 2. Records are bucketed by a hash of their bytes and
sorted by it within a bucket: the order is the same on every run.

The records cross the bucket shuffle in batches (:class:`BucketBatcher`: one element per bucket
and flush instead of one per record), so the runner's per-element cost is paid per batch; the
order within a bucket depends only on the hashes, not on how records were batched.
"""

from __future__ import annotations

import hashlib
from typing import Iterator, List, Tuple

import apache_beam as beam

from beam_pipelines import packed

# (bucket, [record, ...]): what crosses the bucket shuffle.
BucketBatch = Tuple[int, List[bytes]]


def record_hash(record: bytes) -> int:
    """A 64-bit hash of a serialized record (blake2b: the same in every process and run)."""
    return int.from_bytes(hashlib.blake2b(record, digest_size=8).digest(), "big")


class BucketBatcher:
    """Collects records by hash bucket; hands them out as :data:`BucketBatch` elements once
    ``max_bytes`` of records are held (and at :meth:`flush`), so memory stays bounded
    (``packed.KeyedBatcher`` keyed by bucket)."""

    def __init__(self, buckets: int, max_bytes: int = 32 << 20):
        self._buckets = max(1, buckets)
        self._batcher = packed.KeyedBatcher(max_bytes)

    def add(self, record: bytes) -> List[BucketBatch]:
        """Holds ``record``; returns every held batch once the byte budget is reached."""
        return self._batcher.add(record_hash(record) % self._buckets, record)

    def flush(self) -> List[BucketBatch]:
        return self._batcher.flush()


def _sorted_records(element: Tuple[int, List[List[bytes]]]) -> Iterator[bytes]:
    _, batches = element
    return iter(sorted((r for batch in batches for r in batch), key=record_hash))


class ShuffleRecords(beam.PTransform):
    """Deterministic pseudo-random order: :data:`BucketBatch` elements (made by a
    :class:`BucketBatcher`) → serialized records, bucket by bucket, sorted by hash within one."""

    def expand(self, batches):
        return (batches
                | "GroupBuckets" >> beam.GroupByKey()
                | "SortBucket" >> beam.FlatMap(_sorted_records))
