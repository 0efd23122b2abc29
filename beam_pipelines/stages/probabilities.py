"""Per entity (corpus-sized): train counts → the sampling probability Q(a) of logQ (Eq. 2)."""

from __future__ import annotations

import apache_beam as beam
from apache_beam import pvalue

from beam_pipelines import transforms
from beam_pipelines.config import PrepareConfig
from beam_pipelines.tags import CORPUS, FREQUENCY


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
