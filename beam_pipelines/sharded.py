"""The user-hash sharded mode: the link as 2N + 1 pipelines, for bounded memory on Beam's local
runner.

Why: Beam's Python local runner (the FnApiRunner behind the DirectRunner) keeps every shuffle in
memory, so the one-pass link's peak RSS grows linearly with the input (see
benchmarks/RESULTS.md, "Beam link memory"). Every impression-sized step of the link is per
user (the per-user assembly) or per example (Finalize, the write-order grouping); only
corpus-sized state (entities, train counts per entity, vocabularies) is global. With
``PrepareConfig.user_shards`` = N the link therefore runs as 2N + 1 pipelines, one after
another, each holding at most ONE user shard (the users whose id hashes to i mod N,
``transforms.user_shard``: blake2b, the same in every process and run):

======================  ==================================  ===============================
pass                    reads                               writes
======================  ==================================  ===============================
partition (1×)          the raw catalogs, users,            staged: unified catalog;
                        impressions                         profiles and parsed impressions
                                                            per shard; the split cutoff.
                                                            dead_letter/ of the raw tables
assemble[i]             staged catalog, profiles[i],        staged: carried examples, train
(i < N-1)               impressions[i]                      counts per entity, catalog-less
                                                            entities. user_snapshot/,
                                                            dead_letter/ (unknown_entity,
                                                            unknown_user, duplicate_*)
assemble[N-1] + merge   as assemble[i]; then the train      as assemble[i]; then corpus/,
                        counts and catalog-less entities    entity_frequency.tsv; staged:
                        of shards 0..N-2 (staged) and of    entity features + Q(a)
                        shard N-1 (this pipeline)
finalize[i] (i < N-1)   staged examples[i], entity          train/, eval/; staged: TRAIN
                        features + Q(a) (a side input)      vocabulary counts, split stats
finalize[N-1]           as finalize[i]; then the            as finalize[i]; then
+ summarize             vocabulary counts and split stats   vocab/*.txt, stats.json
                        of shards 0..N-2 (staged) and of
                        shard N-1 (this pipeline)
======================  ==================================  ===============================

The merge and the summary are corpus- and vocabulary-sized: folded into the last shard's passes
(``build_assemble_and_merge_pass``, ``build_finalize_and_summary_pass``) they save two pipeline
start-ups. They can also run as pipelines of their own (``build_merge_pass`` and
``build_summary_pass`` without ``last``: 2N + 3 pipelines), which is what happens when folding
would cost a round of parallel passes (:func:`folds_for_free`, "Parallelism" below).

Every pass is built from the pieces of the one-pass pipeline (``beam_pipelines/stages``:
``read_catalog``, ``assemble_users``, ``entity_probabilities``, ``finalize_examples``, the
writers), so the DoFns, labels and rules are the same. The intermediates are packed tuples
(``packed.py``) in TFRecord files under ``<work dir>/_user_shards/``, deleted before the dataset
is published; the run's staging, rename, ``_SUCCESS`` and ``--overwrite`` rules are those of
``beam_pipelines/run.py``, the same for both modes.

The same dataset as one pass:

* cutoff: the partition pass computes it with the one-pass transform
  (``stages.split.split_cutoff``, Beam's approximate quantile) over the same parsed impressions,
  read by the same transforms from the same files, and the shards use it as a fixed cutoff.
  Beam's quantile is exact (independent of element order) up to 18 × 15,259 ≈ 274k timestamps
  at ``quantile_resolution`` 1000; above that its buffer collapses follow the arrival order,
  which the identical read → parse → quantile chain reproduces on the same runner;
* Q(a) (Eq. 2) and the minimum vocabulary frequency use the train counts SUMMED over shards;
  the corpus is the unified catalog (staged once) plus the catalog-less entities that any shard
  saw, deduplicated;
* the train and eval examples are the same multiset of records; only their division into files
  (``part-u<i>of<N>-*`` per shard) and their order differ: the write-order grouping runs within
  a shard;
* accounting: every counter is incremented in exactly one pass (raw-table reads and parse
  errors in the partition pass, per-user rules in assemble[i], written examples in
  finalize[i]), so their sum is the one-pass run's counters and ``accounting.json`` is
  identical. Catalog and user-table dead letters are written once (partition pass).

Memory model: the partition pass moves no impression-sized shuffle (the quantile is a combiner,
the partition writes stream); assemble[i] holds shard i's impressions through the per-user
group, plus the catalog (the entity join's side input); finalize[i] holds shard i's examples
through the write-order grouping, plus the corpus-sized side input; merge and summarize are
corpus- and vocabulary-sized, also where they share the last shard's pipeline. So peak ≈ fixed
cost + (per-impression cost × the largest shard's impressions) + corpus-sized state; user
hashing balances the shards to within a few percent once users are many (a single very active
user still lands in one shard). Each pass pays the runner's start-up, and the staged data is
written and read once more. Measured peaks, the fitted costs and the start-up time:
benchmarks/RESULTS.md, "Beam link memory".

Parallelism: with ``--direct_num_workers=P`` the per-shard passes (assemble[i], finalize[i]) run
P at a time, each a one-worker pipeline in a process of a pool (``_PassRunner``); partition and
the passes holding merge or summarize run alone. A folded pass needs the other N-1 shards done,
so merge and summarize fold only when that costs no round of the pool ((N-1) mod P = 0, always
with P = 1); otherwise (e.g. N = P = 2) the last shard runs in the pool beside the others and
merge and summarize stay pipelines of their own (2N + 3). See ``beam_pipelines/runner.py`` for
why the local runner's parallelism is pipelines side by side and not Beam's own multi-worker
mode.

Runners: only the local DirectRunner. A distributed runner (Dataflow, Flink, Spark) already
spills and distributes its shuffles, so N passes would only multiply job start-ups and reads;
``check_runner`` refuses ``user_shards`` > 1 there with a clear error.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import logging
import multiprocessing
import os
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_pipelines import packed, runner, transforms
from beam_pipelines.config import PrepareConfig
from beam_pipelines.dead_letters import write_dead_letters
from beam_pipelines.publish import delete_folder
from beam_pipelines.stages import outputs
from beam_pipelines.stages.assembly import assemble_users
from beam_pipelines.stages.catalog import read_catalog
from beam_pipelines.stages.finalize import finalize_examples
from beam_pipelines.stages.impressions import (impression_header, impression_user,
                                               read_impressions)
from beam_pipelines.stages.probabilities import entity_probabilities
from beam_pipelines.stages.profiles import read_profiles
from beam_pipelines.stages.split import split_cutoff
from beam_pipelines.stages.stats import CounterSum, corpus_type_counts
from beam_pipelines.tags import CORPUS, STATS, TRAIN_COUNT, USER_SNAPSHOT, VOCAB
from tfrrl.data import fileio
from tfrrl.data.link_spec import DatasetSpec

log = logging.getLogger(__name__)

STAGING_DIR = "_user_shards"
LOCAL_RUNNERS = ("DirectRunner", "direct", "SwitchingDirectRunner", "BundleBasedDirectRunner")

# Staged collections (each a folder of TFRecord files of packed values).
CATALOG = "catalog"  # (entity key, unified entity), once
PROFILES = "profiles"  # (user id, profile), per shard
IMPRESSIONS = "impressions"  # IMPRESSION_FIELDS tuples, per shard
EXAMPLES = "examples"  # packed carried examples in (split, write bucket) batches, per shard
TRAIN_COUNTS = "train_counts"  # (entity key, train count within the shard), per shard
CATALOG_LESS = "catalog_less"  # (entity key, default entity) of catalog-less types, per shard
ENTITIES = "entities"  # (entity key, (entity, Q(a))), once
VOCAB_COUNTS = "vocab_counts"  # ((vocabulary, token), TRAIN count within the shard), per shard
SPLIT_STATS = "split_stats"  # {(split, kind, value): n} of the shard, per shard


def check_runner(options: PipelineOptions) -> None:
    """Refuses ``user_shards`` > 1 on a distributed runner (see the module docstring)."""
    configured = options.view_as(StandardOptions).runner
    name = configured if isinstance(configured, str) else type(configured).__name__
    if name not in LOCAL_RUNNERS:
        raise ValueError(
            f"user_shards > 1 is the local runner's bounded-memory mode; {name} spills and "
            f"distributes its shuffles itself, so run the one-pass link there (user_shards=1)")


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the passes stage their intermediates, and the file names of each shard's output."""

    root: str
    num_shards: int

    def _folder(self, name: str, shard: Optional[int]) -> str:
        return name if shard is None else f"{name}-{shard:03d}"

    def prefix(self, name: str, shard: Optional[int] = None) -> str:
        """File prefix of a staged collection (``shard`` None: one for all shards)."""
        return fileio.join(self.root, self._folder(name, shard), "part")

    def pattern(self, name: str, shard: Optional[int] = None) -> str:
        return self.prefix(name, shard) + "*"

    def every_shard(self, name: str) -> str:
        """Glob of a per-shard collection over all shards (what the merge passes read)."""
        return fileio.join(self.root, f"{name}-*", "part*")

    @property
    def cutoff_file(self) -> str:
        return fileio.join(self.root, "cutoff.json")

    @property
    def merge_file(self) -> str:
        return fileio.join(self.root, "merge.json")

    def output_prefix(self, shard: Optional[int]) -> str:
        """Prefix of the dataset files a pass writes (train/, eval/, user_snapshot/,
        dead_letter/): distinct per shard so they coexist in one folder, and starting with
        ``part-`` like the one-pass names (readers glob ``part-*``)."""
        if shard is None:
            return "part-global"
        return f"part-u{shard:03d}of{self.num_shards:03d}"


