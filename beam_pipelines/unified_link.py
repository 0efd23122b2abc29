"""The unified entity feature link as an Apache Beam pipeline (RRL paper §IV-A, DESIGN.md §1/§3).

raw impressions + one catalog per entity type + user profiles
  → unified entity records (aligned fields; linked content takes its product's features;
    explicit defaults) → impressions joined with entities and user profiles → per-user exposure
    sequences strictly before each timestamp → time (or seeded random) split →
  ``train/`` and ``eval/`` TFRecords, the entity corpus ``corpus/``, ``vocab/*.txt``,
  ``entity_frequency.tsv``, ``stats.json``, ``dead_letter/*.jsonl`` and ``accounting.json``.

Shuffles: catalog dedupe, link resolution, impression×entity join, per-user assembly, the
per-entity join of train counts that gives the logQ sampling probability (Eq. 2), and the
write-order shuffle — each a CoGroupByKey/GroupByKey, so the same code scales out on Dataflow.

Memory: impression-sized collections carry compact tuples of primitives, packed to one bytes
object per element across the impression-sized shuffles (``packed.py``); the raw row is reduced
to its dead-letter form right after validation; the per-user step carries only what the
sequences need (entity key, type, category) and the target entity's features and Q(a) are
attached at the end from a corpus-sized side input, so no example crosses a per-entity shuffle.

Composition: ``build_pipeline`` chains composable pieces (``read_catalog``, ``read_profiles``,
``read_impressions``, ``split_cutoff``, ``assemble_users``, ``entity_probabilities``,
``finalize_examples`` and the ``write_*`` functions). With ``PrepareConfig.user_shards`` = N > 1,
``sharded_link`` runs the same pieces as 2N + 3 pipelines, one user-hash shard at a time, so the
local runner (which keeps every shuffle in memory) holds ~1/N of the impressions at once; the
dataset is the same (the examples as a multiset; corpus, vocabularies, stats and accounting
identical). See its docstring for the passes and the memory model.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.transforms.window import GlobalWindows

from beam_pipelines import packed, raw_io, transforms
from beam_pipelines.raw_io import DEAD, NAMESPACE, dead_counter
from tfrrl.data import fileio, link_spec, schema
from tfrrl.data.link_spec import DatasetSpec

log = logging.getLogger(__name__)

FILTERED = "filtered"
CORPUS = "corpus"
IMPRESSIONS = "impressions"
USERS = "users"
TRAIN_COUNT, VOCAB, STATS, FREQUENCY = "train_count", "vocab", "stats", "frequency"

# Positions in the compact impression tuples (transforms.IMPRESSION_FIELDS / EXPOSURE_FIELDS).
_KEY, _USER, _TS, _ROW = (transforms.IMPRESSION_FIELDS.index(f)
                          for f in ("key", "user_id", "timestamp", "_row"))

# Output layout of a prepared dataset (read back by tfrrl.data.reader).
TRAIN_DIR, EVAL_DIR, CORPUS_DIR = "train", "eval", "corpus"
VOCAB_DIR, DEAD_LETTER_DIR = "vocab", "dead_letter"
USER_SNAPSHOT = USER_SNAPSHOT_DIR = "user_snapshot"
STATS_FILE, ACCOUNTING_FILE, FREQUENCY_FILE = "stats.json", "accounting.json", "entity_frequency.tsv"
SPEC_COPY, SUCCESS_FILE = "link_spec.yaml", "_SUCCESS"


@dataclasses.dataclass
class PrepareConfig:
    """Knobs of the link (YAML-overridable through ``tfrrl prepare --config``)."""

    sequence_length: int = schema.DEFAULT_SEQUENCE_LENGTH
    min_frequency: int = 2  # tokens rarer than this in TRAIN map to OOV
    eval_fraction: float = 0.1  # time split at the (1 - f) quantile of timestamps
    cutoff_timestamp: Optional[int] = None  # explicit time split instead of the quantile
    seed: int = 0  # seeded random split for data without timestamps
    logq_smoothing: float = 1.0
    num_shards: int = 0  # 0: the runner decides
    quantile_resolution: int = 1000
    # Examples leave the per-entity join grouped by entity; they are written in a
    # pseudo-random order (hash buckets, sorted by hash) so that a bounded tf.data shuffle
    # buffer yields batches whose in-batch negatives follow the frequency Q of Eq. 2.
    shuffle_buckets: int = 1024
    # N > 1: the local runner's bounded-memory mode (beam_pipelines/sharded_link.py): the link
    # runs as several pipelines, one user-hash shard (~1/N of the impressions) at a time.
    user_shards: int = 1

    def validate(self) -> "PrepareConfig":
        if self.sequence_length < 1:
            raise ValueError("sequence_length must be ≥ 1")
        if self.min_frequency < 1:
            raise ValueError("min_frequency must be ≥ 1")
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError("eval_fraction must be in (0, 1)")
        if self.user_shards < 1:
            raise ValueError("user_shards must be ≥ 1")
        return self


def _dead(source: str, reason: str, row: Any, detail: str = "") -> pvalue.TaggedOutput:
    dead_counter(source, reason).inc()
    return pvalue.TaggedOutput(DEAD, transforms.dead_letter(source, reason, row, detail))


def _counter(name: str):
    return Metrics.counter(NAMESPACE, name)


# --------------------------------------------------------------------------------------------
# DoFns (thin wrappers around the pure functions of transforms.py).

class _NormalizeEntity(beam.DoFn):
    def __init__(self, type_name: str, spec: link_spec.EntityTypeSpec):
        self._type, self._spec = type_name, spec
        self._source = f"catalog:{type_name}"

    def process(self, row):
        try:
            yield transforms.normalize_entity(row, self._type, self._spec)
        except transforms.RowError as e:
            yield _dead(self._source, e.reason, row, e.detail)


class _DedupeEntities(beam.DoFn):
    """One record per entity key; later copies of a catalog row are dead-lettered."""

    def process(self, element):
        key, records = element
        records = sorted(records, key=lambda r: json.dumps(r, sort_keys=True, default=str))
        yield records[0]
        for extra in records[1:]:
            yield _dead(f"catalog:{extra['entity_type']}", "duplicate_entity", extra, key)


class _ResolveLinks(beam.DoFn):
    def process(self, element):
        _, grouped = element
        targets = list(grouped["target"])
        target = targets[0] if targets else None
        for record in grouped["linkers"]:
            if target is None:
                _counter("catalog/link_unresolved").inc()
            yield transforms.inherit_linked(record, target)


class _NormalizeUser(beam.DoFn):
    def __init__(self, spec: link_spec.UsersSpec):
        self._spec = spec

    def process(self, row):
        try:
            user_id, profile = transforms.normalize_user(row, self._spec)
            profile["_row"] = row
            yield user_id, profile
        except transforms.RowError as e:
            yield _dead(USERS, e.reason, row, e.detail)


class _ParseImpression(beam.DoFn):
    def __init__(self, spec: DatasetSpec):
        self._spec = spec

    def process(self, row):
        """Validated rows leave as compact tuples (transforms.IMPRESSION_FIELDS)."""
        try:
            yield transforms.impression_tuple(transforms.parse_impression(row, self._spec), row)
        except transforms.RowError as e:
            yield _dead(IMPRESSIONS, e.reason, row, e.detail)


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
                    yield _dead(IMPRESSIONS, "unknown_entity", imp[_ROW], key)
                return
            entity = transforms.default_entity(type_name, entity_id)
        yield pvalue.TaggedOutput(CORPUS, (key, entity))
        category = entity[schema.entity_feature_name("category")]
        for imp in imps:
            yield imp[_USER], tuple(imp) + (category,)


class _AssembleUser(beam.DoFn):
    """Per user: examples as (split, carried values) tuples, the user's train count per entity
    (``TRAIN_COUNT``), dead letters, filtered rows and the serving snapshot."""

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
                yield _dead(USERS, "duplicate_user", extra["_row"], user_id)
            profile = {k: v for k, v in profiles[0].items() if k != "_row"}
        if not imps:
            return
        split = transforms.SplitRule(cutoff=cutoff, eval_fraction=self._cfg.eval_fraction,
                                     seed=self._cfg.seed)
        out = transforms.assemble_user(
            user_id, profile, imps, require_profile=self._require_profile, label=self._label,
            split=split, sequence_length=self._cfg.sequence_length)
        for reason, imp in out.dead:
            yield _dead(IMPRESSIONS, reason, imp["_row"], user_id)
        for rule, imp in out.filtered:
            _counter(f"{IMPRESSIONS}/filtered/{rule}").inc()
            yield pvalue.TaggedOutput(FILTERED, rule)
        train_counts = collections.Counter()
        for split_name, example in out.examples:
            if split_name == transforms.TRAIN:
                train_counts[example["entity_id"]] += 1
            yield split_name, tuple(example[f] for f in self._fields)
        for key, n in train_counts.items():
            yield pvalue.TaggedOutput(TRAIN_COUNT, (key, n))
        if out.snapshot is not None:
            _counter(f"{USERS}/snapshot").inc()
            yield pvalue.TaggedOutput(USER_SNAPSHOT, json.dumps(out.snapshot, sort_keys=True,
                                                                ensure_ascii=False))


class _EntityProbability(beam.DoFn):
    """Per entity (corpus-sized): its train count and Q(a) → the corpus record, the frequency
    line, and (key, (entity, Q(a))) for the examples' side input."""

    def process(self, element, totals):
        key, grouped = element
        train_count = sum(grouped["count"])
        prob = transforms.sampling_probability(train_count, totals["train"], totals["corpus"],
                                               totals["smoothing"])
        for entity in list(grouped["corpus"])[:1]:
            yield pvalue.TaggedOutput(CORPUS, dict(entity, sampling_prob=prob,
                                                   train_count=train_count))
            yield pvalue.TaggedOutput(FREQUENCY, f"{key}\t{train_count}\t{prob:.9g}")
            yield key, (entity, prob)


