"""The run report (tfrrl/reporting/, ``tfrrl report``) on a run folder built by hand: it parses
as HTML, is self-contained (PNG data URIs, no script, nothing fetched), and every number on it
is the value at its stated place in the run's JSON files — no number appears anywhere else."""

from __future__ import annotations

import base64
import csv
import html.parser
import json
import math
import re
import subprocess
import sys
from typing import Dict, List, Tuple

import pytest

from tests.conftest import REPO
from tfrrl.reporting import html as html_report
from tfrrl.reporting import write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VOID = {"img", "meta", "br", "hr", "link", "input"}
# A standalone number in free text (not part of a word like d0 or a path like run-12/x).
STANDALONE_NUMBER = re.compile(r"(?<![\w.\-/])[-+]?\d+(?:[.,]\d+)*(?![\w.\-/])")


def recall_report(base: float) -> Dict:
    """A recall_report-shaped dict (tfrrl/evaluation/recall.py) with distinct values."""
    return {"ns": [10, 20], "effective_ns": [10, 20], "corpus_size": 1234, "num_queries": 7,
            "num_excluded": 0,
            "per_domain": {"d0": {"num_queries": 4, "recall@10": base, "recall@20": base + 0.1},
                           "d1": {"num_queries": 3, "recall@10": base / 2,
                                  "recall@20": base / 2 + 0.05}},
            "macro": {"recall@10": base * 0.75, "recall@20": base * 0.75 + 0.075},
            "micro": {"recall@10": base * 0.8, "recall@20": base * 0.8 + 0.08}}


CONFIG_TEXT = "name: hand_run\nmodel:\n  embedding_dim: 8\ntrain:\n  batch_size: 32\n"


@pytest.fixture()
def hand_run(tmp_path):
    """RUN/ (config, run.json, history, steps.csv, recall.json, evaluation.json), DATA/ (stats,
    accounting) and EXPORT/tfrrl/1796414750 (manifest), all written here."""
    data, run, export = tmp_path / "data", tmp_path / "run", tmp_path / "export"
    for folder in (data, run, export / "tfrrl" / "1796414750"):
        folder.mkdir(parents=True)
    files = {
        "stats.json": {"num_train": 17999, "num_eval": 2001, "corpus_size": 1234,
                       "sequence_length": 20, "domain_sizes": {"d0": 12000, "d1": 5999},
                       "eval_domain_sizes": {"d0": 1500, "d1": 501},
                       "train_entity_type_counts": {"item": 16000, "shop": 1999},
                       "eval_entity_type_counts": {"item": 1800, "shop": 201},
                       "corpus_entity_type_counts": {"item": 1200, "shop": 34}},
        "accounting.json": {"impressions": {"rows_read": 20010, "train": 17999, "eval": 2001,
                                            "dead_letter": {"unknown_entity": 7,
                                                            "bad_number": 3},
                                            "filtered": {"not_clicked": 0}}},
    }
    for name, value in files.items():
        (data / name).write_text(json.dumps(value), encoding="utf-8")
    history = {"loss": [2.5, 1.25], "ce_loss": [2.0, 1.0], "val_loss": [2.25, 1.5],
               "uwl_weight_dal_shared": [0.5, 0.625], "val_uwl_weight_dal_shared": [0.5, 0.625],
               "nonfinite_steps": [0.0, 0.0]}
    evaluation = {
        "protocol": "one query per (user, domain)", "max_queries": None, "seed": 0,
        "model": recall_report(0.4), "popularity": recall_report(0.3),
        "recent_popularity": recall_report(0.32), "item_cf": recall_report(0.34),
        "retrieval": recall_report(0.38),
        "per_entity_type": {"recall@10": {"item": 0.5, "shop": 0.25},
                            "recall@20": {"item": 0.625, "shop": 0.375}},
        "fairness": {"n": 10, "domains": {
            "d0": {"item": {"top_share": 0.75, "truth_share": 0.5},
                   "shop": {"top_share": 0.25, "truth_share": 0.5}},
            "d1": {"item": {"top_share": 1.0, "truth_share": 0.875}}}},
        "auc": 0.8125, "gauc": float("nan"),
        "warm_cold": {"definition": "cold = a user without TRAIN rows",
                      "warm": {"num_queries": 5, "model": recall_report(0.45),
                               "popularity": recall_report(0.35),
                               "recent_popularity": recall_report(0.37),
                               "item_cf": recall_report(0.39)},
                      "cold": {"num_queries": 2, "model": recall_report(0.2),
                               "popularity": recall_report(0.1)}},
        "versus_best_reference": {"warm": {"recall@10": {"model": {
            "reference": "item_cf", "n": 10, "difference": 0.0625, "relative": 0.125,
            "interval": [-0.25, 0.5], "p": 0.375}}}},
        "seen_corpus": {"computed": True, "definition": "corpus restricted",
                        "corpus_size": 7, "entities_without_train_rows": 1,
                        "ground_truth_dropped": 1,
                        "warm": {"num_queries": 5, "model": recall_report(0.5),
                                 "popularity": recall_report(0.4)},
                        "cold": {"num_queries": 0}},
    }
    run_files = {"run.json": {"data_dir": str(data), "experiment": "hand_run", "epochs_run": 3,
                              "steps_run": 36, "train_seconds": 81,
                              "train_seconds_complete": True, "restarts": 1},
                 "history.json": history, "recall.json": {"model": recall_report(0.11),
                                                          "popularity": recall_report(0.09)},
                 "evaluation.json": evaluation}
    for name, value in run_files.items():
        (run / name).write_text(json.dumps(value), encoding="utf-8")
    (run / "config.yaml").write_text(CONFIG_TEXT, encoding="utf-8")
    with open(run / "steps.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "loss", "ce_loss", "dal_shared_loss", "uwl_weight_dal_shared",
                         "nonfinite_steps"])
        writer.writerows([[10, 2.6, 2.1, 0.9, 0.5, 0], [20, 2.0, 1.6, 0.7, 0.55, 0],
                          [30, 1.3, 1.0, 0.5, 0.6, 0]])
    manifest = {"model_name": "tfrrl", "version": 1796414750, "num_parameters": 12345,
                "signatures": {"serving_default": {}, "encode_entities": {}},
                "domains": ["d0", "d1"], "tensorflow_version": "2.20.0"}
    (export / "tfrrl" / "1796414750" / "export_manifest.json").write_text(
        json.dumps(manifest), encoding="utf-8")
    documents = {**files, **run_files, "export_manifest.json": manifest}
    return {"run": run, "export": export, "data": data, "documents": documents}