class _Stage(beam.PTransform):
    """Writes a collection of primitives as packed records under ``prefix``."""

    def __init__(self, prefix: str):
        super().__init__()
        self._prefix = prefix

    def expand(self, pcoll):
        return (pcoll | "Pack" >> beam.Map(packed.pack)
                | "Write" >> beam.io.WriteToTFRecord(self._prefix, file_name_suffix=".tfrecord"))


class _Unstage(beam.PTransform):
    """Reads back what ``_Stage`` wrote (every file matching ``pattern``)."""

    def __init__(self, pattern: str):
        super().__init__()
        self._pattern = pattern

    def expand(self, pbegin):
        return (pbegin | "Read" >> beam.io.ReadFromTFRecord(self._pattern)
                | "Unpack" >> beam.Map(packed.unpack))


def _stage_by_user(pcoll: beam.PCollection, user_of: Callable[[Any], str], layout: Layout,
                   name: str) -> None:
    """Partitions ``pcoll`` by user shard and stages each part."""
    n = layout.num_shards
    parts = pcoll | f"Partition[{name}]" >> beam.Partition(
        lambda x, k: transforms.user_shard(user_of(x), k), n)
    for i in range(n):
        _ = parts[i] | f"Stage[{name}-{i:03d}]" >> _Stage(layout.prefix(name, i))


