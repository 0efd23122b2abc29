"""Early stopping on the retrieval metric (tfrrl/training/validation_recall.py): the monitor's
grammar, the held-out rows it ranks (the trainer's own validation rows), the per-row queries by
hand, and a run whose best checkpoint is the epoch of the highest val_recall@N."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import TINY_MODEL
from tfrrl import config
from tfrrl.config.train import TrainConfig, monitor_mode, recall_monitor_n
from tfrrl.data.reader import TRAIN, FeatureLookup, PreparedDataset
from tfrrl.evaluation.queries import row_queries
from tfrrl.evaluation.recall import recall_report
from tfrrl.evaluation.topn import model_topn
from tfrrl.training import trainer
from tfrrl.training.validation_recall import holdout_mask


@pytest.mark.parametrize("monitor,n,mode", [
    ("val_recall@50", 50, "max"), ("val_recall@1", 1, "max"),
    ("val_ce_loss", None, "min"), ("val_loss", None, "min"), ("recall@50", None, "min"),
])
def test_monitor_grammar(monitor, n, mode):
    assert recall_monitor_n(monitor) == n
    assert monitor_mode(monitor) == mode


@pytest.mark.parametrize("kwargs,message", [
    ({"monitor": "val_recall@0", "validation_fraction": 0.1}, "val_recall@N"),
    ({"monitor": "val_recall@top", "validation_fraction": 0.1}, "val_recall@N"),
    ({"monitor": "val_recall@50"}, "validation_fraction > 0"),
    ({"monitor": "val_recall@50", "validation_fraction": 0.1, "monitor_queries": -1},
     "monitor_queries"),
])
def test_recall_monitor_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_row_queries_by_hand(hand_built_evaluation):
    # TRAIN rows (cutoff 400) at or after 250: (u2, i1, d0, 250), (u2, i3, d1, 260),
    # (u1, v1, d1, 300): one query each, its own entity the answer, in data order per domain.
    data, lookup = hand_built_evaluation["data"], hand_built_evaluation["lookup"]
    corpus = hand_built_evaluation["queries"].corpus
    keys = [k.decode() for k in corpus["entity_key"]]
    queries = row_queries(data, TRAIN, lambda ids: ids["timestamp"] >= 250, lookup,
                          corpus=corpus)
    got = sorted(zip(queries.domains, queries.user_ids, queries.timestamps,
                     [keys[g[0]] for g in queries.ground_truth]))
    assert got == [("d0", b"u2", 250, "item:i1"), ("d1", b"u1", 300, "video:v1"),
                   ("d1", b"u2", 260, "item:i3")]
    assert all(len(g) == 1 for g in queries.ground_truth) and queries.num_candidates == 3
    # u1's row at 300 sees its exposures strictly before 300: i1 @100, l1 and s1 @200.
    u1 = int(np.flatnonzero(queries.user_ids == b"u1")[0])
    assert queries.features["seq_length"][u1] == 3
    assert "entity_id" not in queries.features
    # max_queries=2 over the domains' [1, 2] rows: one each.
    sub = row_queries(data, TRAIN, lambda ids: ids["timestamp"] >= 250, lookup, max_queries=2,
                      corpus=corpus)
    assert sorted(sub.domains) == ["d0", "d1"] and sub.num_candidates == 3


def _keys(batch):
    return set(zip(batch["user_id"].tolist(), batch["entity_hash"].tolist(),
                   batch["timestamp"].tolist()))


def test_holdout_mask_selects_the_trainers_validation_rows(small_synthetic_prepared):
    data = PreparedDataset(str(small_synthetic_prepared))
    lookup = FeatureLookup.from_dataset(data)
    held = trainer.carve(data.dataset(TRAIN, 256), 0.1, True, 1)
    want = set()
    for b in held.as_numpy_iterator():
        want |= _keys(b)
    keep = holdout_mask(0.1, None)
    got = set()
    for raw in data.raw_dataset(TRAIN, 4096):
        ids = {k: v.numpy() for k, v in lookup(raw).items()}
        mask = keep(ids)
        got |= _keys({k: ids[k][mask] for k in ("user_id", "entity_hash", "timestamp")})
    assert got == want and 0.05 < len(got) / data.stats["num_train"] < 0.15


def test_a_recall_monitored_run_keeps_the_epoch_of_the_highest_recall(small_synthetic_prepared,
                                                                        tmp_path):
    exp = config.load_experiment("configs/synthetic/two_tower.yaml", TINY_MODEL + [
        "train.steps_per_epoch=15", "train.validation_fraction=0.1",
        "train.monitor=val_recall@20", "train.monitor_queries=150",
        "train.early_stopping_patience=5", "train.learning_rate=0.02"])
    model, hist = trainer.train(exp, str(small_synthetic_prepared), str(tmp_path / "run"),
                                epochs=3, verbose=0)
    values = hist["val_recall@20"]
    assert len(values) == 3 and all(0.0 <= v <= 1.0 for v in values)
    # The returned model holds the best epoch's weights: ranking the same held-out rows again
    # gives the highest of the three (with mode "min" it would give the lowest).
    data = PreparedDataset(str(small_synthetic_prepared))
    queries = row_queries(data, TRAIN, holdout_mask(0.1, None), max_queries=150, seed=0)
    top = model_topn(model, queries, None, 20)
    again = recall_report(top, queries, [20])["macro"]["recall@20"]
    assert again == pytest.approx(max(values), abs=1e-9)
    assert hist["val_recall@20"] == values