class Page(html.parser.HTMLParser):
    """Numbers with their provenance, free text, images, the <pre> text, every tag seen."""

    SKIPPED = {"style", "title", "code", "pre"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: List[Tuple[str, Dict]] = []
        self.numbers: List[Dict] = []
        self.free_text: List[str] = []
        self.pre_text = ""
        self.images: List[str] = []
        self.tags: List[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "span" and attrs.get("class") == "num":
            self.numbers.append({**attrs, "text": ""})
        if tag not in VOID:
            self.stack.append((tag, attrs))

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1][0] == tag, (tag, self.stack[-3:])
        self.stack.pop()

    def handle_data(self, data):
        open_tags = [t for t, _ in self.stack]
        classes = [a.get("class") for t, a in self.stack if t == "span"]
        if "num" in classes:
            self.numbers[-1]["text"] += data
        elif "pre" in open_tags:
            self.pre_text += data
        elif "ref" not in classes and not self.SKIPPED & set(open_tags):
            self.free_text.append(data)


def expected_text(value, form=None) -> str:
    """How the page must show a JSON value (worked out here, not by the page's code): an
    identifier as it is, a count with thousands separators, a float with 4 decimals."""
    if form == "id":
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return "n/a" if math.isnan(value) else f"{value:.4f}"


def parse(path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    assert page.stack == [], "unclosed tags"
    return page


def value_at(documents, number):
    document = documents[number["data-source"]]
    for key in json.loads(number["data-path"]):
        document = document[key]
    return document


def test_every_number_is_the_runs_json_and_nothing_else_is_a_number(hand_run):
    out = write_report(str(hand_run["run"]), str(hand_run["export"]))
    assert out == str(hand_run["run"] / "report.html")
    page = parse(hand_run["run"] / "report.html")
    documents = hand_run["documents"]

    assert page.numbers, "no numbers found"
    for number in page.numbers:
        value = value_at(documents, number)
        assert number["text"] == expected_text(value, number.get("data-format")), number
        assert number["title"] == repr(value), number
    shown = {(n["data-source"], tuple(json.loads(n["data-path"]))) for n in page.numbers}
    must = {("evaluation.json", ("auc",)), ("evaluation.json", ("gauc",)),
            ("evaluation.json", ("fairness", "n")), ("stats.json", ("num_train",)),
            ("stats.json", ("corpus_entity_type_counts", "shop")),
            ("accounting.json", ("impressions", "dead_letter", "unknown_entity")),
            ("export_manifest.json", ("version",)),
            ("export_manifest.json", ("num_parameters",))}
    for method in ("model", "popularity", "recent_popularity", "item_cf", "retrieval"):
        for domain in ("d0", "d1"):
            for n in (10, 20):
                must.add(("evaluation.json", (method, "per_domain", domain, f"recall@{n}")))
        must.add(("evaluation.json", (method, "macro", "recall@20")))
    for group in ("warm", "cold"):
        must.add(("evaluation.json", ("warm_cold", group, "num_queries")))
        must.add(("evaluation.json", ("warm_cold", group, "popularity", "macro", "recall@10")))
    # The warm queries again on the corpus of the entities with TRAIN rows.
    must.add(("evaluation.json", ("seen_corpus", "warm", "model", "macro", "recall@20")))
    must.add(("evaluation.json", ("seen_corpus", "warm", "num_queries")))
    for path in (("n",), ("relative",), ("interval", 0), ("interval", 1), ("p",)):
        must.add(("evaluation.json",
                  ("versus_best_reference", "warm", "recall@10", "model") + path))
    for method in ("recent_popularity", "item_cf"):  # only the warm group has them here
        must.add(("evaluation.json", ("warm_cold", "warm", method, "macro", "recall@20")))
    for key in ("loss", "ce_loss", "val_loss", "uwl_weight_dal_shared"):
        must |= {("history.json", (key, 0)), ("history.json", (key, 1))}
    for key in ("epochs_run", "steps_run", "train_seconds", "restarts"):  # the training time
        must.add(("run.json", (key,)))
    for domain, types in documents["evaluation.json"]["fairness"]["domains"].items():
        for t in types:
            must.add(("evaluation.json", ("fairness", "domains", domain, t, "top_share")))
    assert must <= shown, sorted(must - shown)
    assert ("recall.json", ("model", "macro", "recall@10")) not in shown  # evaluation.json won
    assert expected_text(float("nan")) in [n["text"] for n in page.numbers]  # gAUC
    texts = {json.loads(n["data-path"])[0]: n["text"] for n in page.numbers
             if n["data-source"] == "export_manifest.json"}
    assert texts == {"version": "1796414750", "num_parameters": "12,345"}

    free = " ".join(page.free_text)
    assert STANDALONE_NUMBER.findall(free) == [], free
    assert page.pre_text == CONFIG_TEXT

    # Self-contained: three embedded PNGs (losses, UWL weights, recall curves), no script, no
    # external resource.
    assert "script" not in page.tags and "link" not in page.tags
    assert len(page.images) == 3
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_SIGNATURE)
    text = (hand_run["run"] / "report.html").read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    for heading in ("Training", "Recall-all@N per domain", "Warm and cold queries",
                    "Entity types and fairness", "AUC and gAUC", "Export", "Configuration",
                    "Data"):
        assert f"<h2>{heading}" in text


def test_without_an_evaluation_the_training_recall_is_shown(hand_run, tmp_path):
    (hand_run["run"] / "evaluation.json").unlink()
    out = tmp_path / "elsewhere" / "page.html"
    write_report(str(hand_run["run"]), None, str(out))
    page = parse(out)
    sources = {n["data-source"] for n in page.numbers}
    assert "recall.json" in sources and "evaluation.json" not in sources
    assert "export_manifest.json" not in sources
    for number in page.numbers:
        assert number["text"] == expected_text(value_at(hand_run["documents"], number),
                                               number.get("data-format"))
    text = out.read_text(encoding="utf-8")
    assert "Warm and cold queries</h2><p class=\"note\">not measured" in text


def test_tfrrl_report_prints_the_path(hand_run, tmp_path):
    out = tmp_path / "r.html"
    proc = subprocess.run([sys.executable, "-m", "tfrrl_cli", "report", "--run",
                           str(hand_run["run"]), "--export", str(hand_run["export"]), "--out",
                           str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(f"report: {out}")
    assert out.stat().st_size > 10_000  # the embedded figures


@pytest.mark.parametrize("run_info, expected", [
    ({"data_dir": "D"}, None),  # a run folder from before the record: no sentence
    ({"epochs_run": 2, "steps_run": 8, "train_seconds": 5, "train_seconds_complete": True,
      "restarts": 0}, "Trained 2 epochs (8 steps) in 5 seconds of wall time; restarts from a backup: 0."),
    ({"epochs_run": 2, "steps_run": 8, "train_seconds": 5, "train_seconds_complete": False,
      "restarts": 1}, "in 5 seconds of wall time at least (a backup it resumed from did not "
                      "record the time before); restarts from a backup: 1."),
])
def test_the_training_time_sentence(run_info, expected):
    text = re.sub(r"<[^>]+>", "", html_report.training_time(run_info))
    assert (text == "") if expected is None else (expected in text), text
