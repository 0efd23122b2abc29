"""TRAIN token counts → ``vocab/<vocabulary>.txt`` (id layout: 0 pad, 1 OOV, 2 default, 3…).

Vocabularies come from the TRAIN split only, so no eval id leaks into the model's tables.
"""

from __future__ import annotations

from typing import Dict, Iterable, Iterator, Mapping, Tuple

import apache_beam as beam

from beam_pipelines import transforms
from beam_pipelines.config import PrepareConfig
from tfrrl.artifacts import prepared
from tfrrl.data import fileio, schema


def vocabulary_min_frequency(cfg: PrepareConfig) -> Dict[str, int]:
    """The minimum TRAIN count of a token, per vocabulary."""
    # Domains and entity types must never be OOV: they index gates, towers and reports.
    return {v: (1 if v in ("domain", "entity_type") else cfg.min_frequency)
            for v in schema.vocabulary_names(cfg.sequence_length)}


def write_vocabulary_file(out_dir: str, name: str, tokens: Iterable[str]) -> None:
    """One token per line (a newline inside a token becomes a space)."""
    fileio.write_text(fileio.join(out_dir, prepared.VOCAB_DIR, f"{name}.txt"),
                      "".join(t.replace("\n", " ") + "\n" for t in tokens))


def _write_vocabulary(element: Tuple[str, Iterable[Tuple[str, int]]], out_dir: str,
                      min_frequency: Mapping[str, int]) -> Iterator[Tuple[str, int]]:
    name, counts = element
    tokens = transforms.build_vocabulary(counts, min_frequency[name])
    write_vocabulary_file(out_dir, name, tokens)
    yield name, len(tokens)


def write_vocabularies(p: beam.Pipeline, vocab_counts: beam.PCollection, out_dir: str,
                       cfg: PrepareConfig) -> beam.PCollection:
    """``vocab/*.txt``; returns one dict ``{vocabulary: size}``.

    ``vocab_counts``: ``((vocabulary, token), n)`` TRAIN counts, partial sums allowed (the
    minimum frequency applies to their total).
    """
    min_freq = vocabulary_min_frequency(cfg)
    vocab_sizes = (vocab_counts
                   | "VocabCount" >> beam.CombinePerKey(sum)
                   | "VocabByName" >> beam.Map(lambda kv: (kv[0][0], (kv[0][1], kv[1]))))
    # Every vocabulary file exists, even one whose feature is all defaults.
    vocab_seed = p | "VocabSeed" >> beam.Create(
        [(name, (schema.DEFAULT_TOKEN, 0)) for name in min_freq])
    return ((vocab_sizes, vocab_seed) | "VocabWithSeed" >> beam.Flatten()
            | "VocabGroup" >> beam.GroupByKey()
            | "WriteVocab" >> beam.FlatMap(_write_vocabulary, out_dir, min_freq)
            | "VocabSizes" >> beam.combiners.ToDict())
