"""Carried examples + their entity's features and Q(a) → serialized tf.Examples, one write
bucket at a time.

The examples arrive compact (packed carried values) in (split, write bucket) batches from the
per-user assembly (``stages/shuffle.py``); they are grouped by bucket, and each bucket leaves
as ONE framed TFRecord block in write order (``tfrecord_blocks.py``). The entity features and
Q(a) come from a corpus-sized side input, so no example crosses a per-entity shuffle, and the
runner's per-element cost is paid per bucket, not per example.
"""

from __future__ import annotations

import collections
from typing import Any, Mapping

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.transforms.window import GlobalWindows

from beam_pipelines import counters, encoding, packed, transforms
from beam_pipelines.config import PrepareConfig
from beam_pipelines.stages.shuffle import in_write_order
from beam_pipelines.tags import STATS, VOCAB
from beam_pipelines.tfrecord_blocks import frame_records
from tfrrl.data import schema

SPLITS = (transforms.TRAIN, transforms.EVAL)


class BundleTally:
    """The split statistics and TRAIN vocabulary counts of a bundle's examples, counted once per
    example as two keys instead of token by token: the TRAIN examples per entity key (its
    vocabulary tokens are the same for every example of the key) and per value of the other
    vocabulary fields (the user's profile and the domain: few distinct values per bundle);
    expanded into tokens at the end. The same counts as summing ``transforms.vocabulary_tokens``
    over the TRAIN examples (``tests/test_finalize_tally.py``)."""

    def __init__(self):
        self._entity_fields, self._other_fields = transforms.vocabulary_fields_by_source()
        self._splits = collections.Counter()  # (split, domain, entity_type) → examples
        self._train_per_entity = collections.Counter()  # entity key → TRAIN examples
        self._entity_tokens = {}  # entity key → its values of the entity vocabulary fields
        self._train_per_other = collections.Counter()  # other field values → TRAIN examples

    def add(self, split_name: str, example: Mapping[str, Any],
            entity: Mapping[str, Any]) -> None:
        """One example: its per-user values and ``entity_id`` (``example``) and its entity's
        features (``entity``: :func:`transforms.entity_part`, the same for every example of
        the entity key)."""
        self._splits[(split_name, example["domain"], entity["entity_type"])] += 1
        if split_name != transforms.TRAIN:
            return
        key = example["entity_id"]
        self._train_per_entity[key] += 1
        if key not in self._entity_tokens:
            values = dict(entity, entity_id=key)
            self._entity_tokens[key] = tuple(values[f] for f, _ in self._entity_fields)
        self._train_per_other[tuple(example[f] for f, _ in self._other_fields)] += 1

    def written(self, split_name: str) -> int:
        return sum(n for (s, _, _), n in self._splits.items() if s == split_name)

    def stats(self) -> collections.Counter:
        """``(split, kind, value)`` → examples, kinds ``domain``, ``entity_type``, ``total``
        (``stages/stats.py``)."""
        out = collections.Counter()
        for (split_name, domain, entity_type), n in self._splits.items():
            out[(split_name, "domain", domain)] += n
            out[(split_name, "entity_type", entity_type)] += n
            out[(split_name, "total", "")] += n
        return out

    def vocabulary(self) -> collections.Counter:
        """``(vocabulary, token)`` → TRAIN count, the default token left out."""
        out = collections.Counter()
        for fields, per_values, values_of in (
                (self._entity_fields, self._train_per_entity, self._entity_tokens.__getitem__),
                (self._other_fields, self._train_per_other, lambda values: values)):
            for group, n in per_values.items():
                for (_, vocabulary), token in zip(fields, values_of(group)):
                    if token != schema.DEFAULT_TOKEN:
                        out[(vocabulary, token)] += n
        return out


class _FinalizeBucket(beam.DoFn):
    """One write bucket of one split: its packed carried examples + each one's entity features
    and Q(a) (a side input) → the serialized tf.Examples in write order, framed as ONE
    TFRecord block on the split's output. The entity's map entries (E_aid, E_a, E_ac) are
    encoded once per entity and bundle (``encoding.entity_entries``) and appended to each of
    its examples as is.

    The split statistics and the TRAIN vocabulary counts are summed per bundle
    (:class:`BundleTally`) and emitted in ``finish_bundle`` (``STATS``, ``VOCAB``): one element
    per distinct token instead of one per token occurrence. ``impressions/written/<split>``
    counts the examples of the bundle.
    """

    def __init__(self, sequence_length: int):
        self._L = sequence_length
        self._fields = transforms.carried_example_fields(sequence_length)

    def setup(self):
        self._encode = encoding.example_encoder(self._L, pre_encoded_sequences=True,
                                                pre_encoded_entity=True)
        self._encode_whole = encoding.example_encoder(self._L, pre_encoded_sequences=True)

    def start_bundle(self):
        self._tally = BundleTally()
        # entity key → (its transforms.entity_part, Q(a), its encoding.entity_entries or None)
        self._entity_values = {}

    def _entity(self, key, entities):
        """Once per entity and bundle: its features, Q(a) and the pre-encoded entity block
        (None for an entity whose values the fast path does not take)."""
        entity, prob = entities[key]
        part = transforms.entity_part(entity)
        try:
            block = encoding.entity_entries(dict(part, entity_id=key))
        except encoding.FAST_PATH_ERRORS:
            block = None
        values = self._entity_values[key] = (part, prob, block)
        return values

    def process(self, bucket, entities):
        (split_name, _), batches = bucket
        records = []
        fields = self._fields
        for value in in_write_order(batches):
            carried = packed.unpack(value)
            key = carried[-1]
            part, prob, block = self._entity_values.get(key) or self._entity(key, entities)
            example = dict(zip(fields, carried))
            self._tally.add(split_name, example, part)
            if block is not None:
                example[encoding.ENTITY_ENTRIES] = block
                example["sampling_prob"] = prob
                records.append(self._encode(example))
            else:
                records.append(self._encode_whole(
                    transforms.complete_example(carried, fields, part, prob)))
        yield pvalue.TaggedOutput(split_name, frame_records(records))

    def finish_bundle(self):
        for split_name in SPLITS:
            counters.counter(counters.written_name(split_name)).inc(
                self._tally.written(split_name))
        for token, n in self._tally.vocabulary().items():
            yield pvalue.TaggedOutput(VOCAB, GlobalWindows.windowed_value((token, n)))
        stats = self._tally.stats()
        if stats:
            yield pvalue.TaggedOutput(STATS, GlobalWindows.windowed_value(stats))


def finalize_examples(examples: beam.PCollection, entities: beam.PCollection,
                      cfg: PrepareConfig):
    """Carried examples in (split, write bucket) batches (``stages.shuffle.BucketBatch``) +
    entity features and Q(a) (``entities``: ``(key, (entity, Q))``, a side input) → one framed
    TFRecord block per bucket on the outputs TRAIN and EVAL (write them with
    ``tfrecord_blocks.WriteTFRecordBlocks``), TRAIN vocabulary counts on ``VOCAB`` and split
    statistics on ``STATS``."""
    return (examples
            | "GroupBuckets" >> beam.GroupByKey()
            | "Finalize" >> beam.ParDo(_FinalizeBucket(cfg.sequence_length),
                                       entities=pvalue.AsDict(entities))
            .with_outputs(transforms.TRAIN, transforms.EVAL, VOCAB, STATS))
