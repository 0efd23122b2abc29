"""tf.train.Example bytes written straight in the protobuf wire format.

``schema.encode_example`` builds a protobuf object per record, which is most of the link's
per-example cost. A record's bytes are fully determined by its values: the deterministic
serialization of

    Example  {features = 1: Features}
    Features {feature  = 1: map<string, Feature>}      (entries in the deterministic key order)
    Feature  {bytes_list = 1 | float_list = 2 | int64_list = 3}
    *List    {value    = 1: repeated bytes | packed float | packed int64}

(``tensorflow/core/example/{example,feature}.proto``), so :class:`RecordEncoder` precomputes
each feature's key bytes once and writes the values with ``struct`` and varints. The output is
byte-for-byte ``schema.encode_example`` / ``schema.encode_entity`` (``tests/test_encoding.py``);
any value the fast path does not take as is (a missing value, a float outside float32, an
integer outside int64, a sequence of the wrong length) goes through the schema encoder itself,
so errors and edge cases are the schema's.
"""

from __future__ import annotations

import functools
import math
import struct
import types
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

from tfrrl.data import schema

_STRING, _FLOAT, _INT64 = 0, 1, 2
_KIND = {"string": _STRING, "float32": _FLOAT, "int64": _INT64}
# Field tags (field number << 3 | wire type 2) of the Feature oneof.
_FEATURE_TAG = {_STRING: b"\x0a", _FLOAT: b"\x12", _INT64: b"\x1a"}
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_PER_RECORD, _PRE_ENCODED = -2, -1  # plan codes of RecordEncoder (see its __init__)
_NOTHING_PRE_ENCODED: Mapping[str, Sequence[str]] = types.MappingProxyType({})
# What the fast path raises for a value it does not take as is (then the schema's encoder).
FAST_PATH_ERRORS = (OverflowError, ValueError, TypeError, struct.error)


def _varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative integer (< 2**64)."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL_VARINT = tuple(_varint(n) for n in range(1 << 14))


def _len_prefix(n: int) -> bytes:
    return _SMALL_VARINT[n] if n < (1 << 14) else _varint(n)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return tag + _len_prefix(len(payload)) + payload


_TOKEN_FIELDS: Dict[str, bytes] = {}  # str token → its encoded ``value`` field (bounded)


def _token_field(s: Any) -> bytes:
    b = s.encode("utf-8") if isinstance(s, str) else bytes(s)
    field = b"\x0a" + _len_prefix(len(b)) + b
    if type(s) is str:  # pylint: disable=unidiomatic-typecheck
        if len(_TOKEN_FIELDS) >= RecordEncoder.CACHE_ENTRIES:
            _TOKEN_FIELDS.clear()
        _TOKEN_FIELDS[s] = field
    return field


def _string_list(values: Sequence[Any]) -> bytes:
    get = _TOKEN_FIELDS.get
    return b"".join([(get(s) if type(s) is str else None) or _token_field(s)  # noqa: E721
                     for s in values])


def _float_list(values: Sequence[Any]) -> bytes:
    payload = struct.pack(f"<{len(values)}f", *[float(v) for v in values])
    return b"\x0a" + _len_prefix(len(payload)) + payload


def _int64_list(values: Sequence[Any]) -> bytes:
    parts = []
    for v in values:
        v = int(v)
        if not _INT64_MIN <= v <= _INT64_MAX:
            raise OverflowError(v)
        parts.append(_varint(v & 0xFFFFFFFFFFFFFFFF))
    payload = b"".join(parts)
    return b"\x0a" + _len_prefix(len(payload)) + payload


def _compare_map_keys(a: bytes, b: bytes) -> int:
    """The order in which protobuf's deterministic serialization (upb) writes string map keys:
    bytewise on the common prefix; when one key is a prefix of the other, the LONGER one first
    (``entity_shop_level`` before ``entity_shop``)."""
    common = min(len(a), len(b))
    if a[:common] != b[:common]:
        return -1 if a[:common] < b[:common] else 1
    return (len(a) < len(b)) - (len(a) > len(b))


_map_key_order = functools.cmp_to_key(
    lambda x, y: _compare_map_keys(x.encode("utf-8"), y.encode("utf-8")))


_LIST_WRITER = {_STRING: _string_list, _FLOAT: _float_list, _INT64: _int64_list}


