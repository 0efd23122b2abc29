"""The one-pass mode: the whole link as ONE Beam pipeline (``PrepareConfig.user_shards`` = 1).

raw impressions + one catalog per entity type + user profiles
  → unified entity records (aligned fields; linked content takes its product's features;
    explicit defaults) → impressions joined with entities and user profiles → per-user exposure
    sequences strictly before each timestamp → time (or seeded random) split →
  ``train/`` and ``eval/`` TFRecords, the entity corpus ``corpus/``, ``vocab/*.txt``,
  ``entity_frequency.tsv``, ``user_snapshot/``, ``stats.json`` and ``dead_letter/*.jsonl``.

Shuffles: catalog dedupe, link resolution, per-user assembly, the per-entity join of train
counts that gives the logQ sampling probability (Eq. 2), and the write-order grouping — each a
CoGroupByKey/GroupByKey, so the same code scales out on Dataflow. The impression × entity join
and the examples' entity features read the corpus-sized catalog as a side input.
The pieces are the modules of ``beam_pipelines/stages``.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import apache_beam as beam

from beam_pipelines import runner
from beam_pipelines.config import PrepareConfig
from beam_pipelines.dead_letters import write_dead_letters
from beam_pipelines.stages import outputs
from beam_pipelines.stages.assembly import assemble_users
from beam_pipelines.stages.catalog import read_catalog
from beam_pipelines.stages.finalize import finalize_examples
from beam_pipelines.stages.impressions import impression_header, read_impressions
from beam_pipelines.stages.probabilities import entity_probabilities
from beam_pipelines.stages.profiles import read_profiles
from beam_pipelines.stages.split import split_cutoff
from beam_pipelines.stages.stats import corpus_type_counts
from beam_pipelines.tags import CORPUS, STATS, TRAIN_COUNT, USER_SNAPSHOT, VOCAB
from tfrrl.data.link_spec import DatasetSpec


def build_pipeline(p: beam.Pipeline, raw_dir: str, out_dir: str, spec: DatasetSpec,
                   cfg: PrepareConfig) -> None:
    """Adds the whole link to pipeline ``p``."""
    dead: List[beam.PCollection] = []
    catalog = read_catalog(p, raw_dir, spec, dead)
    profiles = read_profiles(p, raw_dir, spec, dead)
    imps = read_impressions(p, raw_dir, spec, dead)
    cutoff = split_cutoff(p, imps, spec, cfg)
    catalog_less, assembled = assemble_users(catalog, profiles, imps, cutoff, spec, cfg, dead,
                                             impression_header(raw_dir, spec))
    corpus = (catalog, catalog_less) | "CorpusEntities" >> beam.Flatten()
    # The entity features + Q(a) that every example of the entity takes come from a
    # corpus-sized side input, so no example crosses a per-entity shuffle.
    per_entity, totals = entity_probabilities(p, corpus, assembled[TRAIN_COUNT], cfg)
    final = finalize_examples(assembled.examples, per_entity.entities, cfg)

    outputs.write_examples(final, out_dir, cfg)
    outputs.write_corpus(per_entity, out_dir, cfg)
    outputs.write_user_snapshot(assembled[USER_SNAPSHOT], out_dir)
    write_dead_letters(p, dead, out_dir)
    outputs.write_vocabularies_and_stats(p, final[VOCAB], final[STATS],
                                         corpus_type_counts(per_entity[CORPUS]), cutoff, totals,
                                         out_dir, spec, cfg)


def run_one_pass(raw_dir: str, work_dir: str, spec: DatasetSpec, cfg: PrepareConfig,
                 beam_args: Optional[List[str]], verbose: bool = False) -> Dict[str, int]:
    """Runs the link as one pipeline into ``work_dir``; returns its counters."""
    return runner.run_pipeline(build_pipeline, beam_args, raw_dir, work_dir, spec, cfg,
                               verbose=verbose)
