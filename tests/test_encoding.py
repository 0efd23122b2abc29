"""beam_pipelines/encoding.py writes the bytes of the schema's tf.Example encoder."""

from __future__ import annotations

import numpy as np
import pytest

from beam_pipelines import encoding
from tfrrl.data import schema

L = 3


def _example(**overrides):
    values = {
        "user_id": "u1", "user_age_bucket": "18-24", "user_gender": "F", "user_city": "1",
        "user_occupation": schema.DEFAULT_TOKEN,
        "seq_entity_id": ["item:i1", "live:l1", ""], "seq_entity_type": ["item", "live", ""],
        "seq_category": ["c1", "c1", ""], "seq_length": 2,
        "entity_id": "video:v1", "entity_type": "video", "entity_category": "c2",
        "entity_brand": "b2", "entity_shop": "s1", "entity_shop_level": schema.DEFAULT_TOKEN,
        "entity_creator": "a1", "entity_price": 3.0, "entity_duration": 30.0,
        "sampling_prob": 0.125, "domain": "d0", "label": 1.0, "timestamp": 1_700_000_000,
    }
    values.update(overrides)
    return values


@pytest.mark.parametrize("overrides", [
    {},
    {"user_id": "ü-ß-用户", "entity_category": "カテゴリ"},  # multi-byte UTF-8
    {"entity_price": -0.0}, {"entity_price": 0.0},  # equal, other float bits
    {"entity_price": 1e-45}, {"entity_price": float("inf")},
    {"timestamp": -5}, {"timestamp": (1 << 63) - 1},  # negative: 10-byte varint
    {"seq_length": True}, {"seq_length": np.int64(2)},  # the schema's int() of them
    {"entity_price": "7.5"},  # the schema's float() of a string
    {"user_gender": b"raw-bytes"},
    {"seq_entity_id": ("item:i1", "live:l1", "")},  # tuple as well as list
    {"user_id": "x" * 20_000},  # a length prefix of 3 bytes
])
def test_same_bytes_as_the_schema_encoder(overrides):
    values = _example(**overrides)
    assert encoding.encode_example(values, L) == schema.encode_example(values, L)


def test_repeated_values_come_from_the_cache_with_the_right_bytes():
    # -0.0 == 0.0 and 1 == True hash alike: a cached entry must never be handed to the other.
    for price in (0.0, -0.0, 0.0, 2.5, -0.0):
        values = _example(entity_price=price)
        assert encoding.encode_example(values, L) == schema.encode_example(values, L)
    for length in (1, True, 1, np.int64(1)):
        values = _example(seq_length=length)
        assert encoding.encode_example(values, L) == schema.encode_example(values, L)


def test_map_entries_follow_the_deterministic_key_order():
    # Hand-checked against protobuf: a key that prefixes another comes AFTER it.
    names = ["entity_shop", "entity_shop_level", "entity_brand"]
    assert sorted(names, key=encoding._map_key_order) == [  # pylint: disable=protected-access
        "entity_brand", "entity_shop_level", "entity_shop"]


@pytest.mark.parametrize("overrides, error", [
    ({"entity_price": 1e40}, None),  # outside float32: the schema decides (falls back)
    ({"seq_entity_id": ["a", "b"]}, ValueError),  # wrong length
    ({"timestamp": 1 << 64}, ValueError),  # outside int64
    ({"user_id": None}, ValueError),  # no value and no default
])
def test_edge_cases_are_the_schemas(overrides, error):
    values = _example(**overrides)
    if error is None:
        assert encoding.encode_example(values, L) == schema.encode_example(values, L)
    else:
        with pytest.raises(error):
            schema.encode_example(values, L)
        with pytest.raises(error):
            encoding.encode_example(values, L)


def test_defaults_fill_missing_features_like_the_schema():
    values = _example()
    del values["user_occupation"], values["entity_duration"]
    assert encoding.encode_example(values, L) == schema.encode_example(values, L)


def test_entity_records():
    record = {"entity_id": "shop:s1", "entity_type": "shop", "entity_category": "c1",
              "entity_shop": "s1", "entity_shop_level": "3", "entity_price": 0.0,
              "sampling_prob": 1 / 17, "train_count": 4}
    assert encoding.encode_entity(record) == schema.encode_entity(record)
    assert schema.decode(encoding.encode_entity(record))["train_count"] == 4


SEQ_NAMES = ("seq_entity_id", "seq_entity_type", "seq_category", "seq_length")


def _pre_encoded(values, L=L):
    """``values`` with its E_seq features replaced by their SequenceEncoder entries."""
    out = {k: v for k, v in values.items() if k not in SEQ_NAMES}
    out[encoding.SEQUENCE_ENTRIES] = encoding.SequenceEncoder(L).entries(values)
    return out


