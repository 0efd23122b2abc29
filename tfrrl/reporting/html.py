"""One self-contained static HTML page per run (``tfrrl report``): opens from disk, no JavaScript,
its figures embedded as PNG data URIs.

Sections: training (per-epoch losses, loss curves, the learned UWL weights — RRL Fig. 5),
Recall-all@N per domain against the reference baselines (Fig. 4 style), warm and cold queries,
entity types and fairness, AUC / gAUC, the export, the configuration, the data statistics and
the analysis figures. A section whose source is missing says which command writes it.

**Every number on the page is a value of one of the run's JSON files**, shown as
``<span class="num" data-source="FILE" data-path='["key", …]' title="REPR">TEXT</span>``: the
source file (:mod:`tfrrl.reporting.sources`), the path of keys / list indices to the value in
it, the exact value, and the text (:func:`format_number`: integers with thousands separators,
floats with 4 decimals, ``n/a`` for NaN; an identifier such as an export version as it is, with
``data-format="id"``). Numbers that are not data — figure and equation
references of the paper — are ``<span class="ref">``; the configuration is ``config.yaml``
verbatim in a ``<pre>``. Nothing is computed on the page, so checking it against the JSON is
mechanical (``tests/test_report.py`` does).
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from tfrrl.artifacts import run_folder
from tfrrl.reporting import figures
from tfrrl.reporting.sources import (ACCOUNTING, EVALUATION, EXPORT_MANIFEST, HISTORY, RECALL,
                                     STATS, RunSources, load_sources)

# The methods of a recall table, in column order: the model, the reference baselines of
# tfrrl/evaluation/references.py, the served model through its index.
RECALL_METHODS = ("model", "popularity", "recent_popularity", "item_cf", "retrieval")

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f4f4f4; }
.note { color: #666; font-size: 0.9em; }
pre { background: #f7f7f7; padding: 0.8em; font-size: 0.85em; overflow-x: auto; }
img { max-width: 100%; border: 1px solid #eee; }
table.kv td { text-align: left; } table.kv td:last-child { text-align: right; }
"""


def format_number(value: Any) -> str:
    """The text of a number on the page: ``1,000``; ``0.1846``; ``n/a`` for NaN/inf."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    value = float(value)
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.4f}"


def lookup(document: Any, path: Sequence[Any]) -> Any:
    """The value at ``path`` (keys and list indices) in a JSON document."""
    for key in path:
        document = document[key]
    return document


class Numbers:
    """Renders the numbers of one JSON source with their provenance (module docstring)."""

    def __init__(self, source: str, document: Mapping[str, Any]):
        self.source = source
        self.document = document

    def __call__(self, *path: Any) -> str:
        return self._span(path, format_number(lookup(self.document, path)), "")

    def identifier(self, *path: Any) -> str:
        """A number that names something (an export version): shown as it is."""
        return self._span(path, str(lookup(self.document, path)), ' data-format="id"')

    def _span(self, path: Sequence[Any], text: str, extra: str) -> str:
        value = lookup(self.document, path)
        return (f'<span class="num" data-source="{html.escape(self.source)}" '
                f"data-path='{html.escape(json.dumps(list(path)), quote=True)}'{extra} "
                f'title="{html.escape(repr(value))}">{text}</span>')


def esc(text: Any) -> str:
    return html.escape(str(text))


def ref(text: str) -> str:
    """A reference to the paper (a figure, an equation): not data."""
    return f'<span class="ref">{esc(text)}</span>'


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """An HTML table; cells are HTML already (escape text with :func:`esc`)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def kv_table(rows: Iterable[Sequence[str]]) -> str:
    """A two-column table of labelled values (no header)."""
    body = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv"><tbody>{body}</tbody></table>'


def image(png: Optional[bytes], alt: str) -> str:
    if png is None:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return f'<p><img alt="{esc(alt)}" src="data:image/png;base64,{data}"></p>'


