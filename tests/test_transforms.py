"""Pure functions of the link, with expected values worked out by hand."""

from __future__ import annotations

import pytest

from beam_pipelines import transforms
from tfrrl.data import schema
from tfrrl.data.link_spec import DatasetSpec

SPEC = DatasetSpec.synthetic_default()


def _imp(user, key, ts, click=1, domain="d0", category="c"):
    entity_type, entity_id = key.split(":")
    return {"user_id": user, "entity_type": entity_type, "entity_id": entity_id,
            "domain": domain, "timestamp": ts, "click": click, "key": key,
            "entity_category": category}


def _assemble(imps, label="impression", L=3, cutoff=None, profile=None, require=False):
    return transforms.assemble_user(
        "u1", profile, imps, require_profile=require, label=label,
        split=transforms.SplitRule(cutoff=cutoff), sequence_length=L)


def test_sequence_holds_only_exposures_strictly_before():
    # t: a@10, b@20, c@20, d@30 → seq(a)=[], seq(b)=seq(c)=[a], seq(d)=[a,b,c]
    imps = [_imp("u1", "item:a", 10), _imp("u1", "item:b", 20), _imp("u1", "item:c", 20),
            _imp("u1", "item:d", 30)]
    out = _assemble(imps, L=3)
    seqs = {ex["entity_id"]: ex["seq_entity_id"] for _, ex in out.examples}
    assert seqs["item:a"] == ["", "", ""]
    assert seqs["item:b"] == ["item:a", "", ""]
    assert seqs["item:c"] == ["item:a", "", ""]
    assert seqs["item:d"] == ["item:a", "item:b", "item:c"]


def test_sequence_keeps_most_recent_L():
    imps = [_imp("u1", f"item:{i}", 10 * i) for i in range(1, 6)]
    out = _assemble(imps, L=2)
    last = [ex for _, ex in out.examples if ex["entity_id"] == "item:5"][0]
    assert last["seq_entity_id"] == ["item:3", "item:4"]
    assert last["seq_length"] == 2


def test_duplicates_dead_lettered_and_click_rule_filters_but_keeps_exposure():
    imps = [_imp("u1", "item:a", 10, click=0), _imp("u1", "item:b", 20),
            _imp("u1", "item:b", 20)]
    out = _assemble(imps, label="click")
    assert [r for r, _ in out.dead] == ["duplicate_row"]
    assert [r for r, _ in out.filtered] == ["not_clicked"]
    (split, ex), = out.examples
    assert ex["entity_id"] == "item:b" and ex["seq_entity_id"][0] == "item:a"


def test_unknown_user_when_profiles_required():
    out = _assemble([_imp("u1", "item:a", 10)], require=True)
    assert [r for r, _ in out.dead] == ["unknown_user"] and not out.examples


def test_time_split_at_cutoff():
    imps = [_imp("u1", "item:a", 10), _imp("u1", "item:b", 20)]
    out = _assemble(imps, cutoff=20)
    assert [s for s, _ in out.examples] == ["train", "eval"]


@pytest.mark.parametrize("n, expected", [(0, 0), (1, 0), (2, 1), (14, 1), (15, 2), (100, 10)])
def test_per_user_eval_count(n, expected):
    # round(n · 0.1) halves up, at least 1 from n = 2: 14 · 0.1 = 1.4 → 1, 15 · 0.1 = 1.5 → 2.
    assert transforms.SplitRule(cutoff=None, per_user=True).per_user_eval_count(n) == expected


def test_per_user_split_takes_each_users_last_exposures():
    # eval_fraction 0.25 over 8 timed exposures → round(2.0) = 2: the last two by time (g@70,
    # h@80) are EVAL; with label "click" the non-clicked f@60 is filtered but still counts as
    # an exposure, so it is not among the last two. The cutoff is ignored (None here).
    imps = [_imp("u1", f"item:{e}", 10 * (i + 1), click=int(e != "f"))
            for i, e in enumerate("abcdefgh")]
    out = transforms.assemble_user(
        "u1", None, list(reversed(imps)), require_profile=False, label="click",
        split=transforms.SplitRule(cutoff=None, eval_fraction=0.25, per_user=True),
        sequence_length=3)
    splits = {ex["entity_id"].split(":")[1]: split for split, ex in out.examples}
    assert splits == {"a": "train", "b": "train", "c": "train", "d": "train", "e": "train",
                      "g": "eval", "h": "eval"}
    # The sequences are the time rule's: h sees the 3 exposures before it, f included.
    h = next(ex for _, ex in out.examples if ex["entity_id"] == "item:h")
    assert h["seq_entity_id"] == ["item:e", "item:f", "item:g"]