class _FinalizeExamples(beam.DoFn):
    """Carried example + its entity's features and Q(a) (a side input) → the serialized
    tf.Example on the split's output.

    The split statistics and the TRAIN vocabulary counts are summed per bundle and emitted in
    ``finish_bundle`` (``STATS``, ``VOCAB``): one element per distinct token instead of one per
    token occurrence.
    """

    def __init__(self, sequence_length: int):
        self._L = sequence_length
        self._fields = transforms.carried_example_fields(sequence_length)

    def start_bundle(self):
        self._stats = collections.Counter()
        self._vocab = collections.Counter()

    def process(self, element, entities):
        split_name, carried = element
        entity, prob = entities[carried[-1]]
        example = transforms.complete_example(carried, self._fields, entity, prob)
        self._stats[(split_name, "domain", example["domain"])] += 1
        self._stats[(split_name, "entity_type", example["entity_type"])] += 1
        self._stats[(split_name, "total", "")] += 1
        if split_name == transforms.TRAIN:
            self._vocab.update(transforms.vocabulary_tokens(example))
        yield pvalue.TaggedOutput(split_name, schema.encode_example(example, self._L))

    def finish_bundle(self):
        for split_name in (transforms.TRAIN, transforms.EVAL):
            _counter(f"{IMPRESSIONS}/written/{split_name}").inc(
                self._stats[(split_name, "total", "")])
        for token, n in self._vocab.items():
            yield pvalue.TaggedOutput(VOCAB, GlobalWindows.windowed_value((token, n)))
        if self._stats:
            yield pvalue.TaggedOutput(STATS, GlobalWindows.windowed_value(self._stats))


