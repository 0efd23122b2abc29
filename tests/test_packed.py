"""beam_pipelines/packed.py: the bundle-local pre-grouping in front of a shuffle."""

from beam_pipelines.packed import KeyedBatcher


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