def _same_bytes_when_equal(kind: int, v: Any) -> bool:
    """Whether every scalar equal to ``v`` (and of its type) encodes to the same bytes, so the
    entry can be cached under ``v``. Not so for 0.0 and -0.0 (equal, other float bits), nor for
    a list value (unhashable), nor for a non-string in a string feature (bytes() of it)."""
    if isinstance(v, (list, tuple)):
        return False
    if kind == _FLOAT:
        return v != 0
    return kind == _INT64 or type(v) is str  # pylint: disable=unidiomatic-typecheck


def _map_entry(key_field: bytes, kind: int, length: int, v: Any) -> bytes:
    """One ``feature`` map entry: {key = 1: name, value = 2: Feature}."""
    seq = v if isinstance(v, (list, tuple)) else (v,)
    if length and len(seq) != length:
        raise ValueError("wrong sequence length")
    value_list = _LIST_WRITER[kind](seq)
    feature = _FEATURE_TAG[kind] + _len_prefix(len(value_list)) + value_list
    body = key_field + b"\x12" + _len_prefix(len(feature)) + feature
    return b"\x0a" + _len_prefix(len(body)) + body


class RecordEncoder:
    """Encodes value mappings as the serialized tf.train.Example of ``features``, the bytes
    ``fallback`` (the schema's encoder of the same features) gives.

    Most scalar values repeat from record to record (a user's profile in each of their
    examples, an entity's features in each of its impressions), so the encoded map entry of a
    (feature, value) is kept in a bounded cache: a repeated value costs one dictionary lookup.
    Sequences seldom repeat whole; their tokens' encoded fields are cached instead.
    """

    CACHE_ENTRIES = 200_000  # cleared when full: memory stays bounded, hits stay likely

    def __init__(self, features: Sequence[schema.Feature],
                 fallback: Callable[[Mapping[str, Any]], bytes],
                 pre_encoded: Mapping[str, Sequence[str]] = _NOTHING_PRE_ENCODED):
        """``pre_encoded``: groups of features whose map entries arrive already encoded,
        together, as the bytes value of one carrier name (:data:`SEQUENCE_ENTRIES`:
        :class:`SequenceEncoder`; :data:`ENTITY_ENTRIES`: :func:`entity_entries`); the
        features of a group must be adjacent in the map's key order."""
        ordered = sorted(features, key=lambda f: _map_key_order(f.name))
        carrier_of = {name: carrier for carrier, names in pre_encoded.items() for name in names}
        # (name, default, length, kind, key field). ``length`` > 0: a sequence; 0: a scalar
        # whose entry is cached; _PER_RECORD: a scalar that seldom repeats (the meta group:
        # timestamps), encoded without the cache so it cannot crowd the repeating values out;
        # _PRE_ENCODED: a pre-encoded group, appended as is. The non-zero codes are checked
        # in the sequence branch: no cost per cached scalar.
        self._plan: List[Tuple[str, Any, int, int, bytes]] = []
        for f in ordered:
            carrier = carrier_of.get(f.name)
            if carrier is None:
                length = f.length if f.is_sequence else _PER_RECORD if f.group == "meta" else 0
                self._plan.append((f.name, f.default, length, _KIND[f.dtype],
                                   _field(b"\x0a", f.name.encode("utf-8"))))
            elif not self._plan or self._plan[-1][0] != carrier:
                self._plan.append((carrier, None, _PRE_ENCODED, _STRING, b""))
        for carrier, names in pre_encoded.items():
            if sum(name == carrier for name, *_ in self._plan) != 1:
                raise ValueError(f"pre-encoded features {sorted(names)} are not adjacent in "
                                 "the map's key order")
        self._fallback = fallback
        self._cache: Dict[Tuple[str, type, Any], bytes] = {}
        # 0.0 and -0.0 are equal keys with other bytes: float zeros are cached by sign apart
        # (the default of a numeric field an entity type lacks: frequent).
        self._zeros: Dict[Tuple[str, float], bytes] = {}

    def __call__(self, values: Mapping[str, Any]) -> bytes:
        try:
            return self._encode(values)
        except FAST_PATH_ERRORS:
            # The schema's bytes, or its error (pre-encoded entries decoded back first).
            return self._fallback(_with_decoded_entries(values))

    def entries(self, values: Mapping[str, Any]) -> bytes:
        """The record's map entries without the outer frame (what a record of more features
        takes as a pre-encoded group); raises where :meth:`__call__` would fall back."""
        return self._entries(values)

    def _encode(self, values: Mapping[str, Any]) -> bytes:
        features = self._entries(values)
        return b"\x0a" + _len_prefix(len(features)) + features

    def _entries(self, values: Mapping[str, Any]) -> bytes:
        entries = []
        get = values.get
        cache = self._cache
        for name, default, length, kind, key_field in self._plan:
            v = get(name, default)
            if v is None:
                raise ValueError(name)
            if length:  # a sequence: seldom repeated whole, so its tokens are cached instead
                if length == _PRE_ENCODED:
                    entries.append(v)
                else:
                    entries.append(_map_entry(key_field, kind, max(length, 0), v))
                continue
            ckey = (name, type(v), v)
            entry = cache.get(ckey)
            if entry is None:  # (a hit was stored under an equal key: same bytes)
                if kind == _FLOAT and type(v) is float and v == 0:  # noqa: E721
                    zkey = (name, math.copysign(1.0, v))
                    entry = self._zeros.get(zkey)
                    if entry is None:
                        entry = self._zeros[zkey] = _map_entry(key_field, kind, length, v)
                    entries.append(entry)
                    continue
                entry = _map_entry(key_field, kind, length, v)
                if _same_bytes_when_equal(kind, v):
                    if len(cache) >= self.CACHE_ENTRIES:
                        cache.clear()
                    cache[ckey] = entry
            entries.append(entry)
        return b"".join(entries)