def _profile_user(kv) -> str:
    return kv[0]


def _write_json(_, path: str, **values) -> None:
    fileio.write_text(path, json.dumps(values, sort_keys=True) + "\n")


def _first_copy(key: str, copies) -> tuple:
    return key, next(iter(copies))


# --------------------------------------------------------------------------------------------
# The passes.

def build_partition_pass(p: beam.Pipeline, raw_dir: str, out_dir: str, layout: Layout,
                         spec: DatasetSpec, cfg: PrepareConfig) -> None:
    """Reads every raw table once: the unified catalog, profiles and parsed impressions by user
    shard, and the split cutoff go to staging; the raw tables' dead letters to the output."""
    dead: List[beam.PCollection] = []
    _ = read_catalog(p, raw_dir, spec, dead) | "Stage[catalog]" >> _Stage(
        layout.prefix(CATALOG))
    _stage_by_user(read_profiles(p, raw_dir, spec, dead), _profile_user, layout, PROFILES)
    imps = read_impressions(p, raw_dir, spec, dead)
    _stage_by_user(imps, impression_user, layout, IMPRESSIONS)
    _ = split_cutoff(p, imps, spec, cfg) | "StageCutoff" >> beam.Map(
        lambda c: _write_json(None, layout.cutoff_file, cutoff=c))
    write_dead_letters(p, dead, out_dir, layout.output_prefix(None))