def note(text: str) -> str:
    """A grey remark; `backquoted` parts (commands, files) become ``<code>``."""
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return f'<p class="note">{text}</p>'


NOT_EVALUATED = note("not measured: run `tfrrl evaluate --run RUN` (evaluation.json)")


# --------------------------------------------------------------------------------------------
# sections

def training_time(run_info: Mapping[str, Any]) -> str:
    """The epochs, steps and wall time ``run.json`` records of a finished training ("" for a
    run folder written before the record existed)."""
    if "train_seconds" not in run_info:
        return ""
    num = Numbers(run_folder.RUN_INFO, run_info)
    lower_bound = ("" if run_info.get("train_seconds_complete", True) else
                   " at least (a backup it resumed from did not record the time before)")
    return (f"<p>Trained {num('epochs_run')} epochs ({num('steps_run')} steps) in "
            f"{num('train_seconds')} seconds of wall time{lower_bound}; restarts from a "
            f"backup: {num('restarts')}.</p>")


def training_section(sources: RunSources) -> str:
    parts = ["<h2>Training</h2>", training_time(sources.run_info)]
    history = sources.get(HISTORY)
    if history:
        num = Numbers(HISTORY, history)
        # UWL weights are state, logged as they are: their val_ twins repeat them.
        names = [k for k in history if k != "nonfinite_steps" and isinstance(history[k], list)
                 and not k.startswith("val_uwl_weight_")]
        epochs = max((len(history[k]) for k in names), default=0)
        rows = [[esc(name)] + [num(name, e) if e < len(history[name]) else ""
                               for e in range(epochs)] for name in names]
        parts.append(table(["per epoch"] + [f"epoch {num_text(e + 1)}" for e in range(epochs)],
                           rows))
    else:
        parts.append(note("no history.json: the run did not finish (`tfrrl train` writes it)"))
    parts.append(image(figures.loss_curves_png(sources.steps), "losses per training step"))
    uwl = figures.uwl_weights_png(sources.run_dir, sources.steps)
    if uwl:
        parts.append(f"<p>Learned uncertainty weights of the auxiliary losses "
                     f"({ref('RRL Fig. 5')}):</p>" + image(uwl, "UWL weights"))
    elif sources.steps:
        parts.append(note("no learned UWL weights: the run was trained without "
                          "model.rrl.uwl"))
    return "".join(parts)


def num_text(k: int) -> str:
    """A count that is part of a label (an epoch's ordinal), marked as not data."""
    return ref(str(k))


def recall_table(report: Mapping[str, Any], num: Numbers, prefix: Sequence[Any] = ()) -> str:
    """Rows: every domain, ``avg`` (macro, the paper's average) and ``all`` (micro); columns:
    the queries, then Recall@N of each method present."""
    methods = [m for m in RECALL_METHODS if m in report]
    first = report[methods[0]]
    ns = first["ns"]
    header = ["domain", "queries"] + [f"{esc(m)} @{num(*prefix, methods[0], 'ns', j)}"
                                      for m in methods for j in range(len(ns))]
    rows = []
    for domain in first["per_domain"]:
        row = [esc(domain), num(*prefix, methods[0], "per_domain", domain, "num_queries")]
        for m in methods:
            present = domain in report[m]["per_domain"]
            row += [num(*prefix, m, "per_domain", domain, f"recall@{n}") if present else ""
                    for n in ns]
        rows.append(row)
    rows.append(["avg (macro)", ""] + [num(*prefix, m, "macro", f"recall@{n}")
                                       for m in methods for n in ns])
    rows.append(["all (micro)", num(*prefix, methods[0], "num_queries")]
                + [num(*prefix, m, "micro", f"recall@{n}") for m in methods for n in ns])
    return table(header, rows)


def recall_source(sources: RunSources):
    """(file name, document) of the fullest recall result: evaluation.json, else recall.json."""
    for name in (EVALUATION, RECALL):
        document = sources.get(name)
        if document and "model" in document:
            return name, document
    return None, None


