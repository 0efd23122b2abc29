"""The unified matching model for training (RRL paper Alg. 1): a composition of

* the :class:`~tfrrl.model.scorer.Scorer` (input modules → backbone → score; what is exported),
* the :class:`~tfrrl.tasks.RetrievalTask` (in-batch + corpus-sampled negatives, sampled softmax
  with logQ correction, Eq. 2–4 and 12),
* the training-only auxiliary losses: the RRL terms on the positives' E_s / E_d
  (:class:`~tfrrl.losses.rrl.RRLLosses`, §III-D) and their weighting (Eq. 25,
  :func:`~tfrrl.losses.weighting.make_weighting`), Crocodile's disentanglement loss
  (:mod:`tfrrl.losses.disentanglement`) and ADI's self-training (:mod:`tfrrl.losses.self_training`),
* the guarded two-optimizer step (:mod:`tfrrl.training.step`).

The training-only modules never touch scoring: :meth:`call` is the scorer's.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from tfrrl.config.model import ModelConfig
from tfrrl.config.train import TrainConfig
from tfrrl.losses import disentanglement, self_training
from tfrrl.losses.gradient_reversal import dann_strength
from tfrrl.losses.rrl import RRLLosses
from tfrrl.losses.weighting import make_weighting
from tfrrl.model.backbones import backbone_spec
from tfrrl.model.backbones.registry import COLUMNWISE
from tfrrl.model.encoders import embedding_sets
from tfrrl.model.encoders.features import split_features
from tfrrl.model.scorer import Scorer
from tfrrl.tasks import RetrievalTask
from tfrrl.tasks.retrieval import distinct_columns
from tfrrl.training import step
from tfrrl.training.loss_logs import LossLogs


# The distinct candidates of a step are padded to a multiple of this (distinct_columns): at
# most 15 wasted columns of 256, for 16 times fewer matmul shapes for oneDNN to compile.
DISTINCT_MULTIPLE = 16


class MatchingModel(keras.Model):
    """Scorer + retrieval task + auxiliary losses + loss weighting.

    Args:
      config: a :class:`tfrrl.config.ModelConfig`.
      train_config: a :class:`tfrrl.config.TrainConfig` (negatives, temperature, seed, clip).
      vocabulary_sizes: rows of each embedding table.
      sequence_length: L, the exposure sequence length.
      domain_sizes: |D^k| per domain, in expert-index order.
    """

    def __init__(self, config: ModelConfig, train_config: TrainConfig,
                 vocabulary_sizes: Mapping[str, int], sequence_length: int,
                 domain_sizes: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.train_config = train_config
        self.domain_sizes = [int(s) for s in domain_sizes]
        self.num_domains = len(self.domain_sizes)
        self_training.check_config(config)
        self.scorer = Scorer(config, vocabulary_sizes, sequence_length, self.num_domains,
                             name="scorer")
        self.task = RetrievalTask(train_config.num_negatives, train_config.temperature)
        # train.unique_candidates holds exactly where the scores of a column depend on that
        # column only: a columnwise backbone without dropout (whose masks differ per pair).
        self.unique_candidates = bool(
            train_config.unique_candidates and config.dropout == 0
            and not config.adi.self_training.enabled
            and COLUMNWISE in backbone_spec(config.backbone).capabilities)
        # --- training-only modules ------------------------------------------------------------
        self.rrl = RRLLosses(config.rrl, self.domain_sizes, name="rrl") if config.rrl.any \
            else None
        self.aux_names: List[str] = list(self.rrl.names) if self.rrl is not None else []
        self.weighting = make_weighting(config.rrl, self.aux_names)
        self.critic_optimizer = (self.rrl.make_critic_optimizer(train_config.fused_adam)
                                 if self.rrl else None)
        self.disentanglement = embedding_sets.disentanglement_kind(config)
        st = config.adi.self_training
        # ADI self-training (Alg. 1): p, set per epoch by PseudoFractionSchedule.
        self.pseudo_fraction = (self.add_weight(
            name="pseudo_fraction", shape=(), initializer=keras.initializers.Constant(
                st.initial_fraction), trainable=False) if st.enabled else None)
        # DANN schedule of the gradient reversal (rrl.grl_schedule: dann; no effect without
        # DAL): the run's length in steps, set by the trainer (set_training_steps); the
        # progress p = optimizer iterations / length, so a resumed run (its iterations restored
        # from the backup) continues the ramp where it was.
        self.grl_ramps = self.rrl is not None and self.rrl.dal is not None and \
            config.rrl.grl_schedule == "dann"
        self.training_steps = (self.add_weight(
            name="training_steps", shape=(), dtype="int64", initializer="zeros",
            trainable=False, aggregation="only_first_replica") if self.grl_ramps else None)
        # Training steps skipped because a loss or gradient was not finite (training/step.py).
        # Every replica skips the same steps (the flag is all-reduced): count them once.
        self.nonfinite_steps = self.add_weight(name="nonfinite_steps", shape=(), dtype="int64",
                                               initializer="zeros", trainable=False,
                                               aggregation="only_first_replica")
        self.loss_logs = LossLogs(
            ["loss", self.task.metric] + [f"{n}_loss" for n in self.aux_names]
            + (["critic_loss"] if config.rrl.mvwdl else [])
            + (["disentanglement_loss"] if self.disentanglement != "none" else [])
            + (["self_training_loss"] if st.enabled else []),
            state_logs=self._state_logs if (config.rrl.uwl and self.weighting) or self.grl_ramps
            else None)

    # -- the scorer's interface ----------------------------------------------------------------
    @property
    def backbone(self) -> keras.layers.Layer:
        return self.scorer.backbone

    def encode_users(self, users, training: bool = False):
        return self.scorer.encode_users(users, training)

    def encode_entities(self, entities, training: bool = False):
        return self.scorer.encode_entities(entities, training)

    def score_pairs(self, users, entities, training: bool = False):
        return self.scorer.score_pairs(users, entities, training)

    def call(self, features: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """Score of each example's own (user, entity) pair: [B]."""
        return self.scorer(features, training=training)

    def set_corpus(self, corpus: Mapping[str, np.ndarray]) -> None:
        """Entity corpus the task samples negatives from."""
        self.task.set_corpus(corpus)

    # -- losses ------------------------------------------------------------------------------
    def compute_losses(self, features, training: bool, seed=None
                       ) -> Tuple[Dict[str, tf.Tensor], Optional[tf.Tensor]]:
        """({"loss": total, "ce_loss": …, "<aux>_loss": …}, the MVWDL critics' loss or None)."""
        users, entities = split_features(features)
        positives, labels = self.task.global_positives(entities)
        candidates, _ = self.task.sample_negatives(positives, seed)
        ue = self.scorer.encode_users(users, training)
        scored, columns = candidates, None
        if self.unique_candidates:  # each distinct candidate scored once (exact: columnwise)
            first, columns = distinct_columns(candidates["entity_hash"], DISTINCT_MULTIPLE)
            scored = {k: tf.gather(v, first) for k, v in candidates.items()}
        ce_enc = self.scorer.encode_entities(scored, training)
        out = self.scorer.score_pairs(ue, ce_enc, training)
        scores = out["scores"] if columns is None else tf.gather(out["scores"], columns, axis=1)
        losses = {"ce_loss": self.task.loss(scores, candidates, entities["entity_hash"], labels,
                                            users.get("timestamp"), training)}
        # each row's positive among the scored columns
        own_columns = labels if columns is None else tf.gather(columns, labels)
        own = tf.stack([tf.range(tf.shape(labels)[0]), own_columns], axis=1)
        critic_loss = None
        total = losses["ce_loss"]
        if self.rrl is not None:
            aux, critic_loss = self.rrl.compute(tf.gather_nd(out["e_s"], own),
                                                tf.gather_nd(out["e_d"], own),
                                                ue["domain_index"], training)
            losses.update(aux)
        if self.disentanglement != "none":  # Crocodile Eq. 7: + α · L_Cov (or a Table 4 loss)
            d = self.config.multi_embedding.disentanglement
            losses["disentanglement_loss"] = disentanglement.disentanglement_loss(
                self.disentanglement, tf.gather_nd(out["expert_outputs"], own), d.subsample,
                d.normalize, seed)
            total += d.weight * losses["disentanglement_loss"]
        if self.pseudo_fraction is not None and training:  # ADI self-training (Eq. 27)
            st = self.config.adi.self_training
            losses["self_training_loss"] = self_training.scorer_self_training_loss(
                self.scorer, self.task, ue, ce_enc, candidates, entities["entity_hash"], labels,
                self.pseudo_fraction, st.confidence)
            total += st.weight * losses["self_training_loss"]
        if self.weighting is not None:
            total += self.weighting([losses[f"{n}_loss"] for n in self.aux_names])
        if self.losses:
            total += tf.add_n(self.losses)
        losses["loss"] = total
        return losses, critic_loss

    # -- training ----------------------------------------------------------------------------
    @property
    def metrics(self):
        return self.loss_logs.metrics

    def update_metrics(self, losses: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        return self.loss_logs.update(losses)

    def _state_logs(self) -> Dict[str, tf.Tensor]:
        """Logged as they are at each step: UWL's weights, the gradient-reversal strength."""
        logs = {}
        if self.config.rrl.uwl and self.weighting is not None:
            logs.update({f"uwl_weight_{n}": w for n, w in self.weighting.loss_weights().items()})
        if self.grl_ramps:
            logs["grl_strength"] = self.rrl.dal.grl.scale_variable.value
        return logs

    def set_training_steps(self, steps: int) -> None:
        """The run's length in optimizer steps (epochs × steps per epoch), the denominator of
        the DANN schedule's progress; a no-op without it."""
        if self.training_steps is not None:
            self.training_steps.assign(int(steps))

    def ramp_gradient_reversal(self) -> None:
        """Sets the gradient-reversal strength of this step (``rrl.grl_schedule: dann``):
        λ_p = grl_scale · (2 / (1 + exp(−10 p)) − 1) with p = iterations / training_steps
        (:func:`~tfrrl.losses.gradient_reversal.dann_strength`). Runs in the graph of the
        training step, before the forward pass."""
        if not self.grl_ramps:
            return
        total = tf.debugging.assert_positive(
            self.training_steps, message="the DANN schedule (model.rrl.grl_schedule: dann) "
            "needs the run's length: call set_training_steps(steps) before fit")
        with tf.control_dependencies([total]):
            progress = (tf.cast(self.optimizer.iterations, tf.float32)
                        / tf.cast(self.training_steps, tf.float32))
        self.rrl.dal.grl.assign_scale(self.config.rrl.grl_scale * dann_strength(progress))

    def train_step(self, data):
        self.ramp_gradient_reversal()
        return step.train_step(self, data)

    def test_step(self, data):
        return step.test_step(self, data)

    def build_optimizers(self) -> None:
        step.build_optimizers(self)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Keras hook run by ``fit``/``evaluate`` under a distribution strategy. Keras' own
        version reduces one input batch across replicas to build missing state symbolically,
        which MultiWorkerMirroredStrategy rejects for dict inputs, and builds the main
        optimizer over every variable (critics included). Here the model is already built on a
        real batch (:func:`tfrrl.training.trainer.build_model`); only the optimizers' slots may
        be missing, built with their own variable lists."""
        unbuilt = [layer.name for layer in self._flatten_layers() if not layer.built]
        if unbuilt:
            raise RuntimeError("build the model on a batch before fit/evaluate "
                               f"(tfrrl.training.trainer.build_model); unbuilt: {unbuilt}")
        if self.optimizer is not None:
            with self.distribute_strategy.scope():
                self.build_optimizers()

    # -- variables ---------------------------------------------------------------------------
    def critic_variables(self) -> List[tf.Variable]:
        return self.rrl.critic_variables if self.rrl is not None else []

    def main_variables(self) -> List[tf.Variable]:
        """Trainable variables of the main optimizer: everything but the critics."""
        critic_ids = {id(v) for v in self.critic_variables()}
        return [v for v in self.trainable_variables if id(v) not in critic_ids]

    def rrl_variables(self) -> List[tf.Variable]:
        """Variables of the training-only loss modules (never exported)."""
        return [v for module in (self.rrl, self.weighting) if module is not None
                for v in module.weights]

    def training_only_variables(self) -> List[tf.Variable]:
        """Everything the export leaves out: the loss modules and the training bookkeeping."""
        return self.rrl_variables() + [self.nonfinite_steps] + (
            [self.pseudo_fraction] if self.pseudo_fraction is not None else []) + (
            [self.training_steps] if self.training_steps is not None else [])
