"""The collapse / diversity analysis of one run folder (``tfrrl analyze``): ``analysis.json``.

For the final weights (``model.weights.h5``):

* ``tables`` — singular values and IA of every embedding table (Tencent §7.2);
* ``frequency_buckets`` — IA of the entity-id tables' rows grouped by training frequency
  (Crocodile Fig. 2b; edges: ``bucket_edges`` counts, or ``num_buckets`` equal-size quantile
  groups of the entities' training counts, 5 by default). Every table indexed by the entity_id
  vocabulary is bucketed: the shared ``entity_id`` table and the per-set copies of a
  multi-embedding backbone (:func:`collect.entity_id_tables`);
* ``experts`` — singular values and IA of every expert output, over all analysed eval examples
  and per domain (Crocodile Fig. 2a / Fig. 4);
* ``diversity`` — DI^AF and DI^SF for every ordered domain pair (Crocodile Eq. 1–2, Fig. 5).

and, for every ``checkpoints/epoch{N}.weights.h5`` (``train.save_epoch_checkpoints``), the IA of
the tables, the frequency buckets and the experts per domain (``checkpoints``: IA over training).
"""

from __future__ import annotations

import os
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from tfrrl import config as config_lib
from tfrrl.analysis import collect, diversity, spectrum
from tfrrl.artifacts import run_folder
from tfrrl.artifacts.run_folder import ANALYSIS_FILE
from tfrrl.data.reader import PreparedDataset
from tfrrl.progress import format_duration
from tfrrl.training import trainer


def _quiet(summary: Dict) -> Dict:
    return {**summary, "ia": spectrum.finite_or_none(summary["ia"])}


def table_spectra(tables: Dict[str, np.ndarray]) -> Dict[str, Dict]:
    return {name: _quiet(spectrum.spectrum_summary(t)) for name, t in tables.items()}


def bucket_spectra(table: np.ndarray, rows: np.ndarray, counts: np.ndarray,
                   edges: Sequence[float]) -> Dict[str, Dict]:
    buckets = spectrum.split_rows_by_frequency(rows, counts, edges)
    out = {}
    for label, ids in buckets.items():
        summary = _quiet(spectrum.spectrum_summary(table[ids]))
        c = counts[np.isin(rows, ids)]
        summary["count_min"], summary["count_max"] = int(c.min()), int(c.max())
        out[label] = summary
    return out


def expert_spectra(experts: collect.ExpertOutputs, domain_names: Sequence[str]) -> Dict:
    """``{"all": {expert: summary}, "per_domain": {expert: {domain: summary}}}``; a domain
    with fewer than 2 analysed examples is left out."""
    result: Dict = {"all": {}, "per_domain": {}}
    for p, name in enumerate(experts.names):
        result["all"][name] = _quiet(spectrum.spectrum_summary(experts.outputs[:, p]))
        per = {}
        for k, dom in enumerate(domain_names):
            sel = experts.domains == k
            if sel.sum() >= 2:
                per[dom] = _quiet(spectrum.spectrum_summary(experts.outputs[sel, p]))
        result["per_domain"][name] = per
    return result


def _ia_only(nested):
    if isinstance(nested, dict) and "ia" in nested and "singular_values" in nested:
        return nested["ia"]
    return {k: _ia_only(v) for k, v in nested.items()}