def test_per_user_split_differs_from_a_global_cutoff():
    # Two users on different clocks: a global cutoff at 25 puts all of u1 (t 10, 20) in TRAIN
    # and all of u2 (t 30, 40) in EVAL; the per-user split gives each its last row.
    def splits(rule, user, ts):
        out = transforms.assemble_user(
            user, None, [_imp(user, f"item:{t}", t) for t in ts], require_profile=False,
            label="impression", split=rule, sequence_length=2)
        return [s for s, _ in out.examples]

    per_user = transforms.SplitRule(cutoff=None, eval_fraction=0.1, per_user=True)
    assert splits(per_user, "u1", (10, 20)) == ["train", "eval"]
    assert splits(per_user, "u2", (30, 40)) == ["train", "eval"]
    glob = transforms.SplitRule(cutoff=25)
    assert splits(glob, "u1", (10, 20)) == ["train", "train"]
    assert splits(glob, "u2", (30, 40)) == ["eval", "eval"]


def test_random_split_is_seeded():
    rule = transforms.SplitRule(cutoff=None, eval_fraction=0.3, seed=7)
    imps = [_imp("u1", f"item:{i}", None) for i in range(2000)]
    splits = [rule.assign(i, transforms.impression_fingerprint(i)) for i in imps]
    again = [rule.assign(i, transforms.impression_fingerprint(i)) for i in imps]
    assert splits == again
    assert 0.25 < splits.count("eval") / len(splits) < 0.35


def _untimed(imps, seed, eval_fraction, L, label="impression"):
    return transforms.assemble_user(
        "u1", None, imps, require_profile=False, label=label,
        split=transforms.SplitRule(cutoff=None, eval_fraction=eval_fraction, seed=seed),
        sequence_length=L)


def _by_entity(out):
    return {ex["entity_id"]: (split, ex["seq_entity_id"], ex["seq_length"])
            for split, ex in out.examples}


def _history_order(imps, seed):
    fps = {imp["key"]: transforms.impression_fingerprint(imp) for imp in imps}
    return sorted(fps, key=lambda key: transforms.history_rank(seed, fps[key]))


TOY_USER = [_imp("u1", f"item:{e}", None) for e in "abcd"]  # no timestamps


def test_untimed_history_is_the_other_train_exposures():
    # Seed 0, eval_fraction 0.25: the split's blake2b puts c in EVAL, a, b, d in TRAIN (pinned
    # first), and history_rank orders the TRAIN rows b < a < d. By hand, L = 3:
    #   a → [b, d], b → [a, d], d → [b, a]  (the others, in rank order; never itself);
    #   c (EVAL) → [b, a, d] (every TRAIN exposure); the snapshot = c's history; c never appears.
    out = _untimed(TOY_USER, seed=0, eval_fraction=0.25, L=3)
    assert [k for k in _history_order(TOY_USER, 0) if k != "item:c"] == [
        "item:b", "item:a", "item:d"]
    pad = schema.PAD_TOKEN
    assert _by_entity(out) == {
        "item:a": ("train", ["item:b", "item:d", pad], 2),
        "item:b": ("train", ["item:a", "item:d", pad], 2),
        "item:d": ("train", ["item:b", "item:a", pad], 2),
        "item:c": ("eval", ["item:b", "item:a", "item:d"], 3),
    }
    assert out.snapshot["seq_entity_id"] == ["item:b", "item:a", "item:d"]
    assert out.snapshot["seq_length"] == 3
    assert out.snapshot["seq_category"] == ["c", "c", "c"]
    assert out.snapshot["seq_entity_type"] == ["item"] * 3
    # Deterministic: the same values with the rows in another order, and on a rerun.
    again = _untimed(list(reversed(TOY_USER)), seed=0, eval_fraction=0.25, L=3)
    assert _by_entity(again) == _by_entity(out) and again.snapshot == out.snapshot


def test_untimed_history_truncates_to_the_first_ranked():
    # The same toy user, L = 2: each keeps the first 2 of the others in rank order b < a < d:
    #   a → [b, d], b → [a, d], d → [b, a]; c (EVAL) and the snapshot → [b, a] (d dropped).
    out = _untimed(TOY_USER, seed=0, eval_fraction=0.25, L=2)
    assert _by_entity(out) == {
        "item:a": ("train", ["item:b", "item:d"], 2),
        "item:b": ("train", ["item:a", "item:d"], 2),
        "item:d": ("train", ["item:b", "item:a"], 2),
        "item:c": ("eval", ["item:b", "item:a"], 2),
    }
    assert out.snapshot["seq_entity_id"] == ["item:b", "item:a"]