class CounterSum(beam.CombineFn):
    """Sums Counters: the split statistics per (split, kind, value)."""

    def create_accumulator(self):
        return collections.Counter()

    def add_input(self, acc, counts):
        acc.update(counts)
        return acc

    def merge_accumulators(self, accs):
        out = collections.Counter()
        for a in accs:
            out.update(a)
        return out

    def extract_output(self, acc):
        return dict(acc)


def _record_hash(record: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(record, digest_size=8).digest(), "big")


class ShuffleRecords(beam.PTransform):
    """Deterministic pseudo-random order of serialized records: bucket by hash, sort by hash."""

    def __init__(self, buckets: int):
        super().__init__()
        self._buckets = max(1, buckets)

    def expand(self, records):
        buckets = self._buckets
        return (records
                | "HashBucket" >> beam.Map(lambda r: (_record_hash(r) % buckets, r))
                | "GroupBuckets" >> beam.GroupByKey()
                | "SortBucket" >> beam.FlatMap(lambda kv: sorted(kv[1], key=_record_hash)))


def _write_vocabulary(element, out_dir: str, min_frequency: Mapping[str, int]):
    name, counts = element
    tokens = transforms.build_vocabulary(counts, min_frequency[name])
    fileio.write_text(fileio.join(out_dir, VOCAB_DIR, f"{name}.txt"),
                      "".join(t.replace("\n", " ") + "\n" for t in tokens))
    yield name, len(tokens)


def _vocabulary_min_frequency(cfg: PrepareConfig) -> Dict[str, int]:
    # Domains and entity types must never be OOV: they index gates, towers and reports.
    return {v: (1 if v in ("domain", "entity_type") else cfg.min_frequency)
            for v in schema.vocabulary_names(cfg.sequence_length)}


# --------------------------------------------------------------------------------------------
# Pipeline construction: composable pieces. ``build_pipeline`` chains all of them in ONE
# pipeline; ``sharded_link`` runs the same pieces as several pipelines (one user shard at a
# time). Each piece applies the same labelled transforms wherever it is used, and appends the
# dead letters of its stage to ``dead`` (a list of PCollections written by
# ``write_dead_letters``).