class AssembledShard(NamedTuple):
    """What the merge needs of an assemble pass, as PCollections of that pass's pipeline."""

    catalog: beam.PCollection  # (entity key, unified entity)
    train_counts: beam.PCollection  # (entity key, train count within the shard)
    catalog_less: beam.PCollection  # (entity key, default entity) of catalog-less types


class FinalizedShard(NamedTuple):
    """What the summary needs of a finalize pass, as PCollections of that pass's pipeline."""

    vocab_counts: beam.PCollection  # ((vocabulary, token), TRAIN count within the shard)
    split_stats: beam.PCollection  # one {(split, kind, value): n} of the shard


def _over_shards(p: beam.Pipeline, layout: Layout, name: str,
                 last: Optional[beam.PCollection]) -> beam.PCollection:
    """A per-shard staged collection over all shards: every shard's staged files, or (``last``
    given: the last shard's collection, made in this pipeline) the staged files of shards
    0..N-2 and ``last``. The last shard's own staged files are never read: this pipeline is
    still writing them."""
    if last is None:
        return p | f"Unstage[{name}]" >> _Unstage(layout.every_shard(name))
    staged = [p | f"Unstage[{name}-{i:03d}]" >> _Unstage(layout.pattern(name, i))
              for i in range(layout.num_shards - 1)]
    return tuple(staged) + (last,) | f"AllShards[{name}]" >> beam.Flatten()


def build_assemble_pass(p: beam.Pipeline, out_dir: str, layout: Layout, shard: int,
                        spec: DatasetSpec, cfg: PrepareConfig, cutoff: Optional[int],
                        row_header: Optional[List[str]]) -> AssembledShard:
    """Per-user assembly of one shard (entity join, sequences, label rule, split);
    ``row_header``: ``stages.impressions.impression_header`` of the raw folder."""
    dead: List[beam.PCollection] = []
    catalog = p | "Unstage[catalog]" >> _Unstage(layout.pattern(CATALOG))
    profiles = p | "Unstage[profiles]" >> _Unstage(layout.pattern(PROFILES, shard))
    imps = p | "Unstage[impressions]" >> _Unstage(layout.pattern(IMPRESSIONS, shard))
    fixed_cutoff = p | "FixedCutoff" >> beam.Create([cutoff])
    catalog_less, assembled = assemble_users(catalog, profiles, imps, fixed_cutoff, spec, cfg,
                                             dead, row_header)
    _ = assembled.examples | "Stage[examples]" >> _Stage(layout.prefix(EXAMPLES, shard))
    train_counts = assembled[TRAIN_COUNT] | "CountPerEntity" >> beam.CombinePerKey(sum)
    _ = train_counts | "Stage[train_counts]" >> _Stage(layout.prefix(TRAIN_COUNTS, shard))
    # Catalog entities are staged once (partition pass); only the defaults of catalog-less types
    # depend on the impressions a shard saw.
    _ = catalog_less | "Stage[catalog_less]" >> _Stage(layout.prefix(CATALOG_LESS, shard))
    outputs.write_user_snapshot(assembled[USER_SNAPSHOT], out_dir, layout.output_prefix(shard))
    write_dead_letters(p, dead, out_dir, layout.output_prefix(shard))
    return AssembledShard(catalog, train_counts, catalog_less)


class _Merge(beam.PTransform):
    """(catalog, catalog-less entities and train counts of all shards) → Q(a) on the summed
    counts; corpus/, entity_frequency.tsv; the entity features + Q(a) and ``merge.json``
    staged. A composite so that its labels do not meet those of a pass it is folded into."""

    def __init__(self, out_dir: str, layout: Layout, cfg: PrepareConfig):
        super().__init__()
        self._out_dir, self._layout, self._cfg = out_dir, layout, cfg

    def expand(self, pcolls):
        catalog, catalog_less, counts = pcolls
        p = catalog.pipeline
        catalog_less = (catalog_less | "GroupCatalogLess" >> beam.GroupByKey()
                        | "OneCopy" >> beam.MapTuple(_first_copy))
        corpus = (catalog, catalog_less) | "Corpus" >> beam.Flatten()
        per_entity, totals = entity_probabilities(p, corpus, counts, self._cfg)
        outputs.write_corpus(per_entity, self._out_dir, self._cfg)
        _ = per_entity.entities | "Stage[entities]" >> _Stage(self._layout.prefix(ENTITIES))
        corpus_types = corpus_type_counts(per_entity[CORPUS])
        merge_file = self._layout.merge_file
        return (p | "MergeSeed" >> beam.Create([None])
                | "StageMerge" >> beam.Map(
                    lambda _, t, c: _write_json(None, merge_file, totals=t, corpus_types=c),
                    pvalue.AsSingleton(totals), pvalue.AsSingleton(corpus_types)))