@pytest.mark.parametrize("overrides", [
    {}, {"timestamp": -5}, {"user_id": "ü-ß-用户"},
    # A float outside float32 leaves the fast path: the fallback decodes the pre-encoded
    # entries back and the schema's encoder gives its bytes (inf) for the whole record.
    {"entity_price": 1e300},
])
def test_pre_encoded_sequences_give_the_same_record(overrides):
    values = _example(**overrides)
    encoder = encoding.example_encoder(L, pre_encoded_sequences=True)
    assert encoder(_pre_encoded(values)) == schema.encode_example(values, L)


ENTITY_NAMES = tuple(f.name for f in encoding.entity_block_features())


def _entity_pre_encoded(values):
    """``values`` with its E_seq features AND its entity block pre-encoded, as Finalize hands
    them over."""
    out = {k: v for k, v in _pre_encoded(values).items() if k not in ENTITY_NAMES}
    out[encoding.ENTITY_ENTRIES] = encoding.entity_entries(
        {k: values[k] for k in ENTITY_NAMES})
    return out


def test_the_entity_block_is_the_entity_id_and_its_features():
    # E_aid + E_a + E_ac: entity_id, type, the categorical and numeric features; not
    # sampling_prob (logq), which is per entity too but not adjacent in the key order.
    assert set(ENTITY_NAMES) == {
        "entity_id", "entity_type", "entity_category", "entity_brand", "entity_shop",
        "entity_shop_level", "entity_creator", "entity_price", "entity_duration"}


@pytest.mark.parametrize("overrides", [
    {}, {"entity_price": -0.0}, {"entity_category": "カテゴリ", "user_id": "ü"},
    {"entity_price": 1e300},  # the REST of the record leaves the fast path: decoded back
    {"timestamp": -5},
])
def test_a_pre_encoded_entity_block_gives_the_same_record(overrides):
    values = _example(**overrides)
    encoder = encoding.example_encoder(L, pre_encoded_sequences=True, pre_encoded_entity=True)
    if overrides.get("entity_price") == 1e300:
        # The block itself is refused (outside float32): Finalize encodes such an entity's
        # examples whole.
        with pytest.raises(encoding.FAST_PATH_ERRORS):
            encoding.entity_entries({k: values[k] for k in ENTITY_NAMES})
        return
    assert encoder(_entity_pre_encoded(values)) == schema.encode_example(values, L)


def test_fallback_decodes_both_pre_encoded_groups():
    # A timestamp beyond int64 makes the fast path fail after both blocks were taken as is:
    # the fallback decodes them back, and the schema's own error reaches the caller.
    values = _example(timestamp=1 << 64)
    encoder = encoding.example_encoder(L, pre_encoded_sequences=True, pre_encoded_entity=True)
    with pytest.raises(ValueError):
        encoder(_entity_pre_encoded(values))
    decoded = encoding._with_decoded_entries(  # pylint: disable=protected-access
        _entity_pre_encoded(_example()))
    assert decoded["entity_brand"] == "b2" and decoded["seq_length"] == 2
    assert decoded["entity_duration"] == 30.0 and encoding.ENTITY_ENTRIES not in decoded


def test_pre_encoded_fallback_keeps_the_schemas_error():
    values = _example(timestamp=1 << 64)  # outside int64: the schema raises
    with pytest.raises(ValueError):
        schema.encode_example(values, L)
    with pytest.raises(ValueError):
        encoding.example_encoder(L, pre_encoded_sequences=True)(_pre_encoded(values))


def test_windows_are_the_entries_of_the_padded_slices():
    # A user's 7 exposures; every window [lo, hi) of at most L = 4 tokens must give the bytes
    # of the lists columns[lo:hi] padded to L (what assemble_user writes without an encoder).
    rng = np.random.default_rng(0)
    n, seq_len = 7, 4
    tokens = ["item:i1", "live:ü", "video:v" + "9" * 300, "", "shop:s", "item:i1", "x"]
    columns = {name: [tokens[i] for i in rng.integers(0, len(tokens), n)]
               for name in ("seq_entity_id", "seq_entity_type", "seq_category")}
    encoder = encoding.SequenceEncoder(seq_len)
    window = encoder.windows(columns)
    for hi in range(n + 1):
        for lo in range(max(0, hi - seq_len), hi + 1):
            lists = {name: schema.pad_sequence(col[lo:hi], seq_len)
                     for name, col in columns.items()}
            assert window(lo, hi) == encoder.entries(dict(lists, seq_length=hi - lo)), (lo, hi)
    with pytest.raises(ValueError):
        window(0, seq_len + 1)


def test_pre_encoded_features_must_be_adjacent():
    features = schema.example_features(L)
    with pytest.raises(ValueError, match="adjacent"):
        encoding.RecordEncoder(features, schema.encode_example,
                               pre_encoded={"group": ("entity_brand", "timestamp")})
