"""Impressions × unified entities, then per user: profile join, dedupe, exposure sequences
strictly before each timestamp, the label rule and the split.

The entity join is a lookup in the catalog, a corpus-sized side input, so the impressions cross
ONE impression-sized shuffle, the per-user grouping; it moves packed tuples
(``beam_pipelines/packed.py``), and the per-user step carries only what the sequences need
(entity key, type, category); the target entity's features and Q(a) are attached at the end
(``stages/finalize.py``).
"""

from __future__ import annotations

import collections
import json
from typing import List, Optional, Sequence

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.transforms.window import GlobalWindows

from beam_pipelines import counters, encoding, packed, transforms
from beam_pipelines.config import PrepareConfig
from beam_pipelines.counters import IMPRESSIONS, USERS
from beam_pipelines.dead_letters import reject
from beam_pipelines.stages.impressions import KEY_INDEX, ROW_INDEX, USER_INDEX
from beam_pipelines.stages.shuffle import BucketBatcher
from beam_pipelines.tags import DEAD, FILTERED, TRAIN_COUNT, USER_SNAPSHOT
from tfrrl.data import link_spec, schema
from tfrrl.data.link_spec import DatasetSpec

CATALOG_LESS = "catalog_less"  # keys of entities of a type without a catalog, per bundle


class _AttachEntity(beam.DoFn):
    """Impression × its unified entity, looked up in the catalog (a corpus-sized side input):
    no impression crosses a per-entity shuffle.

    An impression leaves with only its entity's category added (EXPOSURE_FIELDS), packed, and
    pre-grouped by user within the bundle (``packed.KeyedBatcher``): ``(user, [packed exposure,
    …])``, so the per-user shuffle moves one element per user and flush, not one per
    impression. The other entity features are attached to the examples by key at the end. An
    entity key absent from the catalog is dead-lettered (``unknown_entity``) when its type has
    a catalog, and otherwise takes the type's defaults; the keys of such catalog-less entities
    leave on ``CATALOG_LESS`` once per bundle (``finish_bundle``), to be deduplicated into the
    corpus.
    """

    def __init__(self, spec: DatasetSpec, row_header: Optional[Sequence[str]]):
        self._row_header = row_header
        self._has_catalog = {n: et.path is not None for n, et in spec.entity_types.items()}
        self._category = schema.entity_feature_name("category")
        self._default_category = schema.DEFAULT_TOKEN

    def start_bundle(self):
        self._catalog_less = set()
        self._by_user = packed.KeyedBatcher()

    def process(self, imp, catalog):
        key = imp[KEY_INDEX]
        entity = catalog.get(key)
        if entity is not None:
            category = entity[self._category]
        else:
            type_name, _ = link_spec.split_entity_key(key)
            if self._has_catalog[type_name]:
                yield reject(IMPRESSIONS, "unknown_entity",
                             transforms.restored_row(imp[ROW_INDEX], self._row_header), key)
                return
            self._catalog_less.add(key)
            category = self._default_category
        yield from self._by_user.add(imp[USER_INDEX], packed.pack(tuple(imp) + (category,)))

    def finish_bundle(self):
        for user_batch in self._by_user.flush():
            yield GlobalWindows.windowed_value(user_batch)
        for key in self._catalog_less:
            yield pvalue.TaggedOutput(CATALOG_LESS, GlobalWindows.windowed_value(key))


def _default_entity(key: str):
    """A catalog-less entity key → ``(key, the entity with its type's defaults)``."""
    type_name, entity_id = link_spec.split_entity_key(key)
    return key, transforms.default_entity(type_name, entity_id)


