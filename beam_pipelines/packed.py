"""Compact elements for the impression-sized shuffles of the link.

Why: a runner that groups in memory (Beam's local FnApiRunner) keeps every grouped value as a
decoded Python object until the group is read, so a dict of 30 string keys per impression costs
kilobytes. Packing a value to ``bytes`` before the shuffle leaves ONE bytes object per element
(the encoded tuple of primitives); consumers unpack it.

The packing is ``marshal`` (CPython's own serializer of primitives, in C): on the link's
tuples it packs and unpacks about twice as fast as Beam's ``FastPrimitivesCoder``
(benchmarks/RESULTS.md, "Beam link speed"). Its bytes are read back only by the same job
(workers run the launcher's Python version, as Beam requires for its pickled DoFns) and never
reach the outputs; nothing compares or hashes them (the write order sorts by a fingerprint
prefix, ``stages/shuffle.py``), so marshal's reference flags, which make equal values' bytes
depend on object identity, do not matter. A value marshal cannot serialize falls back to the
Beam coder; the first byte says which was used.
"""

from __future__ import annotations

import collections
import marshal
from typing import Any, Dict, Hashable, Iterable, List, Mapping, Sequence, Tuple

import apache_beam as beam

_CODER = beam.coders.FastPrimitivesCoder()
_MARSHAL, _BEAM_CODER = b"m", b"b"


def pack(value: Any) -> bytes:
    """A tuple / dict / list of primitives → bytes (marshal; Beam's coder for anything else)."""
    try:
        return _MARSHAL + marshal.dumps(value)
    except ValueError:  # e.g. a datetime from a Parquet file
        return _BEAM_CODER + _CODER.encode(value)


def unpack(data: bytes) -> Any:
    """The value :func:`pack` packed."""
    if data[:1] == _MARSHAL:
        return marshal.loads(data[1:])
    return _CODER.decode(data[1:])


class KeyedBatcher:
    """Bundle-local pre-grouping of bytes values by key, for a DoFn in front of a grouping.

    A runner pays its per-element cost (encode, hand over, decode, regroup) for every element
    that crosses a shuffle; a DoFn that holds its outputs by key and hands them out as
    ``(key, [value, …])`` once ``max_bytes`` of values are held (and at :meth:`flush`, from
    ``finish_bundle``) sends one element per key and flush instead of one per value. The
    grouping still sees every value exactly once: the consumer concatenates the lists. Memory
    stays bounded by ``max_bytes`` (plus the keys).
    """

    def __init__(self, max_bytes: int = 32 << 20):
        self._max_bytes = max_bytes
        self._held: Dict[Hashable, List[bytes]] = collections.defaultdict(list)
        self._bytes = 0

    def add(self, key: Hashable, value: bytes) -> List[Tuple[Hashable, List[bytes]]]:
        """Holds ``value`` under ``key``; returns every held batch once the byte budget is
        reached (else nothing)."""
        self._held[key].append(value)
        self._bytes += len(value)
        return self.flush() if self._bytes >= self._max_bytes else []

    def flush(self) -> List[Tuple[Hashable, List[bytes]]]:
        """Every held ``(key, [value, …])``, emptying the batcher."""
        held, self._held, self._bytes = self._held, collections.defaultdict(list), 0
        return list(held.items())


def _tag(kv: Tuple[Any, Any], tag: bytes) -> Tuple[Any, bytes]:
    return kv[0], tag + pack(kv[1])


def _untag(element: Tuple[Any, Iterable[bytes]], tags: Sequence[str]
           ) -> Tuple[Any, Dict[str, List[Any]]]:
    key, values = element
    grouped: Dict[str, List[Any]] = {t: [] for t in tags}
    for v in values:
        grouped[tags[v[0]]].append(unpack(v[1:]))
    return key, grouped


class GroupPacked(beam.PTransform):
    """CoGroupByKey with packed values: ``{tag: PCollection[(key, value)]}`` →
    ``(key, {tag: [value, …]})``, values of primitives (tuples, dicts, str, numbers).

    Unlike ``beam.CoGroupByKey`` (which groups ``(tag, value)`` tuples) each value crosses the
    shuffle as ONE bytes object: a tag byte followed by the packed value.
    """

    def expand(self, pcolls: Mapping[str, beam.PCollection]):
        tags = tuple(pcolls)
        assert len(tags) < 256
        tagged = [pcolls[t] | f"Tag[{t}]" >> beam.Map(_tag, bytes([i]))
                  for i, t in enumerate(tags)]
        return (tagged | "Flatten" >> beam.Flatten()
                | "Group" >> beam.GroupByKey()
                | "Untag" >> beam.Map(_untag, tags))