# The carried values holding pre-encoded groups of an example's map entries: the E_seq features
# (SequenceEncoder, per user) and the target entity's features (entity_entries, per entity).
SEQUENCE_ENTRIES = "seq_entries"
ENTITY_ENTRIES = "entity_entries"


def sequence_features(sequence_length: int) -> List[schema.Feature]:
    """The E_seq features of an example (Table I): the exposure sequences and their length."""
    return [f for f in schema.example_features(sequence_length) if f.group == "E_seq"]


def entity_block_features() -> List[schema.Feature]:
    """The target entity's features of an example that are the same in every example of the
    entity: E_aid, E_a, E_ac (adjacent in the key order, ``entity_*``). Not ``sampling_prob``,
    which sits apart in the key order."""
    return [f for f in schema.entity_features() if f.group in ("E_aid", "E_a", "E_ac")]


def _with_decoded_entries(values: Mapping[str, Any]) -> Mapping[str, Any]:
    """``values`` with its pre-encoded groups (:data:`SEQUENCE_ENTRIES`,
    :data:`ENTITY_ENTRIES`) decoded back into their features' values (the rare fallback to the
    schema's encoder needs them)."""
    carried = [c for c in (SEQUENCE_ENTRIES, ENTITY_ENTRIES) if isinstance(values.get(c), bytes)]
    if not carried:
        return values
    out = {k: v for k, v in values.items() if k not in carried}
    for carrier in carried:
        entries = values[carrier]
        out.update(schema.decode(b"\x0a" + _len_prefix(len(entries)) + entries))
    return out


