"""Running one Beam pipeline of the link: its options, the local runner, and its counters.

The local runner (no ``--runner``, or ``DirectRunner``) is Beam's FnApiRunner with ONE worker:

* in one process (``--direct_running_mode=in_memory``) unless the flags ask for
  ``multi_processing`` (one SDK worker subprocess) or ``multi_threading``. One process was the
  fastest on the synthetic benchmark (benchmarks/RESULTS.md, "Beam link speed") and starts no
  worker process, so nothing of a worker's start-up reaches the terminal;
* with one worker whatever ``--direct_num_workers`` says. Beam 2.77's local runner with two
  workers loses rows: at 1M synthetic impressions, 3 runs out of 11 wrote fewer examples than
  they read (938,400 and 971,569 of 1,000,000; the row accounting failed them) while the same
  stage's grouped outputs were complete — the elements went missing between the runner and its
  worker processes (benchmarks/RESULTS.md, "Two local workers"). ``--direct_num_workers=N`` is
  therefore :func:`local_parallelism`: the link runs its user shards N at a time, each shard
  pipeline on the one-worker path (``beam_pipelines/sharded.py``);
* quiet unless ``verbose``: SDK workers log at ERROR (``--default_sdk_harness_log_level``), and a
  multi-processing worker starts through ``beam_pipelines/local_worker.py``, which keeps Beam's
  import-time warnings (``apitools not found``) and its start-up warnings
  (``No semi_persistent_directory found``, ``Discarding unparseable args``) off the terminal.

Any standard Beam flag passes through, e.g. ``--runner=DataflowRunner --project=P
--region=R --temp_location=gs://B/tmp --setup_file=./setup.py``: a distributed runner is used
as Beam builds it.
"""

from __future__ import annotations

import multiprocessing
import sys
from typing import Callable, Dict, List, Optional

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from beam_pipelines import counters

LOCAL_RUNNERS = ("DirectRunner", "direct", "SwitchingDirectRunner")
DEFAULT_RUNNING_MODE = "in_memory"
QUIET_WORKER_LOG_LEVEL = "ERROR"


def _flag_given(beam_args: List[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in beam_args)


def is_local(options: PipelineOptions) -> bool:
    """Whether ``options`` run on the local runner (no ``--runner`` or the DirectRunner)."""
    configured = options.view_as(StandardOptions).runner
    return configured is None or configured in LOCAL_RUNNERS


def local_parallelism(beam_args: Optional[List[str]] = None) -> int:
    """How many one-worker pipelines the link may run at once on the local runner:
    ``--direct_num_workers`` (0: one per core), 1 without the flag or on another runner."""
    beam_args = list(beam_args or [])
    options = PipelineOptions(beam_args)
    if not is_local(options) or not _flag_given(beam_args, "--direct_num_workers"):
        return 1
    n = options.view_as(DirectOptions).direct_num_workers
    return multiprocessing.cpu_count() if n == 0 else max(1, int(n or 1))


def default_pipeline_options(beam_args: Optional[List[str]] = None,
                             verbose: bool = False) -> PipelineOptions:
    """The options of one pipeline of the link (see the module docstring): the local runner in
    one process with one worker unless the flags choose another mode; SDK workers at ERROR
    unless ``verbose`` or the flags set a level."""
    beam_args = list(beam_args or [])
    extra = []
    if not verbose and not _flag_given(beam_args, "--default_sdk_harness_log_level"):
        extra.append(f"--default_sdk_harness_log_level={QUIET_WORKER_LOG_LEVEL}")
    options = PipelineOptions(beam_args + extra)
    if is_local(options):
        options.view_as(StandardOptions).runner = "DirectRunner"
        direct = options.view_as(DirectOptions)
        if not _flag_given(beam_args, "--direct_running_mode"):
            direct.direct_running_mode = DEFAULT_RUNNING_MODE
        direct.direct_num_workers = 1  # never Beam's multi-worker local path (module docstring)
    return options


def workers_in_this_process(beam_args: Optional[List[str]] = None) -> bool:
    """Whether the link's workers run in this process: the local runner in its default mode
    (``in_memory``), one pipeline at a time. Then the live tally of the link's counters
    (``beam_pipelines.counters.live_tally``) sees their rows while the pipeline runs."""
    beam_args = list(beam_args or [])
    options = default_pipeline_options(beam_args)
    return (is_local(options) and local_parallelism(beam_args) == 1
            and options.view_as(DirectOptions).direct_running_mode == DEFAULT_RUNNING_MODE)


def _local_runner(options: PipelineOptions, verbose: bool):
    """Beam's FnApiRunner (what the DirectRunner runs a batch pipeline on), built here so a
    multi-processing worker starts through ``beam_pipelines.local_worker`` (quiet) unless
    ``verbose``. None: let Beam build the runner from ``options``."""
    direct = options.view_as(DirectOptions)
    if verbose or direct.direct_running_mode != "multi_processing":
        return None
    # pylint: disable=import-outside-toplevel
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle
    from apache_beam.transforms import environments

    worker = environments.SubprocessSDKEnvironment.from_command_string(
        f"{sys.executable} -m beam_pipelines.local_worker")
    provision = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(
        pipeline_options=JobServiceHandle.encode_pipeline_options(options.get_all_options())))
    # The FnApiRunner picks Beam's own worker command for the mode "multi_processing"; with
    # the worker environment given here it must not: the mode it sees is "in_memory" (the
    # worker processes still come from the environment, one per worker).
    direct.direct_running_mode = "in_memory"
    return fn_runner.FnApiRunner(default_environment=worker, provision_info=provision)


def run_pipeline(build: Callable[..., None], beam_args: Optional[List[str]], *args,
                 verbose: bool = False) -> Dict[str, int]:
    """Builds a pipeline with ``build(p, *args)``, runs it to the end; returns its counters."""
    options = default_pipeline_options(beam_args, verbose)
    local = _local_runner(options, verbose) if is_local(options) else None
    p = beam.Pipeline(runner=local, options=options) if local else beam.Pipeline(options=options)
    build(p, *args)
    result = p.run()
    result.wait_until_finish()
    return counters.pipeline_counters(result)