def build_merge_pass(p: beam.Pipeline, out_dir: str, layout: Layout, cfg: PrepareConfig,
                     last: Optional[AssembledShard] = None) -> None:
    """Corpus-sized: train counts summed over shards → Q(a); corpus/ and entity_frequency.tsv;
    the entity features + Q(a) staged for the finalize passes.

    ``last`` None: a pipeline of its own, reading every shard's train counts and catalog-less
    entities from staging. ``last`` given: folded into the last shard's assemble pass (the
    catalog and that shard's collections from this pipeline, shards 0..N-2 from staging)."""
    if last is None:
        catalog = p | "Unstage[catalog]" >> _Unstage(layout.pattern(CATALOG))
        catalog_less = _over_shards(p, layout, CATALOG_LESS, None)
        counts = _over_shards(p, layout, TRAIN_COUNTS, None)
    else:
        catalog = last.catalog
        catalog_less = _over_shards(p, layout, CATALOG_LESS, last.catalog_less)
        counts = _over_shards(p, layout, TRAIN_COUNTS, last.train_counts)
    _ = (catalog, catalog_less, counts) | "Merge" >> _Merge(out_dir, layout, cfg)


def build_assemble_and_merge_pass(p: beam.Pipeline, out_dir: str, layout: Layout,
                                  spec: DatasetSpec, cfg: PrepareConfig, cutoff: Optional[int],
                                  row_header: Optional[List[str]]) -> None:
    """The last shard's assemble pass with the merge in the same pipeline (one start-up less);
    shards 0..N-2 must be assembled."""
    last = build_assemble_pass(p, out_dir, layout, layout.num_shards - 1, spec, cfg, cutoff,
                               row_header)
    build_merge_pass(p, out_dir, layout, cfg, last)


def build_finalize_pass(p: beam.Pipeline, out_dir: str, layout: Layout, shard: int,
                        cfg: PrepareConfig) -> FinalizedShard:
    """One shard's examples → tf.Examples (entity features + Q(a) from a side input) → the
    write-order grouping within the shard → train/ and eval/; partial vocabulary counts and
    split statistics to staging."""
    entities = p | "Unstage[entities]" >> _Unstage(layout.pattern(ENTITIES))
    examples = p | "Unstage[examples]" >> _Unstage(layout.pattern(EXAMPLES, shard))
    final = finalize_examples(examples, entities, cfg)
    outputs.write_examples(final, out_dir, cfg, layout.output_prefix(shard))
    vocab_counts = final[VOCAB] | "VocabPartial" >> beam.CombinePerKey(sum)
    _ = vocab_counts | "Stage[vocab_counts]" >> _Stage(layout.prefix(VOCAB_COUNTS, shard))
    split_stats = final[STATS] | "StatsPartial" >> beam.CombineGlobally(CounterSum())
    _ = split_stats | "Stage[split_stats]" >> _Stage(layout.prefix(SPLIT_STATS, shard))
    return FinalizedShard(vocab_counts, split_stats)


