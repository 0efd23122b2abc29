"""Choosing settings on validation (tfrrl/training/sweep.py, ``tfrrl tune``): the grid, the
choice and the chosen experiment by hand, and a two-point sweep end to end."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import TINY_MODEL
from tfrrl import config
from tfrrl.config import ConfigError
from tfrrl.training import sweep
from tfrrl_cli.main import main


@pytest.mark.parametrize("raw,values", [
    ("0.001", ["0.001"]),
    ("0.0003, 0.001,0.003", ["0.0003", "0.001", "0.003"]),
    ("[64,32],[128]", ["[64,32]", "[128]"]),          # commas inside brackets stay
    ("{a: 1, b: 2},null", ["{a: 1, b: 2}", "null"]),
])
def test_split_values(raw, values):
    assert sweep.split_values(raw) == values


def test_grid_points_every_combination_last_key_fastest():
    grid = sweep.parse_grid(["train.learning_rate=0.001,0.003", "train.temperature=0.1,0.2"])
    assert sweep.grid_points(grid) == [
        ["train.learning_rate=0.001", "train.temperature=0.1"],
        ["train.learning_rate=0.001", "train.temperature=0.2"],
        ["train.learning_rate=0.003", "train.temperature=0.1"],
        ["train.learning_rate=0.003", "train.temperature=0.2"]]
    assert sweep.point_name(["train.learning_rate=0.003", "model.expert_units=[64, 32]"]) == \
        "learning_rate-0.003_expert_units-_64_32_"


@pytest.mark.parametrize("specs", [[], ["train.learning_rate"], ["train.learning_rate="],
                                   ["train.learning_rate=0.1,"],
                                   ["train.seed=1", "train.seed=2"]])
def test_parse_grid_mistakes(specs):
    with pytest.raises(ConfigError):
        sweep.parse_grid(specs)


def test_best_of_history_and_choose_follow_the_monitor():
    history = {"val_ce_loss": [4.9, 4.7, 4.8], "val_recall@50": [0.30, 0.35, float("nan")]}
    assert sweep.best_of_history(history, "val_ce_loss") == (4.7, 2)
    assert sweep.best_of_history(history, "val_recall@50") == (0.35, 2)
    assert sweep.best_of_history(history, "val_loss") == (None, 0)
    # Lowest loss wins; highest recall wins; the first of equal values; a failed point never.
    assert sweep.choose([4.8, None, 4.7, 4.7], "val_ce_loss") == 2
    assert sweep.choose([0.30, 0.35, None, 0.35], "val_recall@50") == 1
    with pytest.raises(ValueError):
        sweep.choose([None, None], "val_ce_loss")


def test_seeds_and_summary_by_hand():
    assert sweep.seeds_of(7, 3) == [7, 8, 9]
    with pytest.raises(ConfigError):
        sweep.seeds_of(0, 0)
    # mean of 4.6, 4.7, 4.8 = 4.7; deviations ±0.1 → sample std sqrt((0.01+0+0.01)/2) = 0.1.
    mean, std = sweep.summarize([4.6, 4.7, 4.8])
    assert mean == pytest.approx(4.7) and std == pytest.approx(0.1)
    assert sweep.summarize([4.6]) == (4.6, None)
    assert sweep.summarize([4.6, None]) == (None, None)  # one seed diverged: not a candidate
    assert sweep.runner_up([4.8, None, 4.7, 4.75], "val_ce_loss", best=2) == 3
    assert sweep.runner_up([4.8, None], "val_ce_loss", best=0) is None


def test_separation_is_welch_t_test():
    # [1,2,3] against [4,5,6]: means 2 and 5, sample variances 1 and 1, standard error
    # sqrt(1/3 + 1/3) = 0.8165, t = 3 / 0.8165 = 3.674; Welch's degrees of freedom
    # (2/3)^2 / ((1/3)^2/2 + (1/3)^2/2) = 4; two-sided p for t = 3.674 with 4 df = 0.0213.
    assert sweep.separation([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(0.0213, abs=2e-4)
    assert sweep.separation([1.0, 2.0, 3.0], [1.1, 2.1, 2.9]) > 0.5   # overlapping seeds
    assert sweep.separation([4.7, 4.7], [4.7, 4.7]) == 1.0            # no spread, same value
    assert sweep.separation([4.7, 4.7], [4.8, 4.8]) == 0.0            # no spread, apart
    assert sweep.separation([4.7], [4.8, 4.9]) is None               # one seed: no test


def test_separation_with_one_side_without_spread_is_quiet(recwarn):
    # [0.44, 0.46] against three seeds of 0.42: standard error sqrt(0.0002 / 2 + 0) = 0.01,
    # t = 0.03 / 0.01 = 3 with Welch's 1 degree of freedom; two-sided p = 1 - 2 atan(3) / pi
    # = 0.2048. The constant side is a variance of 0, not a precision problem: no warning.
    assert sweep.separation([0.44, 0.46], [0.42, 0.42, 0.42]) == pytest.approx(0.2048, abs=1e-3)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_chosen_yaml_loads_as_the_base_plus_the_overrides(tmp_path):
    overrides = ["train.learning_rate=0.003", "model.expert_units=[64,32]"]
    text = sweep.chosen_yaml("configs/synthetic/two_tower.yaml", overrides, "tuned\non val",
                             str(tmp_path))
    assert text.startswith("# tuned\n# on val\n")
    (tmp_path / "chosen.yaml").write_text(text, encoding="utf-8")
    assert yaml.safe_load(text)["base"].endswith("configs/synthetic/two_tower.yaml")
    got = config.load_experiment(str(tmp_path / "chosen.yaml")).to_dict()
    want = config.load_experiment("configs/synthetic/two_tower.yaml", overrides).to_dict()
    got.pop("name"), want.pop("name")
    assert got == want


def test_tune_trains_every_point_and_keeps_the_best(small_synthetic_prepared, tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["tune", "--config", "configs/synthetic/two_tower.yaml", "--data",
            str(small_synthetic_prepared), "--out", str(out), "--epochs", "1",
            "--grid", "train.learning_rate=0.00001,0.01,1e9"]
    for s in TINY_MODEL + ["train.steps_per_epoch=20", "train.eval_steps=5",
                           "train.max_nonfinite_steps=2"]:
        args += ["--set", s]
    assert main(args) == 0
    result = json.loads((out / "tune.json").read_text())
    values = [p["best"] for p in result["points"]]
    assert result["monitor"] == "val_ce_loss" and len(values) == 3
    # 20 steps at lr 1e-5 barely move from the initial loss; 1e-2 lowers it: lower is better.
    assert values[1] < values[0]
    # lr 1e9 diverges: its steps are skipped as non-finite, the point is recorded as failed
    # and the sweep goes on.
    assert values[2] is None and "non-finite" in result["points"][2]["runs"][0]["failure"].lower()
    assert result["chosen"] == ["train.learning_rate=0.01"]
    chosen = config.load_experiment(str(out / "chosen.yaml"))
    assert chosen.train.learning_rate == 0.01 and chosen.train.steps_per_epoch == 20
    assert "← chosen" in capsys.readouterr().out
    # A second run reads the finished points back instead of training them again, the
    # diverged one included.
    before = (out / "runs" / "learning_rate-0.01" / "history.json").stat().st_mtime
    assert main(args) == 0
    assert (out / "runs" / "learning_rate-0.01" / "history.json").stat().st_mtime == before
    assert "diverged before, read back" in capsys.readouterr().out
    again = json.loads((out / "tune.json").read_text())
    assert again["points"][2]["runs"][0]["failure"] == result["points"][2]["runs"][0]["failure"]
    # A run read back keeps its training minutes: run.json's, as when it was trained.
    trained = json.loads((out / "runs" / "learning_rate-0.01" / "run.json").read_text())
    assert (again["points"][1]["runs"][0]["minutes"] == result["points"][1]["runs"][0]["minutes"]
            == trained["train_seconds"] / 60)
    # The same folder with another fixed setting would mix runs of different settings: refused.
    assert main(args + ["--set", "train.batch_size=16"]) == 2
    assert "holds a sweep with another fixed" in capsys.readouterr().err


def test_tune_with_seeds_chooses_on_the_mean(small_synthetic_prepared, tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["tune", "--config", "configs/synthetic/two_tower.yaml", "--data",
            str(small_synthetic_prepared), "--out", str(out), "--epochs", "1", "--seeds", "2",
            "--jobs", "2",
            "--grid", "train.learning_rate=0.00001,0.01", "--set", "train.seed=5"]
    for s in TINY_MODEL + ["train.steps_per_epoch=15", "train.eval_steps=4"]:
        args += ["--set", s]
    assert main(args) == 0
    result = json.loads((out / "tune.json").read_text())
    assert result["seeds"] == [5, 6]
    for point in result["points"]:
        assert [r["seed"] for r in point["runs"]] == [5, 6]
        seed_values = [r["best"] for r in point["runs"]]
        assert point["best"] == pytest.approx(sum(seed_values) / 2)
        assert all(r["run"].endswith(f"seed-{r['seed']}") for r in point["runs"])
    assert result["chosen"] == ["train.learning_rate=0.01"]
    assert result["runner_up"] == ["train.learning_rate=0.00001"]
    assert 0.0 <= result["p_vs_runner_up"] <= 1.0
    assert "Welch t-test p =" in capsys.readouterr().out
    assert (out / "runs" / "learning_rate-0.01" / "seed-6" / "history.json").exists()
    # Two runs side by side, each in its own process, each writing its own log.
    assert "train:" in (out / "runs" / "learning_rate-0.01" / "seed-6.log").read_text()
    # The seeds come from --seeds: a grid over train.seed as well is refused, so are 0 seeds,
    # and so is another number of seeds in the same folder.
    assert main(args + ["--grid", "train.seed=1,2"]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert main(args + ["--seeds", "0"]) == 2
    assert "--seeds must be at least 1" in capsys.readouterr().err
    assert main(args + ["--jobs", "0"]) == 2
    assert "--jobs must be at least 1" in capsys.readouterr().err
    assert main(args + ["--seeds", "3"]) == 2
    assert "another seeds" in capsys.readouterr().err
