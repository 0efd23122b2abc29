"""Running the link end to end: the entry of ``tfrrl prepare``.

:func:`run` turns a raw folder (the contract of ``tfrrl.data.link_spec``) into a prepared
dataset (``tfrrl/artifacts/prepared.py``): it claims the output folder
(``beam_pipelines/publish.py``), runs one of the two modes — ``one_pass`` (one pipeline) or
``sharded`` (``PrepareConfig.user_shards`` > 1: one user shard at a time, the local runner's
bounded-memory mode) — checks the row accounting (``beam_pipelines/accounting.py``), writes the
run's records and ``_SUCCESS``, and publishes. Both modes write the same dataset.
:func:`run_prepare` adds what the command does around it: a dataset adapter
(``beam_pipelines/adapters``), progress lines (``beam_pipelines/heartbeat.py`` while the
link runs) and the printed summary.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

from beam_pipelines import accounting, adapters, heartbeat, one_pass, publish, runner, sharded
from beam_pipelines.config import PrepareConfig, load_prepare_config
from beam_pipelines.publish import OutputExistsError
from tfrrl.artifacts import prepared
from tfrrl.data import fileio, link_spec
from tfrrl.data.link_spec import DatasetSpec

__all__ = ["run", "run_prepare", "load_prepare_config", "PrepareConfig", "OutputExistsError"]


def complete_dataset(work_dir: str, spec: DatasetSpec, counters: Dict[str, int]) -> Dict[str, Any]:
    """Writes the run's records beside the dataset (``link_spec.yaml``, ``accounting.json``),
    refuses an unbalanced accounting, then writes ``_SUCCESS``; returns accounting and stats."""
    acc = accounting.accounting_from_counters(counters, spec)
    fileio.write_text(fileio.join(work_dir, prepared.SPEC_COPY), spec.to_yaml())
    fileio.write_text(fileio.join(work_dir, prepared.ACCOUNTING_FILE),
                      json.dumps(acc, indent=2) + "\n")
    stats = json.loads(fileio.read_text(fileio.join(work_dir, prepared.STATS_FILE)))
    if not accounting.is_balanced(acc):
        raise RuntimeError("row accounting does not balance:\n"
                           + accounting.format_accounting(acc))
    fileio.write_text(fileio.join(work_dir, prepared.SUCCESS_FILE), "")
    return {"accounting": acc, "stats": stats}


def run(raw_dir: str, out_dir: str, cfg: Optional[PrepareConfig] = None,
        spec: Optional[DatasetSpec] = None, beam_args: Optional[List[str]] = None,
        overwrite: bool = False, verbose: bool = False) -> Dict[str, Any]:
    """Runs the link; returns ``{"accounting": …, "stats": …, "seconds": …}``.

    ``verbose``: Beam's workers log as Beam configures them (else errors only; see
    ``beam_pipelines/runner.py``).

    Data safety (``beam_pipelines/publish.py``): a non-empty ``out_dir`` is never replaced
    unless ``overwrite`` (else :class:`OutputExistsError`); a failed or killed run leaves no
    dataset at ``out_dir``, and an overwritten one stays whole until the new one is complete.

    ``cfg.user_shards`` > 1 runs the link as several pipelines, one user shard at a time
    (``beam_pipelines/sharded.py``; local runners only): the same dataset, the same accounting
    and the same data safety, with peak memory bounded by the largest shard.

    Local parallelism (``--direct_num_workers=N``, ``runner.local_parallelism``): the link runs
    as at least N user shards, N shard pipelines at a time, each with one Beam worker — the same
    dataset as one pass; Beam's own multi-worker local execution is never used (it loses rows,
    see ``beam_pipelines/runner.py``).
    """
    cfg = (cfg or PrepareConfig()).validate()
    spec = (spec or link_spec.load(raw_dir)).validate()
    parallelism = runner.local_parallelism(beam_args)
    if parallelism > 1 and cfg.user_shards < parallelism:
        cfg = dataclasses.replace(cfg, user_shards=parallelism)
    if cfg.user_shards > 1:
        sharded.check_runner(runner.default_pipeline_options(beam_args))
    work_dir = publish.claim_output(out_dir, overwrite)
    start = time.time()
    try:
        if cfg.user_shards == 1:
            counters = one_pass.run_one_pass(raw_dir, work_dir, spec, cfg, beam_args, verbose)
        else:
            counters = sharded.run_passes(raw_dir, work_dir, spec, cfg, beam_args, verbose,
                                          parallelism)
        seconds = time.time() - start
        result = complete_dataset(work_dir, spec, counters)
    except BaseException:
        publish.discard(work_dir, out_dir)
        raise
    publish.publish(work_dir, out_dir)
    return dict(result, seconds=seconds)


def _say(message: str) -> None:
    print(f"[tfrrl {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_prepare(input_dir: str, out_dir: str, adapter: str = "synthetic", *,
                config_path: Optional[str] = None, overrides: Optional[dict] = None,
                beam_args: Sequence[str] = (), overwrite: bool = False,
                keep_raw: Optional[str] = None,
                adapter_options: Optional[dict] = None, verbose: bool = False,
                heartbeat_interval: float = heartbeat.DEFAULT_INTERVAL) -> dict:
    """``tfrrl prepare``: the config (defaults ← ``config_path`` ← ``overrides``), the
    ``adapter``'s conversion of ``input_dir`` to the raw contract (``synthetic``: already
    raw; the converted folder is kept at ``keep_raw`` if given, else removed), :func:`run`,
    and the accounting and split summary printed; returns :func:`run`'s result.

    An adapter's recommended ``eval_fraction`` (and ``cutoff_timestamp``, for a time split)
    applies unless a config file or an override sets one. ``verbose`` (``tfrrl --verbose``): Beam's worker logs as Beam sets them.
    While the link runs, a progress line every ``heartbeat_interval`` seconds
    (``beam_pipelines/heartbeat.py``).
    """
    cfg = load_prepare_config(config_path, overrides or {})
    tmp = None
    raw_dir = input_dir
    if adapter != "synthetic":
        raw_dir = keep_raw or tempfile.mkdtemp(prefix=f"tfrrl-{adapter}-raw-")
        tmp = None if keep_raw else raw_dir
        _say(f"adapter {adapter}: converting {input_dir} to the raw contract in {raw_dir}")
        try:
            summary = adapters.convert(adapter, input_dir, raw_dir, **(adapter_options or {}))
        except BaseException:
            if tmp:  # nothing to keep of a conversion that failed
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        brief = {k: summary[k] for k in ("impressions", "users", "entities", "duplicate_rows")
                 if k in summary}
        if "domains" in summary:
            brief["domains"] = len(summary["domains"])
        _say(f"adapter {adapter}: {json.dumps(brief, default=str)}")
        recommended = summary.get("eval_fraction") if isinstance(summary, dict) else None
        if recommended and not (overrides or {}).get("eval_fraction") and not config_path:
            cfg.eval_fraction = recommended
        cutoff = summary.get("cutoff_timestamp") if isinstance(summary, dict) else None
        if cutoff is not None and not config_path and cfg.split == "time" and not (
                overrides or {}).get("eval_fraction"):
            cfg.cutoff_timestamp = int(cutoff)  # the adapter's split point (Ciao core_scope)
    try:
        _say(f"preparing {raw_dir} → {out_dir} (Beam; "
             f"{' '.join(beam_args) if beam_args else 'local runner, one process'})")
        with heartbeat.prepare_heartbeat(
                _say, heartbeat_interval,
                counts_visible=runner.workers_in_this_process(list(beam_args))):
            result = run(raw_dir, out_dir, cfg, beam_args=list(beam_args), overwrite=overwrite,
                         verbose=verbose)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    _say(f"prepared in {result['seconds']:.1f}s")
    print(accounting.format_accounting(result["accounting"]))
    stats = result["stats"]
    print(f"domains |D^k| (train): {stats['domain_sizes']}")
    print(f"corpus: {stats['corpus_size']:,} entities {stats['corpus_entity_type_counts']}")
    print(f"split: {stats['split']}")
    return result