def analyze_model(model, data, *, tables: Optional[Sequence[str]] = None,
                  max_examples: int = 2000, bucket_edges: Optional[Sequence[float]] = None,
                  num_buckets: int = spectrum.DEFAULT_NUM_BUCKETS,
                  history: Optional[Dict[str, np.ndarray]] = None,
                  conflict_key: str = "category",
                  top_percentile: float = diversity.DEFAULT_TOP_PERCENTILE,
                  bottom_percentile: float = diversity.DEFAULT_BOTTOM_PERCENTILE,
                  tau_t: Optional[float] = None, tau_b: Optional[float] = None,
                  with_diversity: bool = True,
                  progress: Optional[Callable[[str], None]] = None) -> Dict:
    """Tables, frequency buckets, experts and (``with_diversity``) DI of the model's current
    weights. ``history`` (:func:`collect.training_history`) is needed for DI."""
    say = progress or (lambda _m: None)
    out: Dict = {}
    say("embedding tables: singular values")
    all_tables = collect.embedding_tables(model, tables)
    out["tables"] = table_spectra(all_tables)
    entity_tables = collect.entity_id_tables(all_tables, model)
    if entity_tables:
        rows, counts = collect.entity_frequency_rows(data)
        edges = list(bucket_edges) if bucket_edges else spectrum.bucket_edges_by_quantile(
            counts, num_buckets)
        out["frequency_buckets"] = {
            "edges": edges, "labels": spectrum.bucket_labels(edges),
            "tables": {name: bucket_spectra(t, rows, counts, edges)
                       for name, t in entity_tables.items()}}
    num_domains = int(model.num_domains)
    domain_names = data.domains_in_vocabulary_order()[:num_domains]
    say(f"expert outputs on up to {max_examples:,} eval examples")
    try:
        experts = collect.collect_expert_outputs(model, data, max_examples, progress=say)
    except collect.NoExpertOutputs as err:
        out["experts"] = {"source": None, "message": str(err)}
        out["diversity"] = {"message": str(err)}
        return out
    out["experts"] = {"source": experts.source, "names": experts.names,
                      "examples": int(len(experts.domains)),
                      "examples_per_domain": {d: int((experts.domains == k).sum())
                                              for k, d in enumerate(domain_names)},
                      **expert_spectra(experts, domain_names)}
    if with_diversity:
        out["diversity"] = diversity_of(experts, history, domain_names, conflict_key,
                                        top_percentile, bottom_percentile, tau_t, tau_b)
    return out


def diversity_of(experts: collect.ExpertOutputs, history: Optional[Dict[str, np.ndarray]],
                 domain_names: Sequence[str], conflict_key: str, top_percentile: float,
                 bottom_percentile: float, tau_t: Optional[float], tau_b: Optional[float]
                 ) -> Dict:
    """DI^AF / DI^SF (Crocodile Eq. 1–2) of the collected experts; see
    :mod:`tfrrl.analysis.diversity` for D_con and the thresholds."""
    if len(experts.names) < 2:
        return {"message": f"DI needs at least 2 experts; {experts.source} gives "
                           f"{len(experts.names)}"}
    if history is None:
        return {"message": "DI needs the training history (conflict samples)"}
    if conflict_key not in diversity.CONFLICT_KEYS:
        raise ValueError(f"conflict key {conflict_key!r}; known: {diversity.CONFLICT_KEYS}")
    keys = {"category": ("categories", "categories"), "entity": ("entities", "entities")}
    sample_keys = history_keys = None
    if conflict_key in keys:
        sample_keys = getattr(experts, keys[conflict_key][0])
        history_keys = history[keys[conflict_key][1]]
    conflicts = diversity.conflict_samples(experts.users, experts.domains, history["users"],
                                           history["domains"], len(domain_names),
                                           sample_keys, history_keys)
    norms = diversity.expert_norms(experts.outputs)
    if tau_t is None or tau_b is None:
        auto_t, auto_b = diversity.thresholds_from_percentiles(norms, top_percentile,
                                                               bottom_percentile)
        tau_t = auto_t if tau_t is None else tau_t
        tau_b = auto_b if tau_b is None else tau_b
    report = diversity.diversity_report(norms, conflicts, tau_t, tau_b,
                                        experts.domain_expert, domain_names)
    for row in report["pairs"]:
        for form in ("af", "sf"):
            if row[form] is not None:
                row[form] = spectrum.finite_or_none(row[form])
    report.update({"conflict_key": conflict_key, "top_percentile": top_percentile,
                   "bottom_percentile": bottom_percentile, "experts": experts.names,
                   "sf_available": experts.domain_expert is not None})
    return report