def recall_section(sources: RunSources) -> str:
    parts = [f"<h2>Recall-all@N per domain ({ref('Eq. 26')})</h2>"]
    name, document = recall_source(sources)
    if document is None:
        parts.append(note("not measured: run `tfrrl evaluate --run RUN` (or train without "
                          "--no-recall)"))
        return "".join(parts)
    num = Numbers(name, document)
    parts.append(f"<p>From <code>{esc(name)}</code>: the model against the reference "
                 "baselines on the same queries (popularity = each domain's most frequent "
                 "training entities"
                 + ("; recent_popularity = the same over the last part of the training period, "
                    "its window chosen on the validation rows carved from training"
                    if "recent_popularity" in document else "")
                 + ("; item_cf = item-item cosine CF over the user's training entities, "
                    "restricted to the domain's entities" if "item_cf" in document else "")
                 + ("; retrieval = the served model through its HNSW index, "
                    f"{ref('Eq. 27')}" if "retrieval" in document else "") + ").</p>")
    parts.append(recall_table(document, num))
    parts.append(image(figures.recall_curves_png(document),
                       "Recall-all@N against N per domain"))
    if "protocol" in document:
        parts.append(note("Protocol: " + esc(document["protocol"])))
    return "".join(parts)


def evaluation_with(sources: RunSources, key: str) -> Optional[Dict[str, Any]]:
    """The run's evaluation.json if it holds ``key`` (a value that is not None or empty;
    0.0 counts), else None."""
    document = sources.get(EVALUATION)
    if not document or document.get(key) in (None, {}, []):
        return None
    return document


def warm_cold_section(sources: RunSources) -> str:
    parts = ["<h2>Warm and cold queries</h2>"]
    document = evaluation_with(sources, "warm_cold")
    if document is None:
        return "".join(parts) + NOT_EVALUATED
    groups = document["warm_cold"]
    seen = document.get("seen_corpus") or {}
    # (key in evaluation.json, group, row label): the headline groups, then the same on the
    # corpus of the entities with TRAIN rows when the evaluation computed that view.
    blocks = [("warm_cold", "warm", "warm"), ("warm_cold", "cold", "cold")]
    if seen.get("computed"):
        blocks += [("seen_corpus", "warm", "warm, entities with TRAIN rows"),
                   ("seen_corpus", "cold", "cold, entities with TRAIN rows")]
    num = Numbers(EVALUATION, document)
    rows = []
    header = ["", "queries"]
    ns: List[int] = []
    methods: List[str] = []
    for key, group, _ in blocks:
        entry = document[key].get(group, {})
        if entry.get("num_queries") and not ns:
            ns = entry["model"]["ns"]
            methods = [m for m in RECALL_METHODS if m in entry]
            header += [f"{esc(m)} @{num(key, group, 'model', 'ns', j)}"
                       for m in methods for j in range(len(ns))]
    for key, group, label in blocks:
        entry = document[key].get(group, {})
        row = [label, num(key, group, "num_queries")]
        if entry.get("num_queries"):
            row += [num(key, group, m, "macro", f"recall@{n}") if m in entry else ""
                    for m in methods for n in ns]
        else:
            row += [""] * (len(header) - 2)
        rows.append(row)
    parts.append(table(header, rows))
    parts.append(note("Recall-all@N macro average over domains. " + esc(groups["definition"])
                      + (f". Entities with TRAIN rows: {esc(seen['definition'])} "
                         f"({num('seen_corpus', 'entities_without_train_rows')} of the corpus "
                         "have none: a "
                         "corpus built from eval rows too tells a ranker which entities will "
                         "be interacted with)" if seen.get("computed") else "")))
    parts.append(versus_table(document, num))
    return "".join(parts)


