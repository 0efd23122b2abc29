"""Trainer datasets: the validation part carved from TRAIN (train.validation_fraction)."""

from __future__ import annotations

from tests.conftest import TINY_MODEL
from tfrrl import config
from tfrrl.data.reader import PreparedDataset
from tfrrl.training import trainer


def _keys(ds):
    out = []
    for b in ds:
        for h, u, t in zip(b["entity_hash"].numpy(), b["user_id"].numpy(),
                           b["timestamp"].numpy()):
            out.append((int(h), int(u), int(t)))
    return out


def test_validation_is_carved_from_train_disjoint_and_about_the_fraction(
        small_synthetic_prepared):
    data = PreparedDataset(str(small_synthetic_prepared))
    exp = config.load_experiment(None, TINY_MODEL + ["train.validation_fraction=0.2"])
    train, valid = trainer.make_datasets(data, exp)
    t, v = _keys(train), _keys(valid)
    assert not set(t) & set(v)  # disjoint ...
    total = data.num_records("train")
    assert len(t) + len(v) <= total  # ... both from TRAIN (less the dropped remainders)
    assert 0.17 < len(v) / (len(t) + len(v)) < 0.23
    # The same examples go to validation every time (and in every process).
    assert _keys(trainer.make_datasets(data, exp)[1]) == v
    # The replayed training stream skips the validation examples too.
    stream = trainer.train_stream(data, exp).take(len(t) // exp.train.batch_size)
    assert not set(_keys(stream)) & set(v)
