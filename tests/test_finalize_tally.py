"""The per-bundle tally of Finalize (beam_pipelines/stages/finalize.py) counts what summing the
vocabulary tokens and split statistics example by example counts."""

from __future__ import annotations

import collections

from beam_pipelines import transforms
from beam_pipelines.stages.finalize import BundleTally
from tfrrl.data import schema

D = schema.DEFAULT_TOKEN


def _example(user, gender, entity, category, domain):
    example = {name: D for name, _ in transforms.vocabulary_fields_by_source()[0]
               + transforms.vocabulary_fields_by_source()[1]}
    example.update(user_id=user, user_gender=gender, entity_id=entity, entity_type="item",
                   entity_category=category, domain=domain)
    return example


EXAMPLES = [
    ("train", _example("u1", "f", "item:1", "shoes", "d1")),
    ("train", _example("u1", "f", "item:1", "shoes", "d2")),
    ("train", _example("u2", D, "item:2", D, "d1")),
    ("eval", _example("u3", "m", "item:3", "hats", "d1")),
]


def _tally(examples):
    """Each example handed over as Finalize does: its carried values and its entity's part."""
    tally = BundleTally()
    for split_name, example in examples:
        entity = transforms.entity_part(example)
        carried = {k: v for k, v in example.items() if k not in entity}
        tally.add(split_name, carried, entity)
    return tally


def test_vocabulary_equals_the_token_by_token_sum():
    tally = _tally(EXAMPLES)
    expected = collections.Counter()
    for split_name, example in EXAMPLES:
        if split_name == "train":
            expected.update(transforms.vocabulary_tokens(example))
    assert tally.vocabulary() == expected
    # By hand: the 3 TRAIN examples give user_id u1 ×2, u2 ×1; gender f ×2 (u2's is the
    # default: not counted); entity item:1 ×2, item:2 ×1; type item ×3; category shoes ×2;
    # domain d1 ×2, d2 ×1. The EVAL example counts nothing.
    assert expected[("user_id", "u1")] == 2 and expected[("gender", "f")] == 2
    assert expected[("entity_id", "item:2")] == 1 and expected[("entity_type", "item")] == 3
    assert expected[("category", "shoes")] == 2 and expected[("domain", "d1")] == 2
    assert ("user_id", "u3") not in expected and ("category", D) not in expected


def test_split_statistics():
    tally = _tally(EXAMPLES)
    stats = tally.stats()
    assert stats[("train", "total", "")] == 3 and stats[("eval", "total", "")] == 1
    assert stats[("train", "domain", "d1")] == 2 and stats[("train", "domain", "d2")] == 1
    assert stats[("train", "entity_type", "item")] == 3
    assert tally.written("train") == 3 and tally.written("eval") == 1