class _Summarize(beam.PTransform):
    """(vocabulary counts and split stats of all shards) → vocab/*.txt (minimum frequency on
    the summed TRAIN counts) and stats.json. A composite like ``_Merge``."""

    def __init__(self, out_dir: str, spec: DatasetSpec, cfg: PrepareConfig,
                 cutoff: Optional[int], merged: Dict[str, Any]):
        super().__init__()
        self._out_dir, self._spec, self._cfg = out_dir, spec, cfg
        self._cutoff, self._merged = cutoff, merged

    def expand(self, pcolls):
        vocab_counts, split_stats = pcolls
        p = vocab_counts.pipeline
        outputs.write_vocabularies_and_stats(
            p, vocab_counts, split_stats,
            p | "CorpusTypes" >> beam.Create([self._merged["corpus_types"]]),
            p | "FixedCutoff" >> beam.Create([self._cutoff]),
            p | "Totals" >> beam.Create([self._merged["totals"]]),
            self._out_dir, self._spec, self._cfg)


def build_summary_pass(p: beam.Pipeline, out_dir: str, layout: Layout, spec: DatasetSpec,
                       cfg: PrepareConfig, cutoff: Optional[int], merged: Dict[str, Any],
                       last: Optional[FinalizedShard] = None) -> None:
    """vocab/*.txt and stats.json. ``last`` None: a pipeline of its own over every shard's
    staged counts; given: folded into the last shard's finalize pass (that shard's counts from
    this pipeline, shards 0..N-2 from staging)."""
    vocab_counts = _over_shards(p, layout, VOCAB_COUNTS, last and last.vocab_counts)
    split_stats = _over_shards(p, layout, SPLIT_STATS, last and last.split_stats)
    _ = (vocab_counts, split_stats) | "Summarize" >> _Summarize(out_dir, spec, cfg, cutoff,
                                                                merged)


def build_finalize_and_summary_pass(p: beam.Pipeline, out_dir: str, layout: Layout,
                                    spec: DatasetSpec, cfg: PrepareConfig,
                                    cutoff: Optional[int], merged: Dict[str, Any]) -> None:
    """The last shard's finalize pass with the summary in the same pipeline (one start-up
    less); shards 0..N-2 must be finalized."""
    last = build_finalize_pass(p, out_dir, layout, layout.num_shards - 1, cfg)
    build_summary_pass(p, out_dir, layout, spec, cfg, cutoff, merged, last)


def folds_for_free(num_shards: int, parallelism: int) -> bool:
    """Whether merge and summarize run folded into the last shard's passes.

    A folded pass needs the other N-1 shards' passes done, so it runs after them, alone. With
    one pass at a time that costs nothing and saves two start-ups. With ``parallelism`` P it
    costs nothing when the N-1 other shards fill whole rounds of P ((N-1) mod P = 0); otherwise
    the last shard would have run in the pool beside others, and folding would add one
    shard-sized round to save a start-up, so merge and summarize stay pipelines of their own.
    """
    return (num_shards - 1) % max(1, min(parallelism, num_shards)) == 0


# --------------------------------------------------------------------------------------------
# Running.

def _read_json(path: str) -> Dict[str, Any]:
    return json.loads(fileio.read_text(path))


def _remove_staging(root: str) -> None:
    """Deletes the staging folder, locally or on an object store. A failure is logged, not
    raised: it must not hide the error of a failed pass, and a leftover folder is harmless (no
    reader looks into it; a local work dir is deleted or renamed as a whole anyway)."""
    try:
        delete_folder(root)
    except Exception as e:  # pylint: disable=broad-except
        log.warning("could not delete the staging folder %s: %s", root, e)