def test_untimed_history_keeps_unclicked_train_exposures_and_no_eval_row():
    # Label "click", seed 18, eval_fraction 0.5: TRAIN = a (clicked), b (not clicked);
    # EVAL = c (clicked), d (not clicked) (pinned below); rank a < b. Examples are a and c.
    # By hand: a → [b] (an exposure, like the timed path's); c → [a, b]; d is in no sequence.
    imps = [_imp("u1", "item:a", None), _imp("u1", "item:b", None, click=0),
            _imp("u1", "item:c", None), _imp("u1", "item:d", None, click=0)]
    rule = transforms.SplitRule(cutoff=None, eval_fraction=0.5, seed=18)
    assert [rule.assign(i, transforms.impression_fingerprint(i)) for i in imps] == [
        "train", "train", "eval", "eval"]
    assert _history_order(imps, 18).index("item:a") < _history_order(imps, 18).index("item:b")
    out = _untimed(imps, seed=18, eval_fraction=0.5, L=3, label="click")
    pad = schema.PAD_TOKEN
    assert _by_entity(out) == {"item:a": ("train", ["item:b", pad, pad], 1),
                               "item:c": ("eval", ["item:a", "item:b", pad], 2)}
    assert [r for r, _ in out.filtered] == ["not_clicked", "not_clicked"]
    assert out.snapshot["seq_entity_id"] == ["item:a", "item:b", pad]


def test_untimed_history_never_holds_an_eval_entity_or_the_example_itself():
    # 40 users × 12 untimed rows on distinct entities, L = 5: every sequence is a subset of the
    # user's TRAIN entities minus the example's own, of size min(L, #TRAIN - own).
    L = 5
    for user in range(40):
        imps = [_imp(f"u{user}", f"item:{user}_{j}", None) for j in range(12)]
        out = _untimed(imps, seed=3, eval_fraction=0.3, L=L)
        train = {ex["entity_id"] for s, ex in out.examples if s == "train"}
        for split, ex in out.examples:
            seq = [e for e in ex["seq_entity_id"] if e != schema.PAD_TOKEN]
            own = {ex["entity_id"]} if split == "train" else set()
            assert set(seq) <= train - own and len(set(seq)) == len(seq)
            assert len(seq) == ex["seq_length"] == min(L, len(train - own))
        snap = [e for e in out.snapshot["seq_entity_id"] if e != schema.PAD_TOKEN]
        assert set(snap) <= train and len(snap) == min(L, len(train))


def test_mixed_timed_and_untimed_rows_of_one_user():
    # Timed rows keep the timed rule (untimed rows sort first, as timestamp -1): a@10 → [x]
    # (x counts as before every timestamp), b@20 → [x, a]. The untimed x takes the other TRAIN
    # exposures (cutoff 15: a is TRAIN, b EVAL; x random → TRAIN with eval_fraction 0) → [a].
    # The snapshot: the last L timestamped exposures → [a, b].
    imps = [_imp("u1", "item:a", 10), _imp("u1", "item:b", 20), _imp("u1", "item:x", None)]
    out = transforms.assemble_user(
        "u1", None, imps, require_profile=False, label="impression",
        split=transforms.SplitRule(cutoff=15, eval_fraction=0.0), sequence_length=3)
    pad = schema.PAD_TOKEN
    assert _by_entity(out) == {"item:x": ("train", ["item:a", pad, pad], 1),
                               "item:a": ("train", ["item:x", pad, pad], 1),
                               "item:b": ("eval", ["item:x", "item:a", pad], 2)}
    assert out.snapshot["seq_entity_id"] == ["item:a", "item:b", pad]


def test_linked_entity_inherits_product_fields_only_where_missing():
    video = transforms.normalize_entity(
        {"entity_id": "v1", "linked_item": "i2", "author": "a1", "duration": "30"}, "video",
        SPEC.entity_types["video"])
    assert video["_link"] == "item:i2"
    item = transforms.normalize_entity(
        {"entity_id": "i2", "category": "c2", "brand": "b2", "shop": "s1", "price": "3.5"},
        "item", SPEC.entity_types["item"])
    merged = transforms.inherit_linked(video, item)
    assert merged["entity_category"] == "c2" and merged["entity_brand"] == "b2"
    assert merged["entity_price"] == 3.5 and merged["entity_creator"] == "a1"
    assert merged["entity_duration"] == 30.0 and merged["entity_shop_level"] == schema.DEFAULT_TOKEN
    assert "_link" not in merged


