"""``stats.json``: split sizes per domain and entity type, corpus, vocabularies, split rule and
the logQ sampling-probability formula (Eq. 2)."""

from __future__ import annotations

import collections
import json
from typing import Any, Dict, Mapping, Optional, Tuple

import apache_beam as beam
from apache_beam import pvalue

from beam_pipelines.config import PrepareConfig
from tfrrl.artifacts import prepared
from tfrrl.data import fileio
from tfrrl.data.link_spec import DatasetSpec

SplitStats = Mapping[Tuple[str, str, str], int]  # (split, kind, value) → examples


def split_summary(cfg: PrepareConfig, cutoff: Optional[int]) -> Dict[str, Any]:
    """How TRAIN and EVAL were split, for ``stats.json``: a global time cutoff, the per-user
    split (each user's last ``eval_fraction`` of timestamped exposures; untimed rows random)
    or the seeded random split."""
    if cfg.split == "per_user":
        return {"kind": "per_user_time", "eval_fraction": cfg.eval_fraction, "seed": cfg.seed}
    if cutoff is not None:
        return {"kind": "time", "cutoff_timestamp": cutoff}
    return {"kind": "random", "eval_fraction": cfg.eval_fraction, "seed": cfg.seed}


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


def corpus_type_counts(corpus_records: beam.PCollection) -> beam.PCollection:
    """One dict ``{entity type: corpus entities}`` from the corpus records."""
    return (corpus_records | "CorpusType" >> beam.Map(lambda r: r["entity_type"])
            | "CorpusTypeCount" >> beam.combiners.Count.PerElement()
            | "CorpusTypeDict" >> beam.combiners.ToDict())


def stats_document(spec: DatasetSpec, cfg: PrepareConfig, split_stats: SplitStats,
                   corpus_types: Mapping[str, int], vocab_sizes: Mapping[str, int],
                   cutoff: Optional[int], totals: Mapping[str, Any]) -> Dict[str, Any]:
    """The content of ``stats.json``; ``totals``: ``{"train", "corpus", "smoothing"}``."""
    by = collections.defaultdict(dict)
    for (split_name, kind, value), n in sorted(split_stats.items()):
        by[f"{split_name}_{kind}"][value] = n
    domains = sorted(by.get("train_domain", {}))
    return {
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
        "split": split_summary(cfg, cutoff),
        "sampling_probability": {
            "file": prepared.FREQUENCY_FILE,
            "formula": "(train_count + s) / (num_train + s * corpus_size)",
            "smoothing": cfg.logq_smoothing,
        },
        "sequence_length": cfg.sequence_length,
        "min_frequency": cfg.min_frequency,
        "label": spec.label,
    }


def write_stats_file(out_dir: str, stats: Mapping[str, Any]) -> None:
    fileio.write_text(fileio.join(out_dir, prepared.STATS_FILE),
                      json.dumps(stats, indent=2) + "\n")


def _write_stats(_, out_dir: str, spec: DatasetSpec, cfg: PrepareConfig, split_stats,
                 corpus_types, vocab_sizes, cutoff, totals) -> None:
    write_stats_file(out_dir, stats_document(spec, cfg, split_stats, corpus_types, vocab_sizes,
                                             cutoff, totals))


def write_stats(p: beam.Pipeline, split_stats: beam.PCollection,
                corpus_types: beam.PCollection, vocab_sizes: beam.PCollection,
                cutoff: beam.PCollection, totals: beam.PCollection, out_dir: str,
                spec: DatasetSpec, cfg: PrepareConfig) -> None:
    """``stats.json``. ``split_stats``: Counters per (split, kind, value), partial sums
    allowed; ``corpus_types``, ``vocab_sizes``, ``cutoff``, ``totals``: one element each."""
    split_stats = split_stats | "SplitStats" >> beam.CombineGlobally(CounterSum())
    (p | "StatsSeed" >> beam.Create([None])
     | "WriteStats" >> beam.Map(
         _write_stats, out_dir, spec, cfg,
         pvalue.AsSingleton(split_stats), pvalue.AsSingleton(corpus_types),
         pvalue.AsSingleton(vocab_sizes), pvalue.AsSingleton(cutoff),
         pvalue.AsSingleton(totals)))
