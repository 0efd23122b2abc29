"""docs/bring_your_own_data.md is executable: its example folders (``<!-- file: … -->`` blocks)
are written out, their ``link_spec.yaml`` parses with tfrrl/data/link_spec.py, and the Beam link
(in-memory runner) prints the accounting the page shows (``<!-- output: … -->`` blocks) and
writes the dead letters it quotes."""

from __future__ import annotations

import glob
import json
import re
from typing import Dict

import pytest

from tests.conftest import IN_MEMORY, REPO
from tfrrl.data import link_spec

DOC = REPO / "docs" / "bring_your_own_data.md"
BLOCK = re.compile(r"<!-- (file|output): (\S+) -->\n```\w*\n(.*?)```", re.S)


def doc_blocks() -> Dict[str, Dict[str, str]]:
    """``{"file": {path: text}, "output": {example: text}}`` from the page."""
    found: Dict[str, Dict[str, str]] = {"file": {}, "output": {}}
    for kind, name, text in BLOCK.findall(DOC.read_text(encoding="utf-8")):
        found[kind][name] = text
    return found


def test_the_page_holds_both_examples():
    blocks = doc_blocks()
    assert set(blocks["file"]) == {
        "no_time/interactions.csv", "no_time/items.csv", "no_time/link_spec.yaml",
        "with_time/interactions.csv", "with_time/items.csv", "with_time/users.csv",
        "with_time/link_spec.yaml"}
    assert set(blocks["output"]) == {"no_time", "with_time"}


def test_the_worked_specs_parse_as_the_page_says():
    files = doc_blocks()["file"]
    plain = link_spec.DatasetSpec.from_yaml(files["no_time/link_spec.yaml"])
    assert plain.impressions.column("timestamp") is None  # no time: a random split
    assert plain.impressions.column("click") is None and plain.label == "impression"
    assert plain.users is None
    item = plain.entity_types["item"]
    assert (item.path, item.id_column) == ("items.csv", "item_id")
    assert item.fields == {"category": "category", "brand": "brand", "price": "price"}
    timed = link_spec.DatasetSpec.from_yaml(files["with_time/link_spec.yaml"])
    assert timed.impressions.column("timestamp") == "ts"
    assert timed.impressions.column("click") == "clicked" and timed.label == "click"
    assert timed.users.fields == {"age_bucket": "age", "gender": "gender"}


@pytest.mark.parametrize("example, eval_fraction", [("no_time", 0.1), ("with_time", 0.25)])
def test_the_link_prints_the_pages_accounting(example, eval_fraction, tmp_path):
    from beam_pipelines.accounting import format_accounting
    from beam_pipelines.run import PrepareConfig, run

    blocks = doc_blocks()
    raw = tmp_path / example
    for name, text in blocks["file"].items():
        if name.startswith(example + "/"):
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    assert link_spec.load(str(raw)).description.startswith("a shop's interactions")
    result = run(str(raw), str(tmp_path / "data"), PrepareConfig(eval_fraction=eval_fraction),
                 beam_args=IN_MEMORY)
    printed = format_accounting(result["accounting"]).splitlines()
    shown = blocks["output"][example].splitlines()
    assert printed[:len(shown)] == shown
    if example == "no_time":
        # The two dead letters the page quotes, as written.
        records = [json.loads(line)
                   for path in glob.glob(str(tmp_path / "data" / "dead_letter" / "*.jsonl"))
                   for line in open(path, encoding="utf-8")]
        assert sorted((r["reason"], r["detail"]) for r in records) == [
            ("duplicate_row", "bob"), ("unknown_entity", "item:i9")]