def test_shop_gets_explicit_defaults_for_item_only_fields():
    shop = transforms.normalize_entity(
        {"entity_id": "s1", "main_category": "c1", "shop_level": "3"}, "shop",
        SPEC.entity_types["shop"])
    assert shop["entity_category"] == "c1" and shop["entity_shop_level"] == "3"
    assert shop["entity_shop"] == "s1"
    assert shop["entity_brand"] == schema.DEFAULT_TOKEN
    assert shop["entity_price"] == schema.NUMERIC_DEFAULT


@pytest.mark.parametrize("row, reason", [
    ({"user_id": "u", "entity_id": "i", "entity_type": "item", "domain": "d", "timestamp": "x",
      "click": "1"}, "bad_number"),
    ({"user_id": "u", "entity_id": "i", "entity_type": "nope", "domain": "d", "timestamp": "1",
      "click": "1"}, "unknown_entity_type"),
    ({"user_id": "u", "entity_id": "i", "entity_type": "item", "timestamp": "1", "click": "1"},
     "missing_column"),
    ({"user_id": "", "entity_id": "i", "entity_type": "item", "domain": "d", "timestamp": "1",
      "click": "1"}, "missing_value"),
    ({"user_id": "u", "entity_id": "i", "entity_type": "item", "domain": "d", "timestamp": "1",
      "click": "2"}, "bad_number"),
    ({"user_id": "u", "entity_id": "i", "entity_type": "item", "domain": "d", "timestamp": "",
      "click": "1"}, "missing_value"),
])
def test_bad_impressions_raise_with_reason(row, reason):
    with pytest.raises(transforms.RowError) as e:
        transforms.parse_impression(row, SPEC)
    assert e.value.reason == reason


@pytest.mark.parametrize("line, reason", [
    (b"", "empty_line"), (b"   ", "empty_line"), (b"\xff\xfe,a,b", "bad_encoding"),
    (b"a,b", "missing_column"), (b"a,b,c,d", "missing_column"),
])
def test_bad_csv_lines(line, reason):
    with pytest.raises(transforms.RowError) as e:
        transforms.parse_delimited_line(line, ["x", "y", "z"], ",")
    assert e.value.reason == reason


def test_csv_line_with_quotes():
    assert transforms.parse_delimited_line(b'1,"a, b",3', ["x", "y", "z"], ",") == {
        "x": "1", "y": "a, b", "z": "3"}


def test_sampling_probability_worked_example():
    # counts {a: 3, b: 1}, corpus {a, b, c}, smoothing 1 → 4/7, 2/7, 1/7.
    q = [transforms.sampling_probability(c, 4, 3) for c in (3, 1, 0)]
    assert q == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert sum(q) == pytest.approx(1.0)


def test_vocabulary_min_frequency_and_order():
    counts = [("x", 5), ("y", 1), ("z", 5), ("w", 2), (schema.DEFAULT_TOKEN, 9)]
    # default first, then by count desc, ties by token; y (1 < 2) dropped → OOV.
    assert transforms.build_vocabulary(counts, 2) == [schema.DEFAULT_TOKEN, "x", "z", "w"]


def test_encode_decode_round_trip():
    ex = {"user_id": "u1", "seq_entity_id": ["item:a", "", ""], "seq_entity_type": ["item", "", ""],
          "seq_category": ["c", "", ""], "seq_length": 1, "entity_id": "item:b",
          "entity_type": "item", "domain": "d0", "entity_price": 2.5, "timestamp": 7,
          "sampling_prob": 0.25}
    back = schema.decode(schema.encode_example(ex, sequence_length=3))
    assert back["seq_entity_id"] == ["item:a", "", ""]
    assert back["entity_price"] == 2.5 and back["timestamp"] == 7
    assert back["user_gender"] == schema.DEFAULT_TOKEN  # explicit default
    with pytest.raises(ValueError):
        schema.encode_example(dict(ex, seq_entity_id=["a"]), sequence_length=3)


