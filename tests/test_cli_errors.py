"""The command line as a user meets it (tfrrl_cli/main.py, tfrrl_cli/console.py): a mistake in
what was typed ends in ONE line, ``tfrrl <command>: error: …``, exit code 2 and no traceback —
one case per subcommand, each failing before any heavy work — and TensorFlow's start-up noise
stays out of a quiet run."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, TINY_MODEL
from tfrrl_cli import console
from tfrrl_cli.main import COMMANDS


def _tfrrl(*args, env_extra=None, drop_tf_log_level=True, timeout=300):
    env = dict(os.environ, **(env_extra or {}))
    if drop_tf_log_level:
        env.pop(console.TF_LOG_LEVEL, None)  # as a user's shell: nothing set
    return subprocess.run([sys.executable, "-m", "tfrrl_cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def not_a_demo(tmp_path_factory):
    """A folder with a file of the user's: `tfrrl demo --workdir` must refuse (and keep) it."""
    folder = tmp_path_factory.mktemp("mine")
    (folder / "thesis.tex").write_text("precious", encoding="utf-8")
    return folder


# subcommand → (arguments with one mistake, what the one line must say)
MISTAKES = {
    "generate": (["--impressions", "0", "--out", "{tmp}/raw"], "--impressions"),
    "prepare": (["--input", "{tmp}/nowhere", "--out", "{tmp}/data"], "does not exist"),
    "inspect": (["--data", "{tmp}/nowhere"], "tfrrl prepare"),
    "train": (["--config", "nope.yaml", "--data", "{tmp}/d", "--out", "{tmp}/r"],
              "'nope.yaml' is neither a YAML file nor a named experiment"),
    "tune": (["--config", "configs/synthetic/two_tower.yaml", "--data", "{tmp}/d", "--out",
              "{tmp}/s", "--grid", "train.learning_rate=0.001,0.003", "--set",
              "train.validation_fraction=0"], "train.validation_fraction > 0"),
    "evaluate": (["--run", "{tmp}/missing"], "run folder"),
    "plot-uwl": (["--run", "{tmp}/missing"], "run folder"),
    "export": (["--run", "{tmp}/missing", "--out", "{tmp}/e"], "run folder"),
    "index": (["--export", "{tmp}/missing"], "not an export folder"),
    "serve": (["--export", "{tmp}/missing"], "missing"),
    # query's only local checks are argparse's (the service judges the rest).
    "query": (["--user", "u", "--domain", "d", "--k", "ten"], "invalid int value"),
    "analyze": (["--run", "{tmp}/missing"], "run folder"),
    "report": (["--run", "{tmp}/missing"], "run folder"),
    "demo": (["--workdir", "{mine}"], "not a previous demo's"),
}


def test_every_subcommand_has_a_mistake_case():
    assert set(MISTAKES) == {c.NAME for c in COMMANDS}


