"""The user transformer's ``model.user_id_input`` switch (tfrrl/model/encoders/user_transformer.py):
off, E_tran does not depend on the user id and the user token reads one embedding fewer; on,
changing only the user id changes E_tran; the default (auto) follows the data's timestamps."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfrrl import config
from tfrrl.model.encoders.embeddings import SharedEmbeddings
from tfrrl.model.encoders.features import USER_CATEGORICAL
from tfrrl.model.encoders.user_transformer import UserTransformer

DIM, L = 4, 3
VOCABULARIES = {"user_id": 10, "age_bucket": 5, "gender": 5, "city": 5, "occupation": 5,
                "entity_id": 20, "entity_type": 6, "category": 8}


def _users(user_ids):
    n = len(user_ids)
    users = {name: tf.fill([n], 2) for name in USER_CATEGORICAL}
    users["user_id"] = tf.constant(user_ids)
    users["seq_entity_id"] = tf.constant([[3, 4, 0]] * n)  # 0 = padding
    users["seq_entity_type"] = tf.constant([[2, 2, 0]] * n)
    users["seq_category"] = tf.constant([[5, 6, 0]] * n)
    return users


@pytest.mark.parametrize("use_user_id", [True, False])
def test_user_id_input_switch(use_user_id):
    tf.keras.utils.set_random_seed(0)
    layer = UserTransformer(SharedEmbeddings(VOCABULARIES, DIM), L, 8, num_layers=1, heads=1,
                            ff_dim=8, use_user_id=use_user_id)
    e_tran = layer(_users([1, 7]))["e_tran"].numpy()
    # The user token reads every profile embedding (DIM wide each), the user id's only if on.
    width = DIM * (len(USER_CATEGORICAL) - (0 if use_user_id else 1))
    assert layer.user_token.kernel.shape == (width, DIM)
    # Two users with the same profile and sequence, different ids.
    assert np.allclose(e_tran[0], e_tran[1]) != use_user_id


def test_the_switch_is_a_model_config_key_decided_by_the_data(hand_built_prepared, tmp_path):
    """Default None (auto): on for the hand-built rows (timed), off for untimed rows (their
    histories are the user's other TRAIN rows); an explicit value is kept either way."""
    from beam_pipelines.run import PrepareConfig, run
    from tests.conftest import IN_MEMORY, write_untimed_raw
    from tfrrl.data.reader import PreparedDataset
    from tfrrl.training.trainer import resolved_model_config

    auto = config.load_experiment(None, [])
    assert auto.model.user_id_input is None
    off = config.load_experiment(None, ["model.user_id_input=false"])
    assert off.model.user_id_input is False
    timed = PreparedDataset(str(hand_built_prepared["out"]))
    assert resolved_model_config(auto, timed).user_id_input is True
    assert resolved_model_config(off, timed).user_id_input is False
    # A backup taken before the key existed (the user id always on) still resumes: on timed
    # rows the auto default and an explicit true leave the fingerprint as it was; off changes it.
    from tfrrl.training.trainer import run_fingerprint
    on = config.load_experiment(None, ["model.user_id_input=true"])
    assert run_fingerprint(auto, timed, 10) == run_fingerprint(on, timed, 10)
    assert run_fingerprint(off, timed, 10) != run_fingerprint(on, timed, 10)
    run(str(write_untimed_raw(tmp_path / "raw")), str(tmp_path / "out"),
        PrepareConfig(sequence_length=2, min_frequency=1, eval_fraction=0.3),
        beam_args=IN_MEMORY)
    untimed = PreparedDataset(str(tmp_path / "out"))
    assert resolved_model_config(auto, untimed).user_id_input is False
    assert resolved_model_config(on, untimed).user_id_input is True


@pytest.mark.parametrize("use_user_id", [True, False])
def test_crocodiles_prior_user_embedding_follows_the_switch(hand_built_prepared, use_user_id):
    """Crocodile's PEG prior (user id, domain, entity id embeddings) reads the user id only when
    ``model.user_id_input`` is on; off, every user gets the OOV row (same width)."""
    from tests.conftest import TINY_MODEL
    from tfrrl.data.reader import TRAIN, PreparedDataset
    from tfrrl.training import trainer

    data = PreparedDataset(str(hand_built_prepared["out"]))
    exp = config.load_experiment("configs/synthetic/crocodile.yaml", TINY_MODEL + [
        f"model.user_id_input={str(use_user_id).lower()}"])
    model = trainer.build_model(exp, data)
    one = next(iter(data.dataset(TRAIN, 1)))
    users = {k: tf.concat([v, v], 0) for k, v in one.items()}
    users["user_id"] = tf.constant([2, 3], users["user_id"].dtype)  # two users, same features
    e_tran = model.encode_users(users)["e_tran"].numpy()
    prior = int(exp.model.multi_embedding.prior_dim)
    assert prior > 0
    user_prior = e_tran[:, -2 * prior:-prior]  # [.., prior(user id), prior(domain id)]
    assert np.allclose(user_prior[0], user_prior[1]) != use_user_id
