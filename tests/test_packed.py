"""beam_pipelines/packed.py: the packing of values and the bundle-local pre-grouping in front
of a shuffle."""

import datetime
import decimal

import pytest

from beam_pipelines.packed import KeyedBatcher, pack, unpack


def test_values_are_held_by_key_until_flush():
    batcher = KeyedBatcher(max_bytes=1 << 20)
    # Worked by hand: nothing reaches the budget, so add() hands out nothing and flush()
    # gives each key its values in arrival order, once.
    assert batcher.add("a", b"x") == []
    assert batcher.add("b", b"yy") == []
    assert batcher.add("a", b"zzz") == []
    assert batcher.flush() == [("a", [b"x", b"zzz"]), ("b", [b"yy"])]
    assert batcher.flush() == []


def test_the_byte_budget_hands_out_everything_held():
    batcher = KeyedBatcher(max_bytes=3)
    # 1 byte held: below the budget. 1 + 2 = 3 bytes: everything held leaves, the batcher is
    # empty again. 3 bytes in one value: leaves at once.
    assert batcher.add("a", b"x") == []
    assert batcher.add("b", b"yy") == [("a", [b"x"]), ("b", [b"yy"])]
    assert batcher.add("a", b"zzz") == [("a", [b"zzz"])]
    assert batcher.flush() == []


@pytest.mark.parametrize("value", [
    ("item:i1", "item", "u1", "d0", 1700000000, 1, {"user_id": "u1", "n": 1.5}, None),
    ("u1", ["item:i1", "[PAD]"], ["item", "[PAD]"], 2, 1.0, -1, True),
    {"profile": {"age": "25-34"}, "_row": {"a": "b"}},
    datetime.datetime(2024, 1, 2, 3, 4, 5),  # marshal refuses it: the Beam coder takes it
    ("x", decimal.Decimal("1.25")),
])
def test_pack_round_trips(value):
    data = pack(value)
    assert isinstance(data, bytes) and unpack(data) == value
    # The tag byte: marshal for primitives, Beam's coder for what marshal cannot serialize.
    primitive = not isinstance(value, datetime.datetime) and not (
        isinstance(value, tuple) and any(isinstance(v, decimal.Decimal) for v in value))
    assert data[:1] == (b"m" if primitive else b"b")
