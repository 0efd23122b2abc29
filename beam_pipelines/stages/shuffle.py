"""The write order of the examples: deterministic and pseudo-random.

Examples leave the per-user assembly grouped by user; written in that order (or grouped by
entity), a bounded tf.data shuffle buffer would yield batches full of one user's or one
entity's rows, and the in-batch negatives would not follow the frequency Q of Eq. 2. Each
example is therefore bucketed by its impression fingerprint (``transforms.impression_fingerprint``:
a hash of the impression's contract values, user id included, unique among kept impressions)
and the examples of a bucket are written sorted by it: the order is the same on every run and
independent of how the runner batched, grouped or ordered anything.

The bucketing happens BEFORE the examples are encoded: the per-user assembly hands the
grouping its examples as compact packed carried values (``stages/assembly.py``), pre-grouped
by (split, bucket) within the bundle (:class:`BucketBatcher`: one element per bucket and flush
instead of one per example), and Finalize (``stages/finalize.py``) completes, encodes and
frames one whole bucket at a time (``tfrecord_blocks.py``). So the examples cross ONE
impression-sized grouping between the assembly and the files, in their compact form.
"""

from __future__ import annotations

from typing import Iterable, List, Tuple

from beam_pipelines import packed
from beam_pipelines.transforms import FINGERPRINT_CHARS

# ((split, bucket), [fingerprint-prefixed value, ...]): what crosses the bucket grouping.
BucketBatch = Tuple[Tuple[str, int], List[bytes]]


def bucket_of(fingerprint: str, buckets: int) -> int:
    """The write bucket of an example: the fingerprint's first 64 bits mod ``buckets``."""
    return int(fingerprint[:16], 16) % max(1, buckets)


class BucketBatcher:
    """Collects packed examples by (split, write bucket), each prefixed with its fingerprint,
    and hands them out as :data:`BucketBatch` elements once ``max_bytes`` are held (and at
    :meth:`flush`), so memory stays bounded (``packed.KeyedBatcher``)."""

    def __init__(self, buckets: int, max_bytes: int = 32 << 20):
        self._buckets = max(1, buckets)
        self._batcher = packed.KeyedBatcher(max_bytes)

    def add(self, split_name: str, fingerprint: str, value: bytes) -> List[BucketBatch]:
        """Holds ``value``; returns every held batch once the byte budget is reached."""
        if len(fingerprint) != FINGERPRINT_CHARS:
            raise ValueError(f"not an impression fingerprint: {fingerprint!r}")
        return self._batcher.add((split_name, bucket_of(fingerprint, self._buckets)),
                                 fingerprint.encode("ascii") + value)

    def flush(self) -> List[BucketBatch]:
        return self._batcher.flush()


def in_write_order(batches: Iterable[Iterable[bytes]]) -> List[bytes]:
    """A bucket's values (its batches from :class:`BucketBatcher`, in any batching and order)
    sorted by fingerprint, the prefix removed."""
    return [v[FINGERPRINT_CHARS:] for v in sorted(v for batch in batches for v in batch)]
