"""Carried examples + their entity's features and Q(a) → serialized tf.Examples.

The entity features and Q(a) come from a corpus-sized side input, so no example crosses a
per-entity shuffle. Examples arrive one user at a time (``stages/assembly.py``) and leave in
hash-bucket batches for the write-order shuffle (``stages/shuffle.py``): the runner's
per-element cost is paid per user and per batch, not per example.
"""

from __future__ import annotations

import collections

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.transforms.window import GlobalWindows

from beam_pipelines import counters, encoding, transforms
from beam_pipelines.config import PrepareConfig
from beam_pipelines.stages.shuffle import BucketBatcher
from beam_pipelines.tags import STATS, VOCAB

SPLITS = (transforms.TRAIN, transforms.EVAL)


class _FinalizeExamples(beam.DoFn):
    """A user's carried examples + each one's entity features and Q(a) (a side input) → the
    serialized tf.Examples, in hash-bucket batches on the split's output.

    The split statistics and the TRAIN vocabulary counts are summed per bundle and emitted in
    ``finish_bundle`` (``STATS``, ``VOCAB``): one element per distinct token instead of one per
    token occurrence. ``impressions/written/<split>`` counts the examples of the bundle.
    """

    def __init__(self, sequence_length: int, shuffle_buckets: int):
        self._L = sequence_length
        self._buckets = shuffle_buckets
        self._fields = transforms.carried_example_fields(sequence_length)

    def setup(self):
        self._encode = encoding.example_encoder(self._L)

    def start_bundle(self):
        self._stats = collections.Counter()
        self._vocab = collections.Counter()
        self._batchers = {s: BucketBatcher(self._buckets) for s in SPLITS}

    def process(self, user_examples, entities):
        for split_name, carried in user_examples:
            entity, prob = entities[carried[-1]]
            example = transforms.complete_example(carried, self._fields, entity, prob)
            self._stats[(split_name, "domain", example["domain"])] += 1
            self._stats[(split_name, "entity_type", example["entity_type"])] += 1
            self._stats[(split_name, "total", "")] += 1
            if split_name == transforms.TRAIN:
                self._vocab.update(transforms.vocabulary_tokens(example))
            for batch in self._batchers[split_name].add(self._encode(example)):
                yield pvalue.TaggedOutput(split_name, batch)

    def finish_bundle(self):
        for split_name in SPLITS:
            counters.counter(counters.written_name(split_name)).inc(
                self._stats[(split_name, "total", "")])
            for batch in self._batchers[split_name].flush():
                yield pvalue.TaggedOutput(split_name, GlobalWindows.windowed_value(batch))
        for token, n in self._vocab.items():
            yield pvalue.TaggedOutput(VOCAB, GlobalWindows.windowed_value((token, n)))
        if self._stats:
            yield pvalue.TaggedOutput(STATS, GlobalWindows.windowed_value(self._stats))


def finalize_examples(examples: beam.PCollection, entities: beam.PCollection,
                      cfg: PrepareConfig):
    """Carried examples, one list per user (``(split, carried values)`` pairs), + entity
    features and Q(a) (``entities``: ``(key, (entity, Q))``, a side input) → serialized
    tf.Examples as hash-bucket batches (``stages.shuffle.BucketBatch``) on the outputs TRAIN and
    EVAL, TRAIN vocabulary counts on ``VOCAB`` and split statistics on ``STATS``."""
    return (examples
            | "Finalize" >> beam.ParDo(_FinalizeExamples(cfg.sequence_length, cfg.shuffle_buckets),
                                       entities=pvalue.AsDict(entities))
            .with_outputs(transforms.TRAIN, transforms.EVAL, VOCAB, STATS))