def versus_table(document: Mapping[str, Any], num: Numbers) -> str:
    """The model (and the shifted model) against the best reference at each N on the warm
    queries (``versus_best_reference``: a paired bootstrap over them); "" when not measured."""
    versus = (document.get("versus_best_reference") or {}).get("warm") or {}
    rows = []
    for key, per_method in versus.items():
        for method, c in per_method.items():
            path = ("versus_best_reference", "warm", key, method)
            rows.append([esc(method), num(*path, "n"), esc(c["reference"]), num(*path, "relative"),
                         f"[{num(*path, 'interval', 0)}, {num(*path, 'interval', 1)}]",
                         num(*path, "p")])
    if not rows:
        return ""
    return ("<h3>Against the best reference, warm queries</h3>"
            + table(["method", "N", "best reference", "relative difference",
                     "interval", "p"], rows)
            + note("Macro Recall@N of the method against the reference with the best macro "
                   "Recall@N at that N, on the same warm queries: a paired bootstrap over the "
                   "queries, stratified by domain; the interval holds the central share "
                   "`level` of the resampled relative differences, p is two-sided: how much of "
                   "the difference could be which queries the eval split holds."))


def entity_section(sources: RunSources) -> str:
    parts = ["<h2>Entity types and fairness</h2>"]
    document = evaluation_with(sources, "per_entity_type")
    if document is None:
        return "".join(parts) + NOT_EVALUATED
    num = Numbers(EVALUATION, document)
    per_type = document["per_entity_type"]
    types = sorted({t for values in per_type.values() for t in values})
    parts.append("<p>Recall@N of each entity type's ground truth:</p>")
    rows = [[f"<code>{esc(key)}</code>"]  # the JSON key, recall@N
            + [num("per_entity_type", key, t) if t in values else "" for t in types]
            for key, values in per_type.items()]
    parts.append(table(["N"] + [esc(t) for t in types], rows))
    fairness = document.get("fairness")
    if fairness:
        f_types = sorted({t for per in fairness["domains"].values() for t in per})
        parts.append(f"<p>Share of the top-{num('fairness', 'n')} slots / share of the ground "
                     "truth per entity type:</p>")
        rows = [[esc(d)] + [f"{num('fairness', 'domains', d, t, 'top_share')} / "
                            f"{num('fairness', 'domains', d, t, 'truth_share')}"
                            if t in per else "" for t in f_types]
                for d, per in fairness["domains"].items()]
        parts.append(table(["domain"] + [esc(t) for t in f_types], rows))
    return "".join(parts)


def auc_section(sources: RunSources) -> str:
    parts = ["<h2>AUC and gAUC</h2>"]
    document = evaluation_with(sources, "auc")
    if document is None:
        return "".join(parts) + NOT_EVALUATED
    num = Numbers(EVALUATION, document)
    parts.append(kv_table([["AUC", num("auc")], ["gAUC", num("gauc")]]))
    parts.append(note("Eval impressions against uniform corpus negatives; gAUC = per-user AUC "
                      "weighted by the user's impressions."))
    return "".join(parts)


def export_section(sources: RunSources) -> str:
    if not sources.export_dir:
        return ""
    parts = ["<h2>Export</h2>"]
    manifest = sources.get(EXPORT_MANIFEST)
    if manifest is None:
        parts.append(note(f"no exported version under {esc(sources.export_dir)}: run `tfrrl "
                          "export --run RUN --out EXPORT`"))
        return "".join(parts)
    num = Numbers(EXPORT_MANIFEST, manifest)
    rows = [["SavedModel", f"<code>{esc(sources.export_version_dir)}</code>"],
            ["model name", esc(manifest.get("model_name", ""))],
            ["version", num.identifier("version")],
            ["signatures", esc(", ".join(sorted(manifest.get("signatures", {}))))],
            ["domains", esc(", ".join(manifest.get("domains", [])))]]
    if "num_parameters" in manifest:
        rows.append(["parameters served", num("num_parameters")])
    if "tensorflow_version" in manifest:
        rows.append(["TensorFlow", f"<code>{esc(manifest['tensorflow_version'])}</code>"])
    parts.append(kv_table(rows))
    return "".join(parts)


