"""The split point between train and eval examples.

An explicit ``cutoff_timestamp``; none for the per-user split (``split: per_user``, applied
in the per-user assembly); otherwise, for timestamped impressions, the
``(1 - eval_fraction)`` quantile of their timestamps (Beam's approximate quantile); without
timestamps none, and the per-user assembly applies the seeded random split
(``transforms.SplitRule``).
"""

from __future__ import annotations

import apache_beam as beam

from beam_pipelines.config import PrepareConfig
from beam_pipelines.stages.impressions import TIMESTAMP_INDEX
from tfrrl.data.link_spec import DatasetSpec


def uses_quantile_cutoff(spec: DatasetSpec, cfg: PrepareConfig) -> bool:
    """A time split without an explicit cutoff: the cutoff is computed from the data."""
    return (cfg.split == "time" and cfg.cutoff_timestamp is None
            and bool(spec.impressions.column("timestamp")))


def split_cutoff(p: beam.Pipeline, imps: beam.PCollection, spec: DatasetSpec,
                 cfg: PrepareConfig) -> beam.PCollection:
    """The split point (one element): ``cutoff_timestamp``, None for data without time, or
    the (1 - eval_fraction) quantile of the parsed impressions' timestamps."""
    if not uses_quantile_cutoff(spec, cfg):
        return p | "FixedCutoff" >> beam.Create([cfg.cutoff_timestamp])
    res = cfg.quantile_resolution
    index = round((1.0 - cfg.eval_fraction) * res)
    return (imps
            | "Timestamps" >> beam.Map(lambda imp: imp[TIMESTAMP_INDEX])
            | "Quantiles" >> beam.ApproximateQuantiles.Globally(res + 1)
            | "PickCutoff" >> beam.Map(lambda qs: qs[index] if qs else None))