def test_encoding_is_byte_identical_across_processes():
    """The feature map's serialized order must not depend on the process (protobuf map order
    is per-process hash order unless serialization is deterministic): the link orders its
    output by a hash of these bytes."""
    import os  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel

    code = ("import hashlib; from tfrrl.data import schema; "
            "print(hashlib.sha256(schema.encode_example({'user_id': 'u1', 'entity_id': 'item:b',"
            " 'entity_type': 'item', 'domain': 'd0', 'seq_entity_id': ['item:a', '', ''],"
            " 'seq_entity_type': ['item', '', ''], 'seq_category': ['c', '', '']},"
            " sequence_length=3)).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout
               for seed in (1, 2, 3)}
    assert len(digests) == 1, digests


@pytest.mark.parametrize("delimiter", [",", "\t"])
def test_delimited_lines_parse_as_csv_reader_parses_them(delimiter):
    """The split fast path of parse_delimited_line gives csv.reader's fields (or its error) on
    every line: random lines over an alphabet with the delimiters, quotes, spaces, backslashes,
    a BOM and line breaks."""
    import csv
    import random

    rng = random.Random(0)
    alphabet = ['a', 'b', 'c', 'd', ' ', ',', '\t', '"', '\\', "'", '\r', '\n', '\x00', 'é',
                '\ufeff']
    header = [f"c{i}" for i in range(4)]
    checked = 0
    for _ in range(3000):
        if rng.random() < 0.5:  # four fields: mostly well-formed rows
            text = delimiter.join("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 3)))
                                  for _ in range(4))
        else:
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        try:
            got = transforms.parse_delimited_line(text.encode("utf-8"), header, delimiter)
        except transforms.RowError as e:
            got = e.reason
        body = text[1:] if text.startswith("\ufeff") else text
        if not body.strip():
            expected = "empty_line"
        else:
            try:
                fields = next(csv.reader([body], delimiter=delimiter, strict=True))
                expected = (dict(zip(header, fields)) if len(fields) == len(header)
                            else "missing_column")
            except csv.Error:
                expected = "missing_column"
        assert got == expected, repr(text)
        checked += isinstance(got, dict)
    assert checked > 300  # the fast path produced rows, not only errors


@pytest.mark.parametrize("timed", [True, False])
def test_sequence_encoder_writes_the_entries_of_the_lists(timed):
    # The same user assembled twice: with a sequence encoder each example holds the E_seq
    # entries that encoding the lists of the plain assembly gives (timed windows, including a
    # tie at t = 30, and untimed histories).
    from beam_pipelines import encoding  # pylint: disable=import-outside-toplevel

    ts = [10, 20, 30, 30, 40, 50] if timed else [None] * 6
    imps = [_imp("u1", f"item:{e}", t, category=f"c{i % 2}") for i, (e, t) in
            enumerate(zip("abcdef", ts))]
    plain = _assemble(imps, L=3)
    encoder = encoding.SequenceEncoder(3)
    encoded = transforms.assemble_user(
        "u1", None, imps, require_profile=False, label="impression",
        split=transforms.SplitRule(cutoff=None), sequence_length=3, sequence_encoder=encoder)
    assert len(plain.examples) == len(encoded.examples) == 6
    for (s1, ex1), (s2, ex2) in zip(plain.examples, encoded.examples):
        assert s1 == s2
        assert ex2[encoding.SEQUENCE_ENTRIES] == encoder.entries(ex1)
        assert {k: v for k, v in ex1.items() if not k.startswith("seq_")} == {
            k: v for k, v in ex2.items() if k != encoding.SEQUENCE_ENTRIES}


@pytest.mark.parametrize("header, line", [
    (["user_id", "entity_id", "click"], "u1,i9,1"),
    # A repeated column name: the parser's dict keeps the first place and the last value.
    (["user_id", "x", "x", "click"], "u1,a,b,0"),
    # An underscore column is not shown in a dead letter, carried or not.
    (["user_id", "_internal", "click"], "u1,secret,1"),
])
def test_a_carried_delimited_row_restores_to_its_dead_letter_form(header, line):
    row = transforms.parse_delimited_line(line.encode(), header, ",")
    carried = transforms.carried_row(row, delimited=True)
    assert carried == tuple(row.values())  # the values alone travel
    assert transforms.restored_row(carried, header) == transforms.dead_letter_row(row)


def test_other_rows_travel_in_dead_letter_form():
    row = {"user_id": "u1", "when": 3, "_meta": "x"}  # a JSON or Parquet row
    carried = transforms.carried_row(row, delimited=False)
    assert carried == {"user_id": "u1", "when": 3}
    assert transforms.restored_row(carried, None) == carried
