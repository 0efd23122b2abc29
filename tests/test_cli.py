"""`tfrrl generate` + `tfrrl prepare` as a user runs them (subprocesses, default Beam runner)."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tfrrl_cli.main import COMMANDS, build_parser, main


def _tfrrl(*args, check=True):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-m", "tfrrl_cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"tfrrl {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def prepared_200k(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    raw, data = root / "D", root / "P"
    _tfrrl("generate", "--impressions", "200000", "--out", str(raw))
    proc = _tfrrl("prepare", "--input", str(raw), "--out", str(data))
    return {"raw": raw, "data": data, "stdout": proc.stdout}


@pytest.mark.slow
def test_generate_prepare_200k_accounting_and_reader(prepared_200k):
    out = prepared_200k["stdout"]
    # The CLI prints: impressions: read R = train T + eval E + dead-letter D + filtered F
    m = re.search(r"impressions: read ([\d,]+) = train ([\d,]+) \+ eval ([\d,]+) "
                  r"\+ dead-letter ([\d,]+) \+ filtered ([\d,]+)\s+\[balanced\]", out)
    assert m, out
    read, train, evals, dead, filtered = (int(g.replace(",", "")) for g in m.groups())
    assert read == 200_000 == train + evals + dead + filtered
    # The synthetic default is clean and every impression is a positive: nothing is lost.
    assert dead == 0 and filtered == 0
    assert 0.05 < evals / read < 0.15

    acc = json.loads((prepared_200k["data"] / "accounting.json").read_text())
    assert acc["impressions"]["train"] == train and acc["impressions"]["balanced"]

    from tfrrl.data.reader import PreparedDataset

    data = PreparedDataset(str(prepared_200k["data"]))
    n_train = n_eval = 0
    for batch in data.dataset("train", 8192):
        n_train += int(batch["entity_id"].shape[0])
        assert batch["seq_entity_id"].shape[1] == data.sequence_length
    for batch in data.dataset("eval", 8192):
        n_eval += int(batch["entity_id"].shape[0])
    assert (n_train, n_eval) == (train, evals)
    stats = data.stats
    assert len(stats["domains"]) == 4 and sum(stats["domain_sizes"].values()) == train
    assert set(stats["corpus_entity_type_counts"]) == {"item", "shop", "video", "live"}
    types = stats["train_entity_type_counts"]
    assert types["item"] > types["shop"] + types["video"] + types["live"]  # items dominate


@pytest.mark.slow
def test_prepare_refuses_existing_output(prepared_200k):
    proc = _tfrrl("prepare", "--input", str(prepared_200k["raw"]), "--out",
                  str(prepared_200k["data"]), check=False)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr


def test_help_lists_the_commands():
    out = _tfrrl("--help").stdout
    for command in ("generate", "prepare", "inspect", "demo"):
        assert command in out


@pytest.mark.parametrize("command", [c.NAME for c in COMMANDS])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: tfrrl {command}" in capsys.readouterr().out


def test_every_subcommand_flag_has_a_help_text():
    """``tfrrl <command> --help`` says what each flag does: no argument without ``help=``."""
    subparsers = next(a for a in build_parser()._actions
                      if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {action.option_strings or action.dest}"
               for name, sub in subparsers.choices.items() for action in sub._actions
               if not isinstance(action, argparse._HelpAction)
               and not (action.help or "").strip()]
    assert not missing, f"arguments without a help text: {', '.join(missing)}"


def test_help_imports_neither_tensorflow_nor_beam():
    """Heavy imports stay inside the subcommands' ``run``: building the parser is instant."""
    probe = ("import sys; from tfrrl_cli.main import build_parser; build_parser(); "
             "print(sorted({'tensorflow', 'apache_beam', 'keras'} & set(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=True)
    assert proc.stdout.strip() == "[]"


def test_unknown_flags_go_to_beam_commands_only():
    proc = _tfrrl("inspect", "--data", "nowhere", "--runner=DataflowRunner", check=False)
    assert proc.returncode == 2 and "unrecognized arguments: --runner=DataflowRunner" in proc.stderr


def test_demo_states_its_margin_over_popularity_by_hand():
    from tfrrl_cli.demo import margin_over_popularity

    # Warm Recall-all@100: model 0.45, popularity 0.36 → 0.45 / 0.36 − 1 = +25.0%.
    def result(model, pop, queries=7):
        return {"warm_cold": {"warm": {"num_queries": queries,
                                       "model": {"macro": {"recall@100": model}},
                                       "popularity": {"macro": {"recall@100": pop}}}}}
    assert margin_over_popularity(result(0.45, 0.36)) == (
        "trained model vs popularity, Recall-all@100 on 7 warm queries: 0.4500 vs 0.3600 "
        "(+25.0%)")
    assert margin_over_popularity(result(0.1, 0.2)).endswith("(-50.0%)")
    assert "no warm" in margin_over_popularity({"warm_cold": {"warm": {"num_queries": 0}}})
