"""The write order of the examples: deterministic and pseudo-random.

Examples leave the per-entity join grouped by entity; written in that order, a bounded tf.data
shuffle buffer would yield batches full of copies of one entity, and the in-batch negatives
would not follow the frequency Q of Eq. 2. Records are bucketed by a hash of their bytes and
sorted by it within a bucket: the order is the same on every run.

The records cross the bucket shuffle in batches (:class:`BucketBatcher`: one element per bucket
and flush instead of one per record), each record prefixed with its hash so that it is computed
once; the order within a bucket depends only on the hashes, not on how records were batched.
After the grouping a bucket leaves as ONE element, its records framed as a TFRecord block
(``beam_pipelines/tfrecord_blocks.py``), so the writer, too, pays the runner's per-element cost
per bucket and not per record.
"""

from __future__ import annotations

import hashlib
from typing import List, Tuple

import apache_beam as beam

from beam_pipelines import packed
from beam_pipelines.tfrecord_blocks import frame_records

# (bucket, [hash-prefixed record, ...]): what crosses the bucket shuffle.
BucketBatch = Tuple[int, List[bytes]]
HASH_BYTES = 8


def record_digest(record: bytes) -> bytes:
    """The 64-bit hash of a serialized record, as 8 bytes (blake2b: the same in every process
    and run)."""
    return hashlib.blake2b(record, digest_size=HASH_BYTES).digest()


def record_hash(record: bytes) -> int:
    """:func:`record_digest` as an unsigned integer (big-endian): its byte order is its
    numeric order."""
    return int.from_bytes(record_digest(record), "big")


class BucketBatcher:
    """Collects records by hash bucket; hands them out as :data:`BucketBatch` elements (each
    record prefixed with its :func:`record_digest`) once ``max_bytes`` of records are held (and
    at :meth:`flush`), so memory stays bounded (``packed.KeyedBatcher`` keyed by bucket)."""

    def __init__(self, buckets: int, max_bytes: int = 32 << 20):
        self._buckets = max(1, buckets)
        self._batcher = packed.KeyedBatcher(max_bytes)

    def add(self, record: bytes) -> List[BucketBatch]:
        """Holds ``record``; returns every held batch once the byte budget is reached."""
        digest = record_digest(record)
        return self._batcher.add(int.from_bytes(digest, "big") % self._buckets,
                                 digest + record)

    def flush(self) -> List[BucketBatch]:
        return self._batcher.flush()


def sorted_bucket(batches: List[List[bytes]]) -> List[bytes]:
    """A bucket's records (the batches of :class:`BucketBatcher`, any batching) in write order:
    sorted by hash (ties, identical hashes, by the bytes), hash prefix removed."""
    return [r[HASH_BYTES:] for r in sorted(r for batch in batches for r in batch)]


def _framed_bucket(element: Tuple[int, List[List[bytes]]]) -> bytes:
    return frame_records(sorted_bucket(element[1]))


class ShuffleRecords(beam.PTransform):
    """Deterministic pseudo-random order: :data:`BucketBatch` elements (made by a
    :class:`BucketBatcher`) → one TFRecord block per bucket (``tfrecord_blocks.frame_records``),
    its records sorted by hash; write them with ``tfrecord_blocks.WriteTFRecordBlocks``."""

    def expand(self, batches):
        return (batches
                | "GroupBuckets" >> beam.GroupByKey()
                | "FrameBucket" >> beam.Map(_framed_bucket))
