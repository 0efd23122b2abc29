"""Running one Beam pipeline of the link: its options and its counters."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from beam_pipelines import counters


def default_pipeline_options(beam_args: Optional[List[str]] = None) -> PipelineOptions:
    """DirectRunner in multi-processing mode unless flags say otherwise.

    One worker process by default: with ``--direct_num_workers=2`` Beam 2.77's local runner
    wrote fewer examples than it read (see benchmarks/RESULTS.md, "Beam link memory"). The row
    accounting catches it and the job fails, but parallel runs belong on a distributed runner
    (Dataflow, Flink, Spark) until that is understood.

    Any standard Beam flag passes through, e.g. ``--runner=DataflowRunner --project=P
    --region=R --temp_location=gs://B/tmp --setup_file=./setup.py``.
    """
    options = PipelineOptions(beam_args or [])
    std = options.view_as(StandardOptions)
    if std.runner is None:
        std.runner = "DirectRunner"
    if std.runner in ("DirectRunner", "direct"):
        direct = options.view_as(DirectOptions)
        if "--direct_running_mode" not in " ".join(beam_args or []):
            direct.direct_running_mode = "multi_processing"
    if "--default_sdk_harness_log_level" not in " ".join(beam_args or []):
        # Worker processes log every bundle at INFO; keep the CLI output readable.
        options = PipelineOptions((beam_args or []) + ["--default_sdk_harness_log_level=WARNING"],
                                  **options.get_all_options(drop_default=True))
    return options


def run_pipeline(build: Callable[..., None], beam_args: Optional[List[str]],
                 *args) -> Dict[str, int]:
    """Builds a pipeline with ``build(p, *args)``, runs it to the end; returns its counters."""
    p = beam.Pipeline(options=default_pipeline_options(beam_args))
    build(p, *args)
    result = p.run()
    result.wait_until_finish()
    return counters.pipeline_counters(result)