class _AssembleUser(beam.DoFn):
    """Per user: the examples, packed carried values pre-grouped by (split, write bucket)
    within the bundle (``stages.shuffle.BucketBatcher``: the write-order grouping moves one
    element per bucket and flush), dead letters, filtered rows and the serving snapshot; the
    train count per entity (``TRAIN_COUNT``) is summed over the bundle and emitted in
    ``finish_bundle`` (one element per entity and bundle)."""

    def __init__(self, spec: DatasetSpec, cfg: PrepareConfig,
                 row_header: Optional[Sequence[str]]):
        self._row_header = row_header
        self._require_profile = spec.users is not None
        self._label = spec.label
        self._cfg = cfg
        self._fields = transforms.carried_example_fields(cfg.sequence_length)

    def setup(self):
        self._sequence_encoder = encoding.sequence_encoder(self._cfg.sequence_length)

    def start_bundle(self):
        self._train_counts = collections.Counter()
        self._buckets = BucketBatcher(self._cfg.shuffle_buckets)

    def process(self, element, cutoff):
        user_id, grouped = element
        profiles = grouped["profile"]
        imps = [transforms.exposure_dict(packed.unpack(imp))
                for batch in grouped["imps"] for imp in batch]
        profile = None
        if profiles:
            profiles.sort(key=lambda p: json.dumps(p, sort_keys=True, default=str))
            for extra in profiles[1:]:
                yield reject(USERS, "duplicate_user", extra["_row"], user_id)
            profile = {k: v for k, v in profiles[0].items() if k != "_row"}
        if not imps:
            return
        split = transforms.SplitRule(cutoff=cutoff, eval_fraction=self._cfg.eval_fraction,
                                     seed=self._cfg.seed, per_user=self._cfg.split == "per_user")
        out = transforms.assemble_user(
            user_id, profile, imps, require_profile=self._require_profile, label=self._label,
            split=split, sequence_length=self._cfg.sequence_length,
            sequence_encoder=self._sequence_encoder)
        for reason, imp in out.dead:
            yield reject(IMPRESSIONS, reason,
                         transforms.restored_row(imp["_row"], self._row_header), user_id)
        for rule, imp in out.filtered:
            counters.counter(counters.filtered_name(rule)).inc()
            yield pvalue.TaggedOutput(FILTERED, rule)
        for (split_name, example), fingerprint in zip(out.examples, out.fingerprints):
            if split_name == transforms.TRAIN:
                self._train_counts[example["entity_id"]] += 1
            yield from self._buckets.add(split_name, fingerprint, packed.pack(
                tuple(example[f] for f in self._fields)))
        if out.snapshot is not None:
            counters.counter(counters.USER_SNAPSHOTS).inc()
            yield pvalue.TaggedOutput(USER_SNAPSHOT, json.dumps(out.snapshot, sort_keys=True,
                                                                ensure_ascii=False))

    def finish_bundle(self):
        for bucket_batch in self._buckets.flush():
            yield GlobalWindows.windowed_value(bucket_batch)
        for key, n in self._train_counts.items():
            yield pvalue.TaggedOutput(TRAIN_COUNT, GlobalWindows.windowed_value((key, n)))


def assemble_users(catalog: beam.PCollection, profiles: beam.PCollection,
                   imps: beam.PCollection, cutoff: beam.PCollection, spec: DatasetSpec,
                   cfg: PrepareConfig, dead: List[beam.PCollection],
                   row_header: Optional[Sequence[str]]):
    """Join with unified entities (``catalog``: ``(key, entity)``, read as a side input;
    unknown entities → dead letter), then per user: profile join, dedupe, sequences, label
    rule, split. The per-user shuffle moves compact packed tuples, not dicts (packed.py).
    ``row_header``: the impression table's column names when it is delimited
    (``stages.impressions.impression_header``), to name a dead-lettered row's values.

    Returns ``(catalog_less, assembled)``: ``catalog_less`` holds ``(key, entity with the
    defaults)`` once per entity of a catalog-less type with an impression (the corpus is
    ``catalog`` plus these); ``assembled.examples`` holds the packed carried examples in
    (split, write bucket) batches (``stages.shuffle.BucketBatch``), and ``assembled`` has the
    ``TRAIN_COUNT``, ``USER_SNAPSHOT`` and ``FILTERED`` outputs.
    """
    joined = (imps | "AttachEntities" >> beam.ParDo(
        _AttachEntity(spec, row_header), catalog=pvalue.AsDict(catalog)).with_outputs(
            DEAD, CATALOG_LESS, main="imps"))
    dead.append(joined[DEAD])
    catalog_less = (joined[CATALOG_LESS] | "CatalogLessKeys" >> beam.Distinct()
                    | "CatalogLessDefaults" >> beam.Map(_default_entity))
    assembled = ({"profile": profiles, "imps": joined.imps}
                 | "GroupByUser" >> packed.GroupPacked()
                 | "AssembleUsers" >> beam.ParDo(
                     _AssembleUser(spec, cfg, row_header),
                     cutoff=pvalue.AsSingleton(cutoff)).with_outputs(
                         DEAD, FILTERED, USER_SNAPSHOT, TRAIN_COUNT, main="examples"))
    dead.append(assembled[DEAD])
    return catalog_less, assembled