class SequenceEncoder:
    """The E_seq map entries of examples (``seq_category``, ``seq_entity_id``,
    ``seq_entity_type``, ``seq_length``: adjacent in the key order), encoded where the user's
    exposures are, in the per-user assembly: the carried example then holds one bytes value
    instead of 3·L tokens, and :class:`RecordEncoder` (``pre_encoded``) appends it as is.

    A timed example's sequence is a window of its user's exposures (``transforms.
    assemble_user``), so :meth:`windows` encodes each exposure's tokens ONCE per user and cuts
    every example's entries out of the concatenation: a slice per feature instead of L token
    look-ups. The bytes are those of :meth:`entries` on the same lists (the
    ``tests/test_encoding.py`` property).
    """

    def __init__(self, sequence_length: int):
        self._L = sequence_length
        ordered = sorted(sequence_features(sequence_length),
                         key=lambda f: _map_key_order(f.name))
        self._plan = [(f.name, f.length if f.is_sequence else 0, _KIND[f.dtype],
                       _field(b"\x0a", f.name.encode("utf-8"))) for f in ordered]
        self._pad = _token_field(schema.PAD_TOKEN)
        # seq_length is the one scalar: its entry for every length 0..L, precomputed.
        self._lengths = {name: [_map_entry(key_field, kind, 0, n) for n in range(self._L + 1)]
                         for name, length, kind, key_field in self._plan if kind == _INT64}

    def entries(self, values: Mapping[str, Any]) -> bytes:
        """The E_seq map entries of one example's values (lists of L tokens + seq_length)."""
        return b"".join([_map_entry(key_field, kind, length, values[name])
                         for name, length, kind, key_field in self._plan])

    def windows(self, columns: Mapping[str, Sequence[str]]) -> Callable[[int, int], bytes]:
        """``columns``: each token feature → the user's exposures' tokens, in order. Returns
        ``window(lo, hi)``: the entries of the example whose sequence is exposures
        ``[lo, hi)`` (``hi - lo`` ≤ L), padded, with ``seq_length`` = hi - lo."""
        L, pad = self._L, self._pad
        steps = []
        for name, _, kind, key_field in self._plan:
            if kind == _INT64:
                steps.append((None, self._lengths[name], None))
                continue
            fields = [_string_list((token,)) for token in columns[name]]
            offsets = [0]
            for field in fields:
                offsets.append(offsets[-1] + len(field))
            steps.append((key_field, b"".join(fields), offsets))

        def window(lo: int, hi: int) -> bytes:
            n = hi - lo
            if not 0 <= n <= L:
                raise ValueError(f"a window of {n} exposures; the sequence length is {L}")
            padding = pad * (L - n)
            parts = []
            for key_field, blob, offsets in steps:
                if key_field is None:  # seq_length
                    parts.append(blob[n])
                    continue
                value_list = blob[offsets[lo]:offsets[hi]] + padding
                feature = b"\x0a" + _len_prefix(len(value_list)) + value_list
                body = key_field + b"\x12" + _len_prefix(len(feature)) + feature
                parts.append(b"\x0a" + _len_prefix(len(body)) + body)
            return b"".join(parts)

        return window


@functools.lru_cache(maxsize=None)
def example_encoder(sequence_length: int, pre_encoded_sequences: bool = False,
                    pre_encoded_entity: bool = False) -> RecordEncoder:
    """The encoder of ``schema.encode_example(values, sequence_length)``; with
    ``pre_encoded_sequences`` the E_seq features come as :data:`SEQUENCE_ENTRIES`
    (:class:`SequenceEncoder`), with ``pre_encoded_entity`` the target entity's block as
    :data:`ENTITY_ENTRIES` (:func:`entity_entries`)."""
    pre_encoded = {}
    if pre_encoded_sequences:
        pre_encoded[SEQUENCE_ENTRIES] = [f.name for f in sequence_features(sequence_length)]
    if pre_encoded_entity:
        pre_encoded[ENTITY_ENTRIES] = [f.name for f in entity_block_features()]
    return RecordEncoder(schema.example_features(sequence_length),
                         functools.partial(_encode_example, sequence_length=sequence_length),
                         pre_encoded)


@functools.lru_cache(maxsize=None)
def _entity_block_encoder() -> RecordEncoder:
    return RecordEncoder(entity_block_features(), schema.encode_entity)


def entity_entries(values: Mapping[str, Any]) -> bytes:
    """The :data:`ENTITY_ENTRIES` of an example of this entity: the map entries of
    :func:`entity_block_features` (``values``: the entity's features and ``entity_id``, as an
    example carries them). Raises :data:`FAST_PATH_ERRORS` for a value the fast path does not
    take: such an entity's examples are then encoded whole."""
    return _entity_block_encoder().entries(values)


@functools.lru_cache(maxsize=None)
def sequence_encoder(sequence_length: int) -> SequenceEncoder:
    return SequenceEncoder(sequence_length)


@functools.lru_cache(maxsize=None)
def entity_encoder() -> RecordEncoder:
    """The encoder of ``schema.encode_entity(values)``."""
    return RecordEncoder(schema.entity_record_features(), schema.encode_entity)


def _encode_example(values: Mapping[str, Any], sequence_length: int) -> bytes:
    return schema.encode_example(values, sequence_length)


def encode_entity(values: Mapping[str, Any]) -> bytes:
    """``schema.encode_entity(values)``, fast."""
    return entity_encoder()(values)


def encode_example(values: Mapping[str, Any],
                   sequence_length: int = schema.DEFAULT_SEQUENCE_LENGTH) -> bytes:
    """``schema.encode_example(values, sequence_length)``, fast."""
    return example_encoder(sequence_length)(values)
