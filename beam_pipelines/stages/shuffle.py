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

import collections
import hashlib
from typing import Dict, Iterator, List, Tuple

import apache_beam as beam

# (bucket, [record, ...]): what crosses the bucket shuffle.
BucketBatch = Tuple[int, List[bytes]]


def record_hash(record: bytes) -> int:
    """A 64-bit hash of a serialized record (blake2b: the same in every process and run)."""
    return int.from_bytes(hashlib.blake2b(record, digest_size=8).digest(), "big")


class BucketBatcher:
    """Collects records by hash bucket; hands them out as :data:`BucketBatch` elements once
    ``max_bytes`` of records are held (and at :meth:`flush`), so memory stays bounded."""

    def __init__(self, buckets: int, max_bytes: int = 32 << 20):
        self._buckets = max(1, buckets)
        self._max_bytes = max_bytes
        self._held: Dict[int, List[bytes]] = collections.defaultdict(list)
        self._bytes = 0

    def add(self, record: bytes) -> Iterator[BucketBatch]:
        """Holds ``record``; yields every held batch when the byte budget is reached."""
        self._held[record_hash(record) % self._buckets].append(record)
        self._bytes += len(record)
        if self._bytes >= self._max_bytes:
            yield from self.flush()

    def flush(self) -> Iterator[BucketBatch]:
        held, self._held, self._bytes = self._held, collections.defaultdict(list), 0
        yield from held.items()


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