def read_catalog(p: beam.Pipeline, raw_dir: str, spec: DatasetSpec,
                 dead: List[beam.PCollection]) -> beam.PCollection:
    """Catalogs → unified entity records, deduplicated, links resolved (UMES):
    ``(entity key, entity record)``, one per catalog entity."""
    entity_parts = []
    for type_name, et in spec.entity_types.items():
        if et.path is None:
            continue
        table = p | f"Catalog[{type_name}]" >> raw_io.ReadRawTable(
            f"catalog:{type_name}", link_spec.resolve_path(raw_dir, et.path), et.format)
        dead.append(table[DEAD])
        norm = table["rows"] | f"Normalize[{type_name}]" >> beam.ParDo(
            _NormalizeEntity(type_name, et)).with_outputs(DEAD, main="entities")
        entity_parts.append(norm.entities)
        dead.append(norm[DEAD])
    if entity_parts:
        raw_entities = entity_parts | "FlattenCatalogs" >> beam.Flatten()
    else:
        raw_entities = p | "NoCatalogs" >> beam.Create([])
    deduped = (raw_entities
               | "KeyEntities" >> beam.Map(lambda r: (r["entity_id"], r))
               | "GroupEntities" >> beam.GroupByKey()
               | "DedupeEntities" >> beam.ParDo(_DedupeEntities()).with_outputs(
                   DEAD, main="entities"))
    dead.append(deduped[DEAD])
    entities = deduped.entities
    plain = (entities | "NotLinked" >> beam.Filter(lambda r: not r.get("_link"))
             | "DropLinkField" >> beam.Map(transforms.inherit_linked, None))
    linkers = (entities | "Linked" >> beam.Filter(lambda r: bool(r.get("_link")))
               | "KeyByLink" >> beam.Map(lambda r: (r["_link"], r)))
    targets = plain | "KeyTargets" >> beam.Map(lambda r: (r["entity_id"], r))
    linked = ({"target": targets, "linkers": linkers} | "JoinLinks" >> beam.CoGroupByKey()
              | "InheritLinked" >> beam.ParDo(_ResolveLinks()))
    return ((plain, linked) | "UnifiedEntities" >> beam.Flatten()
            | "KeyCatalog" >> beam.Map(lambda r: (r["entity_id"], r)))


def read_profiles(p: beam.Pipeline, raw_dir: str, spec: DatasetSpec,
                  dead: List[beam.PCollection]) -> beam.PCollection:
    """User profiles ``(user id, profile with its raw row in "_row")``; empty without a users
    table."""
    if spec.users is None:
        return p | "NoUsers" >> beam.Create([])
    users_table = p | "Users" >> raw_io.ReadRawTable(
        USERS, link_spec.resolve_path(raw_dir, spec.users.path), spec.users.format)
    dead.append(users_table[DEAD])
    users = users_table["rows"] | "NormalizeUsers" >> beam.ParDo(
        _NormalizeUser(spec.users)).with_outputs(DEAD, main="users")
    dead.append(users[DEAD])
    return users.users


def read_impressions(p: beam.Pipeline, raw_dir: str, spec: DatasetSpec,
                     dead: List[beam.PCollection]) -> beam.PCollection:
    """Impressions, parsed and validated: compact tuples (transforms.IMPRESSION_FIELDS)."""
    imp_table = p | "Impressions" >> raw_io.ReadRawTable(
        IMPRESSIONS, link_spec.resolve_path(raw_dir, spec.impressions.path),
        spec.impressions.format)
    dead.append(imp_table[DEAD])
    parsed = imp_table["rows"] | "ParseImpressions" >> beam.ParDo(
        _ParseImpression(spec)).with_outputs(DEAD, main="imps")
    dead.append(parsed[DEAD])
    return parsed.imps


def uses_quantile_cutoff(spec: DatasetSpec, cfg: PrepareConfig) -> bool:
    """A time split without an explicit cutoff: the cutoff is computed from the data."""
    return cfg.cutoff_timestamp is None and bool(spec.impressions.column("timestamp"))


def split_cutoff(p: beam.Pipeline, imps: beam.PCollection, spec: DatasetSpec,
                 cfg: PrepareConfig) -> beam.PCollection:
    """The split point (one element): ``cutoff_timestamp``, None for data without time, or
    the (1 - eval_fraction) quantile of the parsed impressions' timestamps."""
    if not uses_quantile_cutoff(spec, cfg):
        return p | "FixedCutoff" >> beam.Create([cfg.cutoff_timestamp])
    res = cfg.quantile_resolution
    index = round((1.0 - cfg.eval_fraction) * res)
    return (imps
            | "Timestamps" >> beam.Map(lambda imp: imp[_TS])
            | "Quantiles" >> beam.ApproximateQuantiles.Globally(res + 1)
            | "PickCutoff" >> beam.Map(lambda qs: qs[index] if qs else None))