class _PassRunner:
    """Runs the passes: one at a time in this process, or ``parallelism`` > 1 per-shard passes
    at once, each in a process of a pool (``beam_pipelines/runner.py``: the local runner's
    parallelism is one-worker pipelines side by side, never Beam's multi-worker path). Sums
    the counters and logs a progress line per pass."""

    def __init__(self, beam_args: Optional[List[str]], verbose: bool, parallelism: int,
                 total: int):
        self._beam_args, self._verbose, self._total = beam_args, verbose, total
        self.counters: Dict[str, int] = collections.Counter()
        self._done = 0
        self._pool = None
        if parallelism > 1:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=parallelism, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_pass_process, initargs=(verbose,))

    def _finished(self, name: str, counts: Dict[str, int], seconds: float) -> None:
        self.counters.update(counts)
        self._done += 1
        log.info("user shards: pass %d/%d (%s) done in %.1fs", self._done, self._total, name,
                 seconds)

    def run(self, name: str, build: Callable[..., None], *args) -> None:
        """One pass, in this process."""
        start = time.time()
        counts = runner.run_pipeline(build, self._beam_args, *args, verbose=self._verbose)
        self._finished(name, counts, time.time() - start)

    def run_all(self, passes: List[tuple]) -> None:
        """``(name, build, *args)`` passes that do not depend on each other: in the pool when
        there is one. The first failure is raised once every submitted pass has ended."""
        if self._pool is None:
            for name, build, *args in passes:
                self.run(name, build, *args)
            return
        start = time.time()
        futures = {self._pool.submit(_run_pass, build, self._beam_args, self._verbose, args):
                   name for name, build, *args in passes}
        errors = []
        for future in concurrent.futures.as_completed(futures):
            try:
                self._finished(futures[future], future.result(), time.time() - start)
            except Exception as e:  # pylint: disable=broad-except
                errors.append(e)
        if errors:
            raise errors[0]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _init_pass_process(verbose: bool) -> None:
    """A pool process logs like the command that started it: Beam at ERROR unless verbose
    (the ``NullHandler`` keeps Beam's import-time ``logging.warning`` from installing a stderr
    handler; see beam_pipelines/local_worker.py)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if verbose:
        logging.basicConfig(level=logging.INFO)
    else:
        logging.getLogger().addHandler(logging.NullHandler())
        logging.getLogger("apache_beam").setLevel(logging.ERROR)


def _run_pass(build: Callable[..., None], beam_args: Optional[List[str]], verbose: bool,
              args: tuple) -> Dict[str, int]:
    return runner.run_pipeline(build, beam_args, *args, verbose=verbose)


def pass_count(num_shards: int, parallelism: int = 1) -> int:
    """How many pipelines :func:`run_passes` runs: 2N + 1 folded, else 2N + 3."""
    return 2 * num_shards + (1 if folds_for_free(num_shards, parallelism) else 3)


def run_passes(raw_dir: str, work_dir: str, spec: DatasetSpec, cfg: PrepareConfig,
               beam_args: Optional[List[str]] = None, verbose: bool = False,
               parallelism: int = 1) -> Dict[str, int]:
    """Runs the 2N + 1 pipelines of the sharded link into ``work_dir`` (2N + 3 when merge and
    summarize do not fold for free, :func:`folds_for_free`), the per-shard passes
    ``parallelism`` at a time; returns the sum of their counters (what one pass would have
    counted). The staging folder is removed at the end, also when a pass fails."""
    n = cfg.user_shards
    layout = Layout(fileio.join(work_dir, STAGING_DIR), n)
    fold = folds_for_free(n, parallelism)
    pooled = n - 1 if fold else n  # the per-shard passes that may run side by side
    passes = _PassRunner(beam_args, verbose, min(parallelism, pooled),
                         pass_count(n, parallelism))
    _remove_staging(layout.root)  # an in-place (gs://) run may find a failed run's leftovers
    try:
        passes.run("partition", build_partition_pass, raw_dir, work_dir, layout, spec, cfg)
        cutoff = _read_json(layout.cutoff_file)["cutoff"]
        row_header = impression_header(raw_dir, spec)
        passes.run_all([(f"assemble {i + 1}/{n}", build_assemble_pass, work_dir, layout, i,
                         spec, cfg, cutoff, row_header) for i in range(pooled)])
        if fold:
            passes.run(f"assemble {n}/{n} + merge", build_assemble_and_merge_pass, work_dir,
                       layout, spec, cfg, cutoff, row_header)
        else:
            passes.run("merge", build_merge_pass, work_dir, layout, cfg)
        merged = _read_json(layout.merge_file)
        passes.run_all([(f"finalize {i + 1}/{n}", build_finalize_pass, work_dir, layout, i, cfg)
                        for i in range(pooled)])
        if fold:
            passes.run(f"finalize {n}/{n} + summarize", build_finalize_and_summary_pass,
                       work_dir, layout, spec, cfg, cutoff, merged)
        else:
            passes.run("summarize", build_summary_pass, work_dir, layout, spec, cfg, cutoff,
                       merged)
    finally:
        passes.close()
        _remove_staging(layout.root)
    return dict(passes.counters)
