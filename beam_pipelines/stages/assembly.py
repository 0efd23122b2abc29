"""Impressions × unified entities, then per user: profile join, dedupe, exposure sequences
strictly before each timestamp, the label rule and the split.

Both joins are impression-sized shuffles: they move packed tuples (``beam_pipelines/packed.py``),
and the per-user step carries only what the sequences need (entity key, type, category); the
target entity's features and Q(a) are attached at the end (``stages/finalize.py``).
"""

from __future__ import annotations

import collections
import json
from typing import List

import apache_beam as beam
from apache_beam import pvalue

from beam_pipelines import counters, packed, transforms
from beam_pipelines.config import PrepareConfig
from beam_pipelines.counters import IMPRESSIONS, USERS
from beam_pipelines.dead_letters import reject
from beam_pipelines.stages.impressions import KEY_INDEX, ROW_INDEX, USER_INDEX
from beam_pipelines.tags import CORPUS, DEAD, FILTERED, TRAIN_COUNT, USER_SNAPSHOT
from tfrrl.data import link_spec, schema
from tfrrl.data.link_spec import DatasetSpec


class _JoinEntity(beam.DoFn):
    """Impressions × unified entity; emits the corpus record once per entity.

    An impression leaves keyed by user with only its entity's category added (EXPOSURE_FIELDS):
    the other entity features are attached to the examples by key at the end.
    """

    def __init__(self, spec: DatasetSpec):
        self._has_catalog = {n: et.path is not None for n, et in spec.entity_types.items()}

    def process(self, element):
        key, grouped = element
        entities, imps = grouped["entity"], grouped["imps"]
        entity = entities[0] if entities else None
        if entity is None:
            if not imps:
                return
            type_name, entity_id = link_spec.split_entity_key(key)
            if self._has_catalog[type_name]:
                for imp in imps:
                    yield reject(IMPRESSIONS, "unknown_entity", imp[ROW_INDEX], key)
                return
            entity = transforms.default_entity(type_name, entity_id)
        yield pvalue.TaggedOutput(CORPUS, (key, entity))
        category = entity[schema.entity_feature_name("category")]
        for imp in imps:
            yield imp[USER_INDEX], tuple(imp) + (category,)


class _AssembleUser(beam.DoFn):
    """Per user: ONE element with the user's examples as (split, carried values) tuples (so
    the next stage pays the runner's per-element cost once per user), the user's train count
    per entity (``TRAIN_COUNT``), dead letters, filtered rows and the serving snapshot."""

    def __init__(self, spec: DatasetSpec, cfg: PrepareConfig):
        self._require_profile = spec.users is not None
        self._label = spec.label
        self._cfg = cfg
        self._fields = transforms.carried_example_fields(cfg.sequence_length)

    def process(self, element, cutoff):
        user_id, grouped = element
        profiles = grouped["profile"]
        imps = [transforms.exposure_dict(imp) for imp in grouped["imps"]]
        profile = None
        if profiles:
            profiles.sort(key=lambda p: json.dumps(p, sort_keys=True, default=str))
            for extra in profiles[1:]:
                yield reject(USERS, "duplicate_user", extra["_row"], user_id)
            profile = {k: v for k, v in profiles[0].items() if k != "_row"}
        if not imps:
            return
        split = transforms.SplitRule(cutoff=cutoff, eval_fraction=self._cfg.eval_fraction,
                                     seed=self._cfg.seed)
        out = transforms.assemble_user(
            user_id, profile, imps, require_profile=self._require_profile, label=self._label,
            split=split, sequence_length=self._cfg.sequence_length)
        for reason, imp in out.dead:
            yield reject(IMPRESSIONS, reason, imp["_row"], user_id)
        for rule, imp in out.filtered:
            counters.counter(counters.filtered_name(rule)).inc()
            yield pvalue.TaggedOutput(FILTERED, rule)
        train_counts = collections.Counter()
        carried = []
        for split_name, example in out.examples:
            if split_name == transforms.TRAIN:
                train_counts[example["entity_id"]] += 1
            carried.append((split_name, tuple(example[f] for f in self._fields)))
        if carried:
            yield carried
        for key, n in train_counts.items():
            yield pvalue.TaggedOutput(TRAIN_COUNT, (key, n))
        if out.snapshot is not None:
            counters.counter(counters.USER_SNAPSHOTS).inc()
            yield pvalue.TaggedOutput(USER_SNAPSHOT, json.dumps(out.snapshot, sort_keys=True,
                                                                ensure_ascii=False))


def assemble_users(catalog: beam.PCollection, profiles: beam.PCollection,
                   imps: beam.PCollection, cutoff: beam.PCollection, spec: DatasetSpec,
                   cfg: PrepareConfig, dead: List[beam.PCollection]):
    """Join with unified entities (unknown entities → dead letter), then per user: profile
    join, dedupe, sequences, label rule, split. The impression-sized shuffles move compact
    packed tuples, not dicts (packed.py).

    Returns ``(joined, assembled)``: ``joined[CORPUS]`` holds ``(key, entity)`` once per
    entity of ``catalog`` and once per catalog-less entity with an impression;
    ``assembled.examples`` holds one list of ``(split, carried example values)`` per user with
    examples, and ``assembled`` has
    the ``TRAIN_COUNT``, ``USER_SNAPSHOT`` and ``FILTERED`` outputs.
    """
    joined = ({"entity": catalog,
               "imps": imps | "KeyImpByEntity" >> beam.Map(lambda i: (i[KEY_INDEX], i))}
              | "JoinEntities" >> packed.GroupPacked()
              | "AttachEntities" >> beam.ParDo(_JoinEntity(spec)).with_outputs(
                  DEAD, CORPUS, main="imps"))
    dead.append(joined[DEAD])
    assembled = ({"profile": profiles, "imps": joined.imps}
                 | "GroupByUser" >> packed.GroupPacked()
                 | "AssembleUsers" >> beam.ParDo(
                     _AssembleUser(spec, cfg), cutoff=pvalue.AsSingleton(cutoff)).with_outputs(
                         DEAD, FILTERED, USER_SNAPSHOT, TRAIN_COUNT, main="examples"))
    dead.append(assembled[DEAD])
    return joined, assembled