def config_section(sources: RunSources) -> str:
    return (f"<h2>Configuration</h2><p><code>{esc(run_folder.CONFIG_FILE)}</code> of the "
            f"run:</p><pre>{esc(sources.config_text)}</pre>")


def data_section(sources: RunSources) -> str:
    parts = ["<h2>Data</h2>"]
    stats = sources.get(STATS)
    if stats is None:
        parts.append(note("the prepared dataset of the run (run.json) is not there any more"))
        return "".join(parts)
    parts.append(f"<p>Prepared dataset <code>{esc(sources.data_dir)}</code>.</p>")
    num = Numbers(STATS, stats)
    rows = [[esc(label), num(key)] for key, label in
            (("num_train", "training examples"), ("num_eval", "eval examples"),
             ("corpus_size", "corpus entities"), ("sequence_length", "sequence length"))
            if key in stats]
    parts.append(kv_table(rows))
    if "domain_sizes" in stats:
        evals = stats.get("eval_domain_sizes", {})
        parts.append(table(["domain", "train", "eval"], [
            [esc(d), num("domain_sizes", d), num("eval_domain_sizes", d) if d in evals else ""]
            for d in stats["domain_sizes"]]))
    count_keys = [k for k in ("train_entity_type_counts", "eval_entity_type_counts",
                              "corpus_entity_type_counts") if k in stats]
    if count_keys:
        types = sorted({t for k in count_keys for t in stats[k]})
        parts.append(table(["entity type"] + [esc(k.split("_")[0]) for k in count_keys], [
            [esc(t)] + [num(k, t) if t in stats[k] else "" for k in count_keys]
            for t in types]))
    accounting = sources.get(ACCOUNTING)
    impressions = (accounting or {}).get("impressions")
    if impressions:
        acc = Numbers(ACCOUNTING, accounting)
        dead = impressions.get("dead_letter", {})
        filtered = impressions.get("filtered", {})
        rows = [["read", acc("impressions", "rows_read")], ["train", acc("impressions", "train")],
                ["eval", acc("impressions", "eval")]]
        rows += [[f"dead letter: {esc(r)}", acc("impressions", "dead_letter", r)] for r in dead]
        rows += [[f"filtered: {esc(r)}", acc("impressions", "filtered", r)] for r in filtered]
        parts.append("<p>Impressions, as the link accounted for them:</p>" + kv_table(rows))
    return "".join(parts)


def analysis_section(sources: RunSources) -> str:
    if not sources.analysis_pngs:
        return ""
    parts = ["<h2>Analysis</h2>", note("The figures of `tfrrl analyze` (RUN/analysis).")]
    for path in sources.analysis_pngs:
        with open(path, "rb") as f:
            parts.append(f"<p>{esc(os.path.basename(path))}</p>" + image(f.read(), path))
    return "".join(parts)


SECTIONS = (training_section, recall_section, warm_cold_section, entity_section, auc_section,
            export_section, config_section, data_section, analysis_section)


def render(sources: RunSources) -> str:
    """The whole page."""
    experiment = sources.run_info.get("experiment", os.path.basename(
        os.path.abspath(sources.run_dir)))
    head = (f"<h1>tfrrl run report: {esc(experiment)}</h1>"
            f"<p>Run folder <code>{esc(os.path.abspath(sources.run_dir))}</code>"
            + (f", export <code>{esc(sources.export_dir)}</code>" if sources.export_dir else "")
            + ".</p>")
    body = head + "".join(section(sources) for section in SECTIONS)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>tfrrl report: {esc(experiment)}</title><style>{STYLE}</style></head>"
            f"<body>{body}</body></html>\n")


def write_report(run_dir: str, export_dir: Optional[str] = None, out: Optional[str] = None
                 ) -> str:
    """Writes the report of ``run_dir`` (and of ``export_dir``) to ``out`` (default
    ``RUN/report.html``) and returns its path."""
    sources = load_sources(run_dir, export_dir)
    out = out or run_folder.path(run_dir, run_folder.REPORT_FILE)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        f.write(render(sources))
    return out