def analyze_run(run_dir: str, data_dir: Optional[str] = None, *,
                tables: Optional[Sequence[str]] = None, max_examples: int = 2000,
                bucket_edges: Optional[Sequence[float]] = None,
                num_buckets: int = spectrum.DEFAULT_NUM_BUCKETS,
                conflict_key: str = "category",
                top_percentile: float = diversity.DEFAULT_TOP_PERCENTILE,
                bottom_percentile: float = diversity.DEFAULT_BOTTOM_PERCENTILE,
                tau_t: Optional[float] = None, tau_b: Optional[float] = None,
                checkpoints: bool = True,
                progress: Optional[Callable[[str], None]] = None) -> Dict:
    """The whole analysis of a run folder (see the module docstring)."""
    say = progress or (lambda _m: None)
    start = time.time()
    data_dir = trainer.run_data_dir(run_dir, data_dir)
    data = PreparedDataset(data_dir)
    exp = config_lib.load_experiment(run_folder.path(run_dir, run_folder.CONFIG_FILE))
    say(f"loading {run_dir} ({exp.model.backbone} backbone) on {data_dir}")
    model = trainer.load_run(run_dir, data_dir)
    say("training history (conflict samples for DI)")
    history = collect.training_history(data, int(model.num_domains), progress=say)
    options = dict(tables=tables, max_examples=max_examples, bucket_edges=bucket_edges,
                   num_buckets=num_buckets)
    di_options = dict(conflict_key=conflict_key, top_percentile=top_percentile,
                      bottom_percentile=bottom_percentile, tau_t=tau_t, tau_b=tau_b)
    result: Dict = {"run": os.path.abspath(run_dir), "data": os.path.abspath(data_dir),
                    "experiment": exp.name, "backbone": exp.model.backbone,
                    "weights": run_folder.WEIGHTS_FILE,
                    "options": {**options, **di_options, "checkpoints": checkpoints},
                    "domains": data.domains_in_vocabulary_order()[:int(model.num_domains)]}
    result.update(analyze_model(model, data, history=history, progress=say, **options,
                                **di_options))
    result["checkpoints"] = []
    if checkpoints:
        found = run_folder.epoch_checkpoints(run_dir)
        if not found:
            say("no checkpoints/epoch{N}.weights.h5 (train with "
                "train.save_epoch_checkpoints=true for IA over training)")
        started = time.time()
        for k, (epoch, path) in enumerate(found):
            eta = ""
            if k:  # the time left at the mean time per checkpoint so far
                each = (time.time() - started) / k
                eta = f", ETA {format_duration(each * (len(found) - k))}"
            say(f"checkpoint {k + 1}/{len(found)} (epoch {epoch}, "
                f"{os.path.basename(path)}){eta}")
            model.load_weights(path)
            part = analyze_model(model, data, with_diversity=False, **options)
            experts = part["experts"]
            result["checkpoints"].append({
                "epoch": epoch, "path": os.path.relpath(path, run_dir),
                "tables": _ia_only(part["tables"]),
                "frequency_buckets": _ia_only(part.get("frequency_buckets", {})
                                              .get("tables", {})),
                "experts": _ia_only(experts.get("per_domain", {})),
                "experts_all": _ia_only(experts.get("all", {}))})
    result["seconds"] = round(time.time() - start, 1)
    return result


def ia_table_rows(result: Dict) -> List[tuple]:
    """[(what, IA)] of a result: tables, frequency buckets, experts (all and per domain)."""
    rows = [(f"table {n}", s["ia"]) for n, s in result.get("tables", {}).items()]
    for table, buckets in result.get("frequency_buckets", {}).get("tables", {}).items():
        for label, s in buckets.items():
            rows.append((f"{table} rows, train count {label}", s["ia"]))
    experts = result.get("experts", {})
    for name, s in experts.get("all", {}).items():
        rows.append((f"expert {name}", s["ia"]))
        for dom, d in experts.get("per_domain", {}).get(name, {}).items():
            rows.append((f"expert {name} @ {dom}", d["ia"]))
    return rows


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def format_summary(result: Dict) -> str:
    """A short text summary of an ``analyze_run`` result (IA rows, DI means)."""
    lines = [f"{result.get('experiment', 'run')} ({result.get('backbone')}): "
             f"Information Abundance (IA = Σσ / max σ)"]
    lines += [f"  {what:<48} {_fmt(ia)}" for what, ia in ia_table_rows(result)]
    experts = result.get("experts", {})
    if experts.get("message"):
        lines.append(f"  experts: {experts['message']}")
    div = result.get("diversity", {})
    if "af_mean" in div:
        lines.append(f"Diversity Index over {len(div['pairs'])} ordered domain pairs "
                     f"(conflict key {div['conflict_key']}, τ_t {div['tau_t']:.4g}, "
                     f"τ_b {div['tau_b']:.4g}): mean DI^AF {_fmt(div['af_mean'])}, "
                     f"mean DI^SF {_fmt(div['sf_mean'])}")
    elif div.get("message"):
        lines.append(f"Diversity Index: {div['message']}")
    if result.get("checkpoints"):
        lines.append(f"IA over {len(result['checkpoints'])} epoch checkpoints in {ANALYSIS_FILE}")
    return "\n".join(lines)