def assemble_users(catalog: beam.PCollection, profiles: beam.PCollection,
                   imps: beam.PCollection, cutoff: beam.PCollection, spec: DatasetSpec,
                   cfg: PrepareConfig, dead: List[beam.PCollection]):
    """Join with unified entities (unknown entities → dead letter), then per user: profile
    join, dedupe, sequences, label rule, split. The impression-sized shuffles move compact
    packed tuples, not dicts (packed.py).

    Returns ``(joined, assembled)``: ``joined[CORPUS]`` holds ``(key, entity)`` once per
    entity of ``catalog`` and once per catalog-less entity with an impression;
    ``assembled.examples`` holds ``(split, carried example values)``, and ``assembled`` has
    the ``TRAIN_COUNT``, ``USER_SNAPSHOT`` and ``FILTERED`` outputs.
    """
    joined = ({"entity": catalog,
               "imps": imps | "KeyImpByEntity" >> beam.Map(lambda i: (i[_KEY], i))}
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


def entity_probabilities(p: beam.Pipeline, corpus: beam.PCollection,
                         train_counts: beam.PCollection, cfg: PrepareConfig):
    """Per entity (corpus-sized): train counts → Q(a) for logQ (Eq. 2).

    ``corpus``: ``(key, entity)``, one per corpus entity; ``train_counts``: ``(key, n)``
    partial counts (summed here). Returns ``(per_entity, totals)``: ``per_entity.entities``
    is ``(key, (entity, Q(a)))`` (the examples' side input), ``per_entity[CORPUS]`` the corpus
    records, ``per_entity[FREQUENCY]`` the frequency lines; ``totals`` one dict
    ``{"train", "corpus", "smoothing"}``.
    """
    train_counts = train_counts | "CountPerEntity" >> beam.CombinePerKey(sum)
    n_train = (train_counts | "TrainCounts" >> beam.Values()
               | "TotalTrain" >> beam.CombineGlobally(sum))
    n_corpus = corpus | "CorpusSize" >> beam.combiners.Count.Globally()
    totals = (p | "TotalsSeed" >> beam.Create([None])
              | "TotalsDict" >> beam.Map(
                  lambda _, t, c, s: {"train": t, "corpus": c, "smoothing": s},
                  pvalue.AsSingleton(n_train), pvalue.AsSingleton(n_corpus),
                  cfg.logq_smoothing))
    per_entity = ({"corpus": corpus, "count": train_counts}
                  | "JoinCounts" >> beam.CoGroupByKey()
                  | "EntityProbability" >> beam.ParDo(
                      _EntityProbability(), totals=pvalue.AsSingleton(totals))
                  .with_outputs(CORPUS, FREQUENCY, main="entities"))
    return per_entity, totals


def finalize_examples(examples: beam.PCollection, entities: beam.PCollection,
                      cfg: PrepareConfig):
    """Carried examples + entity features and Q(a) (``entities``: ``(key, (entity, Q))``, a
    side input) → serialized tf.Examples on the outputs TRAIN and EVAL, TRAIN vocabulary
    counts on ``VOCAB`` and split statistics on ``STATS``."""
    return (examples
            | "Finalize" >> beam.ParDo(_FinalizeExamples(cfg.sequence_length),
                                       entities=pvalue.AsDict(entities))
            .with_outputs(transforms.TRAIN, transforms.EVAL, VOCAB, STATS))


def write_examples(final, out_dir: str, cfg: PrepareConfig, prefix: str = "part") -> None:
    """The write-order shuffle, then ``train/`` and ``eval/`` TFRecords named ``<prefix>-*``."""
    for split_name, folder in ((transforms.TRAIN, TRAIN_DIR), (transforms.EVAL, EVAL_DIR)):
        (final[split_name]
         | f"Shuffle[{split_name}]" >> ShuffleRecords(cfg.shuffle_buckets)
         | f"Write[{split_name}]" >> beam.io.WriteToTFRecord(
             fileio.join(out_dir, folder, prefix), file_name_suffix=".tfrecord",
             num_shards=cfg.num_shards))


def write_corpus(per_entity, out_dir: str, cfg: PrepareConfig) -> None:
    """``corpus/`` TFRecords and ``entity_frequency.tsv``."""
    (per_entity[CORPUS]
     | "EncodeCorpus" >> beam.Map(schema.encode_entity)
     | "WriteCorpus" >> beam.io.WriteToTFRecord(
         fileio.join(out_dir, CORPUS_DIR, "part"), file_name_suffix=".tfrecord",
         num_shards=cfg.num_shards))
    (per_entity[FREQUENCY]
     | "WriteFrequency" >> beam.io.WriteToText(
         fileio.join(out_dir, FREQUENCY_FILE), shard_name_template="", num_shards=1,
         header="entity_id\ttrain_count\tsampling_prob"))


def write_user_snapshot(snapshots: beam.PCollection, out_dir: str,
                        prefix: str = "part") -> None:
    """The serving-time user features (profile + last L exposures), one JSON line per user: the
    matching service's user-feature store is built from them (tfrrl_serving/user_store.py)."""
    (snapshots
     | "WriteUserSnapshot" >> beam.io.WriteToText(
         fileio.join(out_dir, USER_SNAPSHOT_DIR, prefix), file_name_suffix=".jsonl"))


def write_dead_letters(p: beam.Pipeline, dead: List[beam.PCollection], out_dir: str,
                       prefix: str = "part") -> None:
    (dead | "FlattenDead" >> beam.Flatten(pipeline=p)
     | "DeadToJson" >> beam.Map(lambda d: json.dumps(d, ensure_ascii=False, sort_keys=True))
     | "WriteDead" >> beam.io.WriteToText(
         fileio.join(out_dir, DEAD_LETTER_DIR, prefix), file_name_suffix=".jsonl"))


def corpus_type_counts(corpus_records: beam.PCollection) -> beam.PCollection:
    """One dict ``{entity type: corpus entities}`` from the corpus records."""
    return (corpus_records | "CorpusType" >> beam.Map(lambda r: r["entity_type"])
            | "CorpusTypeCount" >> beam.combiners.Count.PerElement()
            | "CorpusTypeDict" >> beam.combiners.ToDict())


def write_vocabularies_and_stats(p: beam.Pipeline, vocab_counts: beam.PCollection,
                                 split_stats: beam.PCollection, corpus_types: beam.PCollection,
                                 cutoff: beam.PCollection, totals: beam.PCollection,
                                 out_dir: str, spec: DatasetSpec, cfg: PrepareConfig) -> None:
    """``vocab/*.txt`` and ``stats.json``.

    ``vocab_counts``: ``((vocabulary, token), n)`` TRAIN counts, partial sums allowed (the
    minimum frequency applies to their total); ``split_stats``: Counters per (split, kind,
    value), partial sums allowed; ``corpus_types``, ``cutoff``, ``totals``: one element each.
    """
    # Vocabularies from the TRAIN split only (no leakage of eval ids into the model's tables).
    min_freq = _vocabulary_min_frequency(cfg)
    vocab_sizes = (vocab_counts
                   | "VocabCount" >> beam.CombinePerKey(sum)
                   | "VocabByName" >> beam.Map(lambda kv: (kv[0][0], (kv[0][1], kv[1]))))
    # Every vocabulary file exists, even one whose feature is all defaults.
    vocab_seed = p | "VocabSeed" >> beam.Create(
        [(name, (schema.DEFAULT_TOKEN, 0)) for name in min_freq])
    vocab_sizes = ((vocab_sizes, vocab_seed) | "VocabWithSeed" >> beam.Flatten()
                   | "VocabGroup" >> beam.GroupByKey()
                   | "WriteVocab" >> beam.FlatMap(_write_vocabulary, out_dir, min_freq)
                   | "VocabSizes" >> beam.combiners.ToDict())

    split_stats = split_stats | "SplitStats" >> beam.CombineGlobally(CounterSum())
    (p | "StatsSeed" >> beam.Create([None])
     | "WriteStats" >> beam.Map(
         _write_stats, out_dir, spec, cfg,
         pvalue.AsSingleton(split_stats), pvalue.AsSingleton(corpus_types),
         pvalue.AsSingleton(vocab_sizes), pvalue.AsSingleton(cutoff),
         pvalue.AsSingleton(totals)))


def build_pipeline(p: beam.Pipeline, raw_dir: str, out_dir: str, spec: DatasetSpec,
                   cfg: PrepareConfig) -> None:
    """Adds the whole link to pipeline ``p`` (the one-pass mode, ``user_shards`` = 1)."""
    dead: List[beam.PCollection] = []
    catalog = read_catalog(p, raw_dir, spec, dead)
    profiles = read_profiles(p, raw_dir, spec, dead)
    imps = read_impressions(p, raw_dir, spec, dead)
    cutoff = split_cutoff(p, imps, spec, cfg)
    joined, assembled = assemble_users(catalog, profiles, imps, cutoff, spec, cfg, dead)
    # The entity features + Q(a) that every example of the entity takes come from a
    # corpus-sized side input, so no example crosses a per-entity shuffle.
    per_entity, totals = entity_probabilities(p, joined[CORPUS], assembled[TRAIN_COUNT], cfg)
    final = finalize_examples(assembled.examples, per_entity.entities, cfg)

    write_examples(final, out_dir, cfg)
    write_corpus(per_entity, out_dir, cfg)
    write_user_snapshot(assembled[USER_SNAPSHOT], out_dir)
    write_dead_letters(p, dead, out_dir)
    write_vocabularies_and_stats(p, final[VOCAB], final[STATS],
                                 corpus_type_counts(per_entity[CORPUS]), cutoff, totals,
                                 out_dir, spec, cfg)


def _write_stats(_, out_dir, spec: DatasetSpec, cfg: PrepareConfig, split_stats, corpus_types,
                 vocab_sizes, cutoff, totals):
    by = collections.defaultdict(dict)
    for (split_name, kind, value), n in sorted(split_stats.items()):
        by[f"{split_name}_{kind}"][value] = n
    domains = sorted(by.get("train_domain", {}))
    stats = {
        "num_train": totals["train"],
        "num_eval": sum(by.get("eval_total", {}).values()),
        "domains": domains,
        # |D^k| per domain (training rows), used by the Eq. 20 weights of MVWDL.
        "domain_sizes": {d: by["train_domain"][d] for d in domains},
        "eval_domain_sizes": by.get("eval_domain", {}),
        "entity_types": sorted(spec.entity_types),
        "train_entity_type_counts": by.get("train_entity_type", {}),
        "eval_entity_type_counts": by.get("eval_entity_type", {}),
        "corpus_size": totals["corpus"],
        "corpus_entity_type_counts": dict(sorted(corpus_types.items())),
        "vocabulary_sizes": dict(sorted(vocab_sizes.items())),
        "split": ({"kind": "time", "cutoff_timestamp": cutoff} if cutoff is not None else
                  {"kind": "random", "eval_fraction": cfg.eval_fraction, "seed": cfg.seed}),
        "sampling_probability": {
            "file": FREQUENCY_FILE,
            "formula": "(train_count + s) / (num_train + s * corpus_size)",
            "smoothing": cfg.logq_smoothing,
        },
        "sequence_length": cfg.sequence_length,
        "min_frequency": cfg.min_frequency,
        "label": spec.label,
    }
    fileio.write_text(fileio.join(out_dir, STATS_FILE), json.dumps(stats, indent=2) + "\n")
    return stats


# --------------------------------------------------------------------------------------------
# Running and accounting.

def default_pipeline_options(beam_args: Optional[List[str]] = None) -> PipelineOptions:
    """DirectRunner in multi-processing mode unless flags say otherwise.

    One worker process by default: with ``--direct_num_workers=2`` Beam 2.77's local runner
    wrote fewer examples than it read on 1M synthetic impressions (measured twice: 937,109 of
    1,000,000; 200k balanced). The row accounting catches it and the job fails, but parallel
    runs belong on a distributed runner (Dataflow, Flink, Spark) until that is understood.

    Any standard Beam flag passes through, e.g. ``--runner=DataflowRunner --project=P
    --region=R --temp_location=gs://B/tmp --setup_file=./setup.py``.
    """
    options = PipelineOptions(beam_args or [])
    std = options.view_as(StandardOptions)
    if std.runner is None:
        std.runner = "DirectRunner"
    if std.runner in ("DirectRunner", "direct"):
        direct = options.view_as(DirectOptions)
        if "--direct_running_mode" not in " ".join(beam_args or []):
            direct.direct_running_mode = "multi_processing"
    if "--default_sdk_harness_log_level" not in " ".join(beam_args or []):
        # Worker processes log every bundle at INFO; keep the CLI output readable.
        options = PipelineOptions((beam_args or []) + ["--default_sdk_harness_log_level=WARNING"],
                                  **options.get_all_options(drop_default=True))
    return options


def pipeline_counters(result) -> Dict[str, int]:
    """The link's Beam counters of a finished pipeline (``NAMESPACE``), by name."""
    out: Dict[str, int] = collections.Counter()
    for c in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        out[c.key.metric.name] += int(value or 0)
    return dict(out)


def accounting_from_counters(counters: Mapping[str, int], spec: DatasetSpec) -> Dict[str, Any]:
    """Row accounting per source: rows read = written + dead-lettered + filtered."""
    acc: Dict[str, Any] = {}
    sources = [IMPRESSIONS] + ([USERS] if spec.users is not None else [])
    sources += [f"catalog:{n}" for n, et in spec.entity_types.items() if et.path is not None]
    for source in sources:
        dead = {k.split("/dead/")[1]: v for k, v in counters.items()
                if k.startswith(f"{source}/dead/")}
        entry: Dict[str, Any] = {"rows_read": counters.get(f"{source}/rows_read", 0),
                                 "dead_letter": dict(sorted(dead.items()))}
        if source == IMPRESSIONS:
            entry["train"] = counters.get(f"{IMPRESSIONS}/written/train", 0)
            entry["eval"] = counters.get(f"{IMPRESSIONS}/written/eval", 0)
            entry["filtered"] = {r: counters.get(f"{IMPRESSIONS}/filtered/{r}", 0)
                                 for r in transforms.FILTER_RULES}
            accounted = (entry["train"] + entry["eval"] + sum(dead.values())
                         + sum(entry["filtered"].values()))
        else:
            accounted = None  # entity/user rows: kept rows are not counted row-for-row
            entry["kept"] = entry["rows_read"] - sum(dead.values())
        if accounted is not None:
            entry["accounted"] = accounted
            entry["balanced"] = accounted == entry["rows_read"]
        acc[source] = entry
    acc["catalog_link_unresolved"] = counters.get("catalog/link_unresolved", 0)
    acc["user_snapshot"] = counters.get(f"{USERS}/snapshot", 0)
    return acc


def format_accounting(acc: Mapping[str, Any]) -> str:
    imp = acc[IMPRESSIONS]
    lines = [
        f"impressions: read {imp['rows_read']:,} = train {imp['train']:,} + eval {imp['eval']:,}"
        f" + dead-letter {sum(imp['dead_letter'].values()):,}"
        f" + filtered {sum(imp['filtered'].values()):,}"
        f"  [{'balanced' if imp['balanced'] else 'NOT BALANCED'}]",
    ]
    for reason, n in imp["dead_letter"].items():
        lines.append(f"  dead-letter {reason}: {n:,}")
    for rule, n in imp["filtered"].items():
        lines.append(f"  filtered by rule {rule}: {n:,}")
    for source, entry in acc.items():
        if source in (IMPRESSIONS, "catalog_link_unresolved", "user_snapshot"):
            continue
        dead = sum(entry["dead_letter"].values())
        detail = ", ".join(f"{r} {n:,}" for r, n in entry["dead_letter"].items())
        lines.append(f"{source}: read {entry['rows_read']:,}, kept {entry['kept']:,}, "
                     f"dead-letter {dead:,}" + (f" ({detail})" if detail else ""))
    lines.append(f"user-feature snapshot: {acc.get('user_snapshot', 0):,} users")
    if acc.get("catalog_link_unresolved"):
        lines.append(f"linked entities whose product is missing (defaults kept): "
                     f"{acc['catalog_link_unresolved']:,}")
    return "\n".join(lines)


class OutputExistsError(FileExistsError):
    pass


def _is_local(path: str) -> bool:
    return "://" not in path


def _staging_dir(out_dir: str) -> str:
    """A hidden sibling of ``out_dir`` the run writes into (same filesystem, so the publishing
    rename is atomic)."""
    parent, base = os.path.split(os.path.abspath(out_dir))
    return os.path.join(parent, f".{base}.tmp-{uuid.uuid4().hex[:12]}")


def _publish(staging: str, out_dir: str) -> None:
    """Renames a complete local dataset into place. An existing ``out_dir`` (``--overwrite``) is
    renamed away first and deleted only after the new one is in place: a crash between the two
    renames leaves the old dataset beside (never a mix of old and new files)."""
    old = None
    if os.path.exists(out_dir):
        old = f"{_staging_dir(out_dir)}-old"
        os.rename(out_dir, old)
    os.rename(staging, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _run_one_pass(raw_dir: str, work_dir: str, spec: DatasetSpec, cfg: PrepareConfig,
                  beam_args: Optional[List[str]]) -> Dict[str, int]:
    """The whole link as ONE pipeline; returns its counters."""
    p = beam.Pipeline(options=default_pipeline_options(beam_args))
    build_pipeline(p, raw_dir, work_dir, spec, cfg)
    result = p.run()
    result.wait_until_finish()
    return pipeline_counters(result)


def run(raw_dir: str, out_dir: str, cfg: Optional[PrepareConfig] = None,
        spec: Optional[DatasetSpec] = None, beam_args: Optional[List[str]] = None,
        overwrite: bool = False) -> Dict[str, Any]:
    """Runs the link; returns ``{"accounting": …, "stats": …, "seconds": …}``.

    Data safety: a non-empty ``out_dir`` is never replaced unless ``overwrite``. A local
    ``out_dir`` is written under a hidden staging sibling (``.<name>.tmp-<hex>``) and renamed into
    place only after the pipeline succeeded and the row accounting balanced; a failed or killed
    run leaves no dataset at ``out_dir`` (readers also require the ``_SUCCESS`` marker, written
    last). Object stores (gs://) have no atomic directory rename: there the dataset is written in
    place, an old one's ``_SUCCESS`` is deleted first, and ``_SUCCESS`` is written last.

    ``cfg.user_shards`` > 1 runs the link as several pipelines, one user shard at a time
    (``sharded_link``; local runners only): the same dataset, the same accounting and the
    same data safety, with peak memory bounded by the largest shard.
    """
    # The sharded mode is built from this module's pieces, hence the import here.
    from beam_pipelines import sharded_link  # pylint: disable=import-outside-toplevel

    cfg = (cfg or PrepareConfig()).validate()
    spec = (spec or link_spec.load(raw_dir)).validate()
    if cfg.user_shards > 1:
        sharded_link.check_runner(default_pipeline_options(beam_args))
    if fileio.exists(out_dir) and fileio.glob(fileio.join(out_dir, "*")):
        if not overwrite:
            raise OutputExistsError(
                f"{out_dir} exists and is not empty; pass --overwrite to replace it")
        if not _is_local(out_dir):
            marker = fileio.join(out_dir, SUCCESS_FILE)
            if fileio.exists(marker):
                FileSystems.delete([marker])
            # Only a trailing "/" makes Beam's GCS delete recursive; without it the match finds
            # no object of that exact name and the old shards would stay beside the new ones.
            FileSystems.delete([out_dir.rstrip("/") + "/"])
    work_dir = _staging_dir(out_dir) if _is_local(out_dir) else out_dir
    start = time.time()
    try:
        if cfg.user_shards == 1:
            counters = _run_one_pass(raw_dir, work_dir, spec, cfg, beam_args)
        else:
            counters = sharded_link.run_passes(raw_dir, work_dir, spec, cfg, beam_args)
        seconds = time.time() - start
        acc = accounting_from_counters(counters, spec)
        fileio.write_text(fileio.join(work_dir, SPEC_COPY), spec.to_yaml())
        fileio.write_text(fileio.join(work_dir, ACCOUNTING_FILE), json.dumps(acc, indent=2) + "\n")
        stats = json.loads(fileio.read_text(fileio.join(work_dir, STATS_FILE)))
        if not acc[IMPRESSIONS]["balanced"]:
            raise RuntimeError("row accounting does not balance:\n" + format_accounting(acc))
        fileio.write_text(fileio.join(work_dir, SUCCESS_FILE), "")
    except BaseException:
        if work_dir != out_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
        raise
    if work_dir != out_dir:
        _publish(work_dir, out_dir)
    return {"accounting": acc, "stats": stats, "seconds": seconds}
