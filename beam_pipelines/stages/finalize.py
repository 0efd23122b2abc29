"""Carried examples + their entity's features and Q(a) → serialized tf.Examples.

The entity features and Q(a) come from a corpus-sized side input, so no example crosses a
per-entity shuffle.
"""

from __future__ import annotations

import collections

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.transforms.window import GlobalWindows

from beam_pipelines import counters, transforms
from beam_pipelines.config import PrepareConfig
from beam_pipelines.tags import STATS, VOCAB
from tfrrl.data import schema


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
            counters.counter(counters.written_name(split_name)).inc(
                self._stats[(split_name, "total", "")])
        for token, n in self._vocab.items():
            yield pvalue.TaggedOutput(VOCAB, GlobalWindows.windowed_value((token, n)))
        if self._stats:
            yield pvalue.TaggedOutput(STATS, GlobalWindows.windowed_value(self._stats))


def finalize_examples(examples: beam.PCollection, entities: beam.PCollection,
                      cfg: PrepareConfig):
    """Carried examples + entity features and Q(a) (``entities``: ``(key, (entity, Q))``, a
    side input) → serialized tf.Examples on the outputs TRAIN and EVAL, TRAIN vocabulary
    counts on ``VOCAB`` and split statistics on ``STATS``."""
    return (examples
            | "Finalize" >> beam.ParDo(_FinalizeExamples(cfg.sequence_length),
                                       entities=pvalue.AsDict(entities))
            .with_outputs(transforms.TRAIN, transforms.EVAL, VOCAB, STATS))