@pytest.mark.parametrize("command", sorted(MISTAKES))
def test_a_mistake_is_one_line_and_exit_code_2(command, tmp_path, not_a_demo):
    args, expected = MISTAKES[command]
    args = [a.format(tmp=tmp_path, mine=not_a_demo) for a in args]
    proc = _tfrrl(command, *args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and lines[0].startswith(f"tfrrl {command}: error: "), proc.stderr
    assert expected in lines[0]
    if command == "demo":
        assert (not_a_demo / "thesis.tex").read_text(encoding="utf-8") == "precious"


def test_config_mistakes_name_the_key(tmp_path):
    """`--set model.nope=1` (the known keys, now on one line) and a typo with a close match."""
    proc = _tfrrl("train", "--config", "configs/synthetic/backbone_rrl.yaml", "--set",
                  "model.expert_unit=[8]", "--data", str(tmp_path), "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        proc.stderr.strip().splitlines()[0]]  # exactly one line
    assert "unknown config keys at model: ['expert_unit'] (did you mean model.expert_units?)" \
        in proc.stderr


@pytest.mark.parametrize("option,expected", [
    ("core_scope=eval", "adapter ciao: core_scope must be one of ('all', 'train'), got 'eval'"),
    ("colour=red", "adapter ciao has no option colour; its options: num_domains,"),
])
def test_an_adapter_option_mistake_is_one_line(option, expected, tmp_path):
    """Both are refused before any source file is read (so --input may be any folder), and
    the adapter's temporary raw folder goes with them."""
    proc = _tfrrl("prepare", "--adapter", "ciao", "--input", str(tmp_path), "--out",
                  str(tmp_path / "data"), "--adapter-option", option,
                  env_extra={"TMPDIR": str(tmp_path)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("tfrrl prepare: error: --adapter-option: ") and expected in lines[0]
    assert not list(tmp_path.glob("tfrrl-ciao-raw-*"))


def test_verbose_shows_the_traceback_and_keeps_exit_code_2(tmp_path):
    proc = _tfrrl("report", "--run", str(tmp_path / "missing"), "-v")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "RunFolderError" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("tfrrl report: error: run folder")


def test_a_quiet_run_prints_no_tensorflow_start_up_noise(hand_built_prepared):
    """`tfrrl inspect` imports TensorFlow and reads records: nothing of TensorFlow's start-up
    (cuInit, cudart stub, oneDNN, cpu_feature_guard) reaches the user."""
    proc = _tfrrl("inspect", "--data", str(hand_built_prepared["out"]), "--n", "1")
    assert proc.returncode == 0, proc.stderr
    assert "train record 0" in proc.stdout
    noise = [line for line in (proc.stdout + proc.stderr).splitlines()
             if console.STARTUP_NOISE.search(line)]
    assert noise == []


# ----------------------------------------------------------------------------------------------
# The decisions behind it, in-process.

def test_tensorflow_log_level_the_user_set_is_kept(monkeypatch):
    monkeypatch.setenv(console.TF_LOG_LEVEL, "0")
    console.configure_tensorflow_logging(verbose=False)
    assert os.environ[console.TF_LOG_LEVEL] == "0" and not console._State.filter_startup
    monkeypatch.delenv(console.TF_LOG_LEVEL)
    console.configure_tensorflow_logging(verbose=True)  # --verbose: TensorFlow's defaults
    assert console.TF_LOG_LEVEL not in os.environ and not console._State.filter_startup
    console.configure_tensorflow_logging(verbose=False)
    assert os.environ[console.TF_LOG_LEVEL] == "2" and console._State.filter_startup
    console._State.filter_startup = False


def test_only_the_start_up_noise_is_dropped():
    lines = [
        "2026-12-04 18:55:30.254075: E external/local_xla/xla/stream_executor/cuda/"
        "cuda_platform.cc:51] failed call to cuInit: INTERNAL: CUDA error\n",
        "2026-12-04 18:55:26.635028: I external/local_xla/xla/tsl/cuda/cudart_stub.cc:31] Could "
        "not find cuda drivers on your machine, GPU will not be used.\n",
        "I tensorflow/core/util/port.cc:153] oneDNN custom operations are on.\n",
        "I tensorflow/core/platform/cpu_feature_guard.cc:210] This TensorFlow binary is "
        "optimized\n",
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild "
        "TensorFlow with the appropriate compiler flags.\n",
        "E tensorflow/core/framework/op_kernel.cc:1] a real error\n",
        "UserWarning: something the user should see\n",
    ]
    assert console.drop_startup_noise(lines) == lines[-2:]


def test_os_errors_are_the_users_only_for_the_paths_they_gave(tmp_path):
    args = argparse.Namespace(run=str(tmp_path / "run"), out="o")
    theirs = FileNotFoundError(2, "No such file or directory", str(tmp_path / "run" / "x.json"))
    assert console.user_error_message(theirs, args) == \
        f"{tmp_path / 'run' / 'x.json'}: no such file or directory"
    ours = FileNotFoundError(2, "No such file or directory", "/usr/lib/some/internal.so")
    assert console.user_error_message(ours, args) is None  # a bug: keeps its traceback
    assert console.user_error_message(ValueError(str(tmp_path / "run")), args) is None
    from tfrrl.errors import UserError

    assert console.user_error_message(UserError("two\n  lines"), args) == "two lines"


NOISY_BLOCK = r"""
import os, sys
from tfrrl_cli import console
console.configure_tensorflow_logging(verbose=False)
with console.tensorflow_noise_dropped():
    os.write(2, b"kept 1\n")
    os.write(2, b"W0000 00:00:1.2 1169 op_level_cost_estimator.cc:699] Error in PredictCost() "
                b"for the op: op: \"Softmax\"\n")
    print("kept 2", file=sys.stderr, flush=True)
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written "
                b"to STDERR\n")
print("after", file=sys.stderr)
"""


def test_noise_is_dropped_from_a_captured_block_and_the_rest_kept_in_order():
    """C++ writes to descriptor 2 directly: the block captures the descriptor itself (in a
    process of its own, whose stderr is a real descriptor)."""
    env = {k: v for k, v in os.environ.items() if k != console.TF_LOG_LEVEL}
    proc = subprocess.run([sys.executable, "-c", NOISY_BLOCK], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    assert proc.stderr == "kept 1\nkept 2\nafter\n"
    env[console.TF_LOG_LEVEL] = "0"  # the user's own level: nothing is filtered
    proc = subprocess.run([sys.executable, "-c", NOISY_BLOCK], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    assert "PredictCost" in proc.stderr and "InitializeLog" in proc.stderr


def test_a_prepare_config_value_out_of_range_is_one_line(tmp_path):
    """A value PrepareConfig.validate rejects (here split per_user with a fixed cutoff) is the
    user's mistake: one line naming it, exit code 2, no traceback and no dataset."""
    (tmp_path / "prepare.yaml").write_text("split: per_user\ncutoff_timestamp: 5\n",
                                           encoding="utf-8")
    proc = _tfrrl("prepare", "--input", os.path.join(REPO, "tests"), "--out",
                  str(tmp_path / "data"), "--config", str(tmp_path / "prepare.yaml"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "tfrrl prepare: error: prepare config: cutoff_timestamp applies to split 'time' only; "
        "drop one of them"]
    assert not (tmp_path / "data").exists()


def test_a_diverged_training_is_one_line(small_synthetic_prepared, tmp_path):
    """A learning rate of 1e9 makes every step non-finite: the run stops once more than
    train.max_nonfinite_steps were skipped, and the user reads why in one line (exit code 2)."""
    sets = []
    for s in TINY_MODEL + ["train.learning_rate=1e9", "train.max_nonfinite_steps=2",
                           "train.steps_per_epoch=10", "train.eval_steps=2"]:
        sets += ["--set", s]
    proc = _tfrrl("train", "--config", "configs/synthetic/two_tower.yaml", "--data",
                  str(small_synthetic_prepared), "--out", str(tmp_path / "r"), "--epochs", "1",
                  *sets)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("tfrrl train: error:") and "non-finite" in last
    assert "train.learning_rate" in last  # what to do


def test_evaluate_ef_without_an_export_is_one_line(tmp_path):
    proc = _tfrrl("evaluate", "--run", str(tmp_path / "missing"), "--ef", "400")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("tfrrl evaluate: error: --ef")


def test_a_changed_setting_into_the_same_run_folder_is_one_line(small_synthetic_prepared,
                                                                 tmp_path):
    """The run folder holds a backup of another experiment (the user changed a --set and kept
    --out): one line that says what to do, and the backup is kept."""
    backup = tmp_path / "r" / "backup"
    backup.mkdir(parents=True)
    (backup / "latest.json").write_text('{"step": 4, "epoch": 0, "weights": "w.h5", '
                                        '"fingerprint": "another"}', encoding="utf-8")
    sets = []
    for s in TINY_MODEL + ["train.steps_per_epoch=4", "train.eval_steps=2"]:
        sets += ["--set", s]
    proc = _tfrrl("train", "--config", "configs/synthetic/two_tower.yaml", "--data",
                  str(small_synthetic_prepared), "--out", str(tmp_path / "r"), "--epochs", "1",
                  *sets)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("tfrrl train: error:") and "different experiment" in last
    assert "--no-resume" in last
    assert (backup / "latest.json").exists()
