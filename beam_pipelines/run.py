"""TEMPORARY (the pipelines helper owns the real module): `tfrrl prepare`'s orchestration, moved
unchanged out of the former ``tfrrl/cli.py`` so the command line only parses arguments."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from typing import Optional, Sequence

from beam_pipelines.unified_link import OutputExistsError, PrepareConfig

__all__ = ["OutputExistsError", "PrepareConfig", "load_prepare_config", "run_prepare"]


def _say(message: str) -> None:
    print(f"[tfrrl {time.strftime('%H:%M:%S')}] {message}", flush=True)


def load_prepare_config(path: Optional[str], overrides: dict):
    """PrepareConfig from defaults ← YAML file ← command-line overrides."""
    import yaml

    from beam_pipelines.unified_link import PrepareConfig

    values = {}
    if path:
        with open(path, encoding="utf-8") as f:
            values.update(yaml.safe_load(f) or {})
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(PrepareConfig)}
    unknown = set(values) - known
    if unknown:
        raise SystemExit(f"unknown prepare config keys {sorted(unknown)}; known: {sorted(known)}")
    return PrepareConfig(**values)


def run_prepare(input_dir: str, out_dir: str, adapter: str = "synthetic", *,
                config_path: Optional[str] = None, overrides: Optional[dict] = None,
                beam_args: Sequence[str] = (), overwrite: bool = False,
                keep_raw: Optional[str] = None,
                adapter_options: Optional[dict] = None) -> dict:
    from beam_pipelines import unified_link

    cfg = load_prepare_config(config_path, overrides or {})
    tmp = None
    raw_dir = input_dir
    if adapter != "synthetic":
        from beam_pipelines import adapters

        raw_dir = keep_raw or tempfile.mkdtemp(prefix=f"tfrrl-{adapter}-raw-")
        tmp = None if keep_raw else raw_dir
        _say(f"adapter {adapter}: converting {input_dir} to the raw contract in {raw_dir}")
        summary = adapters.convert(adapter, input_dir, raw_dir, **(adapter_options or {}))
        brief = {k: summary[k] for k in ("impressions", "users", "entities", "duplicate_rows")
                 if k in summary}
        if "domains" in summary:
            brief["domains"] = len(summary["domains"])
        _say(f"adapter {adapter}: {json.dumps(brief, default=str)}")
        recommended = summary.get("eval_fraction") if isinstance(summary, dict) else None
        if recommended and not (overrides or {}).get("eval_fraction") and not config_path:
            cfg.eval_fraction = recommended
    try:
        _say(f"preparing {raw_dir} → {out_dir} (Beam; "
             f"{' '.join(beam_args) if beam_args else 'DirectRunner, multi-processing'})")
        result = unified_link.run(raw_dir, out_dir, cfg, beam_args=list(beam_args),
                                  overwrite=overwrite)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    _say(f"prepared in {result['seconds']:.1f}s")
    print(unified_link.format_accounting(result["accounting"]))
    stats = result["stats"]
    print(f"domains |D^k| (train): {stats['domain_sizes']}")
    print(f"corpus: {stats['corpus_size']:,} entities {stats['corpus_entity_type_counts']}")
    print(f"split: {stats['split']}")
    return result
