"""The dataset's files (layout: ``tfrrl/artifacts/prepared.py``): ``train/`` and ``eval/``
TFRecords in the write order of ``stages/shuffle.py``, ``corpus/`` and
``entity_frequency.tsv``, ``user_snapshot/``, and ``vocab/*.txt`` with ``stats.json``.

A ``prefix`` names a writer's files (``<prefix>-*``): the sharded mode gives each shard its own,
so the shards' files coexist in one folder.
"""

from __future__ import annotations

import apache_beam as beam

from beam_pipelines import encoding, transforms
from beam_pipelines.config import PrepareConfig
from beam_pipelines.stages import stats, vocabulary
from beam_pipelines.tfrecord_blocks import WriteTFRecordBlocks
from beam_pipelines.tags import CORPUS, FREQUENCY
from tfrrl.artifacts import prepared
from tfrrl.data import fileio
from tfrrl.data.link_spec import DatasetSpec


def write_examples(final, out_dir: str, cfg: PrepareConfig, prefix: str = "part") -> None:
    """The framed write buckets ``final[TRAIN]`` / ``final[EVAL]`` (``stages/finalize.py``, in
    the write order of ``stages/shuffle.py``) → ``train/`` and ``eval/`` TFRecords named
    ``<prefix>-*``, one block at a time (``tfrecord_blocks.py``)."""
    for split_name, folder in ((transforms.TRAIN, prepared.TRAIN_DIR),
                               (transforms.EVAL, prepared.EVAL_DIR)):
        _ = final[split_name] | f"Write[{split_name}]" >> WriteTFRecordBlocks(
            fileio.join(out_dir, folder, prefix), file_name_suffix=prepared.RECORD_SUFFIX,
            num_shards=cfg.num_shards)


def write_corpus(per_entity, out_dir: str, cfg: PrepareConfig) -> None:
    """``corpus/`` TFRecords and ``entity_frequency.tsv``."""
    (per_entity[CORPUS]
     | "EncodeCorpus" >> beam.Map(encoding.encode_entity)
     | "WriteCorpus" >> beam.io.WriteToTFRecord(
         fileio.join(out_dir, prepared.CORPUS_DIR, "part"),
         file_name_suffix=prepared.RECORD_SUFFIX, num_shards=cfg.num_shards))
    (per_entity[FREQUENCY]
     | "WriteFrequency" >> beam.io.WriteToText(
         fileio.join(out_dir, prepared.FREQUENCY_FILE), shard_name_template="", num_shards=1,
         header="entity_id\ttrain_count\tsampling_prob"))


def write_user_snapshot(snapshots: beam.PCollection, out_dir: str,
                        prefix: str = "part") -> None:
    """The serving-time user features (profile + last L exposures), one JSON line per user: the
    matching service's user-feature store is built from them (tfrrl_serving/user_store.py)."""
    (snapshots
     | "WriteUserSnapshot" >> beam.io.WriteToText(
         fileio.join(out_dir, prepared.USER_SNAPSHOT_DIR, prefix), file_name_suffix=".jsonl"))


def write_vocabularies_and_stats(p: beam.Pipeline, vocab_counts: beam.PCollection,
                                 split_stats: beam.PCollection, corpus_types: beam.PCollection,
                                 cutoff: beam.PCollection, totals: beam.PCollection,
                                 out_dir: str, spec: DatasetSpec, cfg: PrepareConfig) -> None:
    """``vocab/*.txt`` and ``stats.json`` (which reports the vocabulary sizes).

    ``vocab_counts``: ``((vocabulary, token), n)`` TRAIN counts, partial sums allowed (the
    minimum frequency applies to their total); ``split_stats``: Counters per (split, kind,
    value), partial sums allowed; ``corpus_types``, ``cutoff``, ``totals``: one element each.
    """
    vocab_sizes = vocabulary.write_vocabularies(p, vocab_counts, out_dir, cfg)
    stats.write_stats(p, split_stats, corpus_types, vocab_sizes, cutoff, totals, out_dir, spec,
                      cfg)
