"""The local runner with two workers (beam_pipelines/runner.py): every row accounted for, the
files on disk equal to the counters, and the dataset of one worker.

Beam's own two-worker local execution lost rows (RESULTS.md, "Two local workers"), so
``--direct_num_workers=2`` runs the link as user shards, two one-worker pipelines at a time.
"""

from __future__ import annotations

import json
import pathlib
from typing import Dict, List

import pytest

from tests.conftest import IN_MEMORY

N_IMPRESSIONS = 1_500
BAD_LINES = ["u1,i1,item,d0,notanumber,1", "", "u2,i1,item,d0,5"]  # bad_number, empty, short


def _serialized(folder: pathlib.Path) -> List[bytes]:
    import tensorflow as tf

    return sorted(r for path in sorted(folder.glob("*.tfrecord"))
                  for r in tf.data.TFRecordDataset(str(path)).as_numpy_iterator())


def _dead_letters(folder: pathlib.Path) -> List[dict]:
    return [json.loads(line) for path in sorted(folder.glob("*.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Dict:
    from beam_pipelines.run import PrepareConfig, run
    from tfrrl.data import synthetic

    root = tmp_path_factory.mktemp("workers")
    raw = root / "raw"
    synthetic.generate(synthetic.SyntheticConfig(impressions=N_IMPRESSIONS, seed=5), str(raw),
                       verbose=False)
    imp = next((raw / "impressions").glob("*.csv"))
    with open(imp, "a", encoding="utf-8") as f:
        f.write("\n".join(BAD_LINES) + "\n")
    cfg = PrepareConfig(sequence_length=4)
    two = run(str(raw), str(root / "two"), cfg, beam_args=["--direct_num_workers=2"])
    one = run(str(raw), str(root / "one"), cfg, beam_args=IN_MEMORY)
    return {"root": root, "two": two, "one": one}


def test_beam_itself_never_gets_two_local_workers():
    from apache_beam.options.pipeline_options import DirectOptions

    from beam_pipelines import runner

    options = runner.default_pipeline_options(["--direct_num_workers=2"])
    assert options.view_as(DirectOptions).direct_num_workers == 1
    assert options.view_as(DirectOptions).direct_running_mode == "in_memory"
    assert runner.local_parallelism(["--direct_num_workers=2"]) == 2
    assert runner.local_parallelism([]) == 1
    assert runner.local_parallelism(["--runner=DataflowRunner", "--direct_num_workers=2"]) == 1


def test_every_input_row_is_accounted_for(runs):
    imp = runs["two"]["accounting"]["impressions"]
    # 1,500 generated rows + 3 appended lines, each read once.
    assert imp["rows_read"] == N_IMPRESSIONS + len(BAD_LINES)
    assert imp["dead_letter"] == {"bad_number": 1, "empty_line": 1, "missing_column": 1}
    assert imp["train"] + imp["eval"] + 3 + sum(imp["filtered"].values()) == imp["rows_read"]
    assert imp["balanced"]


def test_records_on_disk_equal_the_counters(runs):
    out = runs["root"] / "two"
    imp = runs["two"]["accounting"]["impressions"]
    assert len(_serialized(out / "train")) == imp["train"]
    assert len(_serialized(out / "eval")) == imp["eval"]
    dead = [d for d in _dead_letters(out / "dead_letter") if d["source"] == "impressions"]
    assert len(dead) == sum(imp["dead_letter"].values())
    # Two shards ran: each wrote its own files.
    assert {p.name.split("-")[1] for p in (out / "train").glob("*.tfrecord")} == {
        "u000of002", "u001of002"}


@pytest.mark.parametrize("folder", ["train", "eval", "corpus"])
def test_the_dataset_of_one_worker(runs, folder):
    root = runs["root"]
    assert _serialized(root / "two" / folder) == _serialized(root / "one" / folder)
    for name in ("stats.json", "accounting.json"):
        assert (root / "two" / name).read_text() == (root / "one" / name).read_text()
    # The same lines; their order is the runner's.
    assert sorted((root / "two" / "entity_frequency.tsv").read_text().splitlines()) == sorted(
        (root / "one" / "entity_frequency.tsv").read_text().splitlines())
