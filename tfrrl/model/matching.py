"""The unified matching model: input modules → hybrid-expert backbone → score, + RRL (training).

Scoring (Eq. 1–6): R = {E_uee, E_tran, E_att, E_aid} is built for every (user, candidate) pair
because the target attention couples them; the user side (transformer) runs once per user and
the entity side (ad network) once per candidate, then only the attention and the backbone run
per pair, batched as [B, C] tensors.

Training (Alg. 1): candidates = the batch's positives (in-batch negatives) + ``num_negatives``
entities sampled from the corpus by their training frequency Q; loss = sampled softmax with logQ
correction (Eq. 2–4, 12) and accidental-hit masking. RRL terms (§III-D) use the shared and
specific representations of the positive pairs:

* DAL (Alg. 2): L_s through a gradient reversal layer into a spectrally normalised classifier,
  L_d through the specific-domain classifier;
* MVWDL (Alg. 3): the experts and projections minimise L_wd in the main step; the critics
  maximise it (with the gradient penalty) in a second, separate optimizer step on the same
  forward pass — no GRL, so the uncertainty weighting only ever sees the experts' loss;
* orthogonality (Eq. 24);
* uncertainty weighting (Eq. 25) over {L_s, L_d, L_wd, L_ortho}, or fixed 0.01 weights.

The RRL modules are training-only: :meth:`score_pairs` and :meth:`call` never touch them.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfrrl.config import ModelConfig, TrainConfig
from tfrrl.data import schema
from tfrrl.model import inputs as input_modules
from tfrrl.model import embedding_sets
from tfrrl.model.baselines import make_backbone
from tfrrl.model.disentanglement import disentanglement_loss
from tfrrl.model.domain_adversarial import DomainAdversarial
from tfrrl.model.losses import sampled_softmax_logq
from tfrrl.model.orthogonality import orthogonality_loss
from tfrrl.model import adi
from tfrrl.model import self_training as self_training_lib
from tfrrl.model.uncertainty import FixedWeighting, UncertaintyWeighting, initial_log_variance
from tfrrl.model.wasserstein import MultiViewWasserstein

FIRST_DOMAIN_ID = schema.FIRST_DOMAIN_ID
ENTITY_KEYS = [f.name for f in schema.entity_features()] + ["entity_hash"]


def domain_index(domain_ids: tf.Tensor, num_domains: int) -> tf.Tensor:
    """Domain vocabulary id → expert index k ∈ [0, K)."""
    return tf.clip_by_value(tf.cast(domain_ids, tf.int32) - FIRST_DOMAIN_ID, 0, num_domains - 1)



def _all_finite(tensors: Sequence[tf.Tensor]) -> tf.Tensor:
    """True iff every element of every tensor is finite (one fused reduction per tensor)."""
    flags = [tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(t))) for t in tensors]
    return tf.reduce_all(tf.stack(flags))


def _replica():
    """(replica context, replicas in sync, replica id) inside a step run by a distribution
    strategy (even with one replica); (None, 1, 0) without a strategy or in a cross-replica
    context (tfrrl/training/distribution.py)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or not tf.distribute.has_strategy():
        return None, 1, 0
    return ctx, ctx.num_replicas_in_sync, ctx.replica_id_in_sync_group


def _all_gather_rows(ctx, x: tf.Tensor, replicas: int, replica_id) -> tf.Tensor:
    """Every replica's ``x`` [b, ...] stacked in replica order → [R·b, ...] (equal b).

    An all-reduce SUM of zero-padded blocks: ``ReplicaContext.all_gather`` fails under
    MultiWorkerMirroredStrategy in TF 2.20 ("destinations can not be empty")."""
    b = tf.shape(x)[0]
    block = tf.scatter_nd(tf.range(b)[:, None] + tf.cast(replica_id, tf.int32) * b, x,
                          tf.concat([[replicas * b], tf.shape(x)[1:]], 0))
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, block)


def _multi_worker_logs(logs: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """Under MultiWorkerMirroredStrategy Keras 3 reduces every log with
    ``strategy.reduce("MEAN", v, axis=0)``, which rejects scalars (tensorflow#72388): give each
    log a leading axis of 1, so the reduction yields the same scalar."""
    if not isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        return logs
    return {k: tf.reshape(tf.cast(v, tf.float32), [1]) for k, v in logs.items()}


def _clip(grads: Sequence[tf.Tensor], clip_norm: Optional[float]) -> List[tf.Tensor]:
    """Global-norm clipping when ``clip_norm`` is set. A non-finite gradient stays non-finite
    (tf.clip_by_global_norm turns it into NaN), so the finite check still catches it."""
    grads = list(grads)
    if clip_norm is None or not grads:
        return grads
    return tf.clip_by_global_norm(grads, float(clip_norm))[0]


class MatchingModel(keras.Model):
    def __init__(self, config: ModelConfig, train_config: TrainConfig,
                 vocabulary_sizes: Mapping[str, int], sequence_length: int,
                 domain_sizes: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.train_config = train_config
        self.num_domains = len(domain_sizes)
        self.domain_sizes = [int(s) for s in domain_sizes]
        c = config
        # Embedding set 0 (the only one unless a multi-embedding backbone asks for M > 1).
        dims = embedding_sets.set_dims(c, self.num_domains)
        (self.embeddings, self.ad_network, self.user_transformer,
         self.target_attention) = input_modules.build_input_stack(
             vocabulary_sizes, dims[0][0], dims[0][1], c, sequence_length)
        # Sets 1…M−1 and PEG's prior embeddings (empty and inactive for M = 1 without PEG).
        self.input_sets = embedding_sets.EmbeddingSets(
            dims, vocabulary_sizes, c, sequence_length, embedding_sets.prior_dim(c),
            name="input_sets")
        self.disentanglement = embedding_sets.disentanglement_kind(c)
        self.backbone = make_backbone(c, self.num_domains)  # RRL's, or a Table III baseline
        # --- training-only RRL modules -----------------------------------------------------
        r = c.rrl
        self.dal = (DomainAdversarial(self.num_domains, hidden_units=r.dal_units,
                                      grl_scale=r.grl_scale, spectral_norm=r.spectral_norm,
                                      name="dal") if r.dal else None)
        self.mvwdl = (MultiViewWasserstein(self.num_domains, projection_dim=r.projection_dim,
                                           critic_units=r.critic_units,
                                           gp_weight=r.gradient_penalty_weight,
                                           domain_sizes=self.domain_sizes, name="mvwdl")
                      if r.mvwdl else None)
        self.aux_names: List[str] = ((["dal_shared", "dal_specific"] if r.dal else [])
                                     + (["wasserstein"] if r.mvwdl else [])
                                     + (["orthogonality"] if r.orthogonality else []))
        if self.aux_names:
            self.weighting = (UncertaintyWeighting(len(self.aux_names), self.aux_names,
                                                   init_log_var=initial_log_variance(
                                                       r.uwl_initial_weight),
                                                   name="uwl") if r.uwl else
                              FixedWeighting(len(self.aux_names), self.aux_names,
                                             weights=r.fixed_weight, name="fixed_weights"))
        else:
            self.weighting = None
        self.critic_optimizer = (keras.optimizers.Adam(r.critic_learning_rate, beta_1=0.5,
                                                       beta_2=0.9) if r.mvwdl else None)
        self._corpus: Optional[Dict[str, tf.Tensor]] = None
        # Training steps skipped because a loss or gradient was not finite (see train_step).
        # Every replica skips the same steps (the flag is all-reduced): count them once.
        self.nonfinite_steps = self.add_weight(name="nonfinite_steps", shape=(), dtype="int64",
                                               initializer="zeros", trainable=False,
                                               aggregation="only_first_replica")
        self._trackers: Dict[str, keras.metrics.Mean] = {}
        for name in ["loss", "ce_loss"] + [f"{n}_loss" for n in self.aux_names] + (
                ["critic_loss"] if r.mvwdl else []) + (
                ["disentanglement_loss"] if self.disentanglement != "none" else []):
            self._trackers[name] = keras.metrics.Mean(name=name)
        # ADI self-training (Alg. 1): p, set per epoch by PseudoFractionSchedule.
        st = c.adi.self_training
        self_training_lib.check_config(c)
        self.pseudo_fraction = (self.add_weight(
            name="pseudo_fraction", shape=(), initializer=keras.initializers.Constant(
                st.initial_fraction), trainable=False) if st.enabled else None)
        if st.enabled:
            self._trackers["self_training_loss"] = keras.metrics.Mean(name="self_training_loss")

    # ------------------------------------------------------------------------------------
    @property
    def metrics(self):
        return list(self._trackers.values())

    def set_corpus(self, corpus: Mapping[str, np.ndarray]) -> None:
        """Entity corpus (id features, ``sampling_prob``, ``entity_hash``) for the negatives."""
        self._corpus = {k: tf.constant(v) for k, v in corpus.items() if k in ENTITY_KEYS}
        q = np.asarray(corpus["sampling_prob"], dtype=np.float64)
        self._corpus_log_q = tf.constant(np.log(q / q.sum()), tf.float32)

    # -- encoders ---------------------------------------------------------------------------
    def encode_users(self, users: Mapping[str, tf.Tensor], training: bool = False):
        enc = (self.input_sets.encode_users(self, users, training) if self.input_sets.active
               else self.user_transformer(users, training=training))
        enc["e_did"] = self.embeddings.embed("domain", users["domain"])
        enc["domain_index"] = domain_index(users["domain"], self.num_domains)
        return enc

    def encode_entities(self, entities: Mapping[str, tf.Tensor], training: bool = False):
        if self.input_sets.active:
            return self.input_sets.encode_entities(self, entities)
        enc = self.ad_network(entities)
        enc["target"] = tf.concat([enc["e_uee"], enc["e_aid"]], axis=-1)
        return enc

    def pair_representations(self, users, entities) -> tf.Tensor:
        """R = [E_uee, E_tran, E_att, E_aid] for every pair: [B, C, D] (M embedding sets: the
        M representations and the PEG prior concatenated, tfrrl/model/embedding_sets.py)."""
        if self.input_sets.active:
            return self.input_sets.pair_representations(self, users, entities)
        e_att = self.target_attention(entities["target"], users["seq_keys"], users["seq_mask"],
                                      pairwise=True)
        b, c = tf.shape(e_att)[0], tf.shape(e_att)[1]

        def per_entity(x):
            return tf.broadcast_to(x[None], tf.stack([b, c, tf.shape(x)[-1]]))

        e_tran = tf.broadcast_to(users["e_tran"][:, None],
                                 tf.stack([b, c, tf.shape(users["e_tran"])[-1]]))
        return tf.concat([per_entity(entities["e_uee"]), e_tran, e_att,
                          per_entity(entities["e_aid"])], axis=-1)

    def own_pair_representations(self, users, entities) -> tf.Tensor:
        """R of each user with its own entity (row b of both): [B, 1, D]."""
        if self.input_sets.active:
            return self.input_sets.pair_representations(self, users, entities, pairwise=False)
        e_att = self.target_attention(entities["target"], users["seq_keys"], users["seq_mask"],
                                      pairwise=False)
        return tf.concat([entities["e_uee"], users["e_tran"], e_att, entities["e_aid"]],
                         axis=-1)[:, None, :]

    def score_pairs(self, users, entities, training: bool = False) -> Dict[str, tf.Tensor]:
        """Backbone scores of every (encoded user, encoded candidate) pair: ``scores`` [B, C]."""
        r = self.pair_representations(users, entities)
        return self.backbone(r, users["domain_index"], users["e_did"], training=training)

    def score_own_pairs(self, users, entities, training: bool = False) -> tf.Tensor:
        """Backbone score of each user with its own entity (row b of both): [B]."""
        r = self.own_pair_representations(users, entities)
        return self.backbone(r, users["domain_index"], users["e_did"],
                             training=training)["scores"][:, 0]

    def call(self, features: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """Score of each example's own (user, entity) pair: [B]."""
        users, entities = input_modules.split_features(features)
        return self.score_own_pairs(self.encode_users(users, training),
                                    self.encode_entities(entities, training), training)

    # -- training ---------------------------------------------------------------------------
    def _candidates(self, entities, num_negatives: int, seed=None):
        if self._corpus is None or num_negatives == 0:
            return dict(entities), tf.zeros([0], tf.int64)
        logits = self._corpus_log_q[None, :]
        if seed is None:
            idx = tf.random.categorical(logits, num_negatives)[0]
        else:
            idx = tf.random.stateless_categorical(logits, num_negatives, seed)[0]
        negatives = {k: tf.gather(v, idx) for k, v in self._corpus.items()}
        return {k: tf.concat([entities[k], tf.cast(negatives[k], entities[k].dtype)], 0)
                for k in entities if k in negatives}, idx

    def loss_terms(self, features, training: bool, seed=None):
        users, entities = input_modules.split_features(features)
        batch = tf.shape(entities["entity_id"])[0]
        # Under a distribution strategy each replica holds B/R rows of the global batch; the
        # in-batch negatives stay global: gather every replica's positive ids (ints: no
        # gradient crosses replicas) and put this replica's own at offset id·B/R.
        ctx, replicas, replica_id = _replica()
        positives, offset = entities, 0
        if ctx is not None:
            positives = {k: _all_gather_rows(ctx, v, replicas, replica_id)
                         for k, v in entities.items()}
            offset = tf.cast(replica_id, tf.int32) * batch
        labels = offset + tf.range(batch)
        candidates, _ = self._candidates(positives, self.train_config.num_negatives, seed)
        ue = self.encode_users(users, training)
        ce_enc = self.encode_entities(candidates, training)
        out = self.score_pairs(ue, ce_enc, training)
        log_q = tf.math.log(tf.maximum(tf.cast(candidates["sampling_prob"], tf.float32), 1e-12))
        ce = tf.reduce_mean(sampled_softmax_logq(
            out["scores"], candidates["entity_hash"], entities["entity_hash"], log_q,
            labels, temperature=self.train_config.temperature))
        losses = {"ce_loss": ce}
        critic_loss = None
        if self.aux_names:
            diag = tf.stack([tf.range(batch), labels], axis=1)  # each row's own positive
            e_s = tf.gather_nd(out["e_s"], diag)
            e_d = tf.gather_nd(out["e_d"], diag)
            k = ue["domain_index"]
            if self.dal is not None:
                l_s, l_d = self.dal(e_s, e_d, k, training=training)
                losses["dal_shared_loss"], losses["dal_specific_loss"] = l_s, l_d
            if self.mvwdl is not None:
                wd = self.mvwdl(e_s, k, training=training)
                # A negative estimate only means the critic lags behind; W ≥ 0, so the experts
                # minimise the positive part (and UWL never sees a negative loss).
                losses["wasserstein_loss"] = tf.nn.relu(wd["generator_loss"])
                critic_loss = wd["critic_loss"]
            if self.config.rrl.orthogonality:
                losses["orthogonality_loss"] = orthogonality_loss(
                    e_s, e_d, k, self.num_domains,
                    normalize=self.config.rrl.orthogonality_normalize)
        if self.disentanglement != "none":  # Crocodile Eq. 7: + α · L_Cov (or a Table 4 loss)
            d = self.config.multi_embedding.disentanglement
            own = tf.stack([tf.range(batch), labels], axis=1)  # each row's own positive
            losses["disentanglement_loss"] = disentanglement_loss(
                self.disentanglement, tf.gather_nd(out["expert_outputs"], own), d.subsample,
                d.normalize, seed)
        total = ce
        if "disentanglement_loss" in losses:
            total += self.config.multi_embedding.disentanglement.weight * losses[
                "disentanglement_loss"]
        if self.pseudo_fraction is not None and training:  # ADI self-training (Eq. 27)
            losses["self_training_loss"] = self._self_training_loss(ue, ce_enc, candidates,
                                                                    entities, log_q, labels)
            total += self.config.adi.self_training.weight * losses["self_training_loss"]
        if self.weighting is not None:
            total += self.weighting([losses[f"{n}_loss"] for n in self.aux_names])
        if self.losses:
            total += tf.add_n(self.losses)
        losses["loss"] = total
        return losses, critic_loss

    def _self_training_loss(self, ue, ce_enc, candidates, entities, log_q, labels):
        """Pseudo-positives of the batch's positives under the other domains
        (tfrrl/model/self_training.py), scored with dropout off and DSBN on this step's
        statistics of domain j, updating none (adi.step_statistics).

        Only the selected (row, domain) pairs are scored against the candidates, in one pass:
        the backbone scores each row on its own (per-row domain, step statistics, no dropout),
        so the loss and its gradient equal those of scoring every row under every domain and
        masking, at a fraction of the cost. The "score" confidence needs each row's own
        positive only; "softmax" needs every candidate, forward only."""
        st = self.config.adi.self_training
        temperature = self.train_config.temperature
        positive_hash = entities["entity_hash"]

        def under(users, domains):
            return {**users, "domain_index": domains,
                    "e_did": self.embeddings.embed("domain", domains + FIRST_DOMAIN_ID)}

        def ce_of(users, rows):
            scores = self.score_pairs(users, ce_enc, training=False)["scores"]
            return sampled_softmax_logq(scores, candidates["entity_hash"],
                                        tf.gather(positive_hash, rows), log_q,
                                        tf.gather(labels, rows), temperature=temperature)

        batch = tf.shape(labels)[0]
        own = {k: tf.gather(v, labels) for k, v in ce_enc.items()}  # each row's positive

        def confidence_under(j):
            users_j = under(ue, tf.fill([batch], j))
            if st.confidence == "score":
                return self.score_own_pairs(users_j, own, training=False)
            return tf.exp(-ce_of(users_j, tf.range(batch)))

        def pseudo_ce(rows, domains):
            return ce_of(under({k: tf.gather(v, rows) for k, v in ue.items()}, domains), rows)

        with adi.step_statistics(self.backbone):
            return self_training_lib.self_training_loss(
                confidence_under, pseudo_ce, self.num_domains, ue["domain_index"],
                self.pseudo_fraction)["loss"]

    def main_variables(self) -> List[tf.Variable]:
        """Trainable variables of the main optimizer: everything but the critics."""
        critic_ids = {id(v) for v in self.critic_variables()}
        return [v for v in self.trainable_variables if id(v) not in critic_ids]

    def build_optimizers(self) -> None:
        """Creates both optimizers' slots (idempotent). Done before a restore too, so a backup's
        optimizer state always loads into the same variable layout."""
        if not self.optimizer.built:
            self.optimizer.build(self.main_variables())
        if self.critic_optimizer is not None and not self.critic_optimizer.built:
            self.critic_optimizer.build(self.critic_variables())

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

    def critic_variables(self):
        return list(self.mvwdl.critic_variables) if self.mvwdl is not None else []

    def train_step(self, data):
        """One step of Alg. 1–3: the main optimizer minimises the total loss over every variable
        but the critics'; the critic optimizer maximises the Wasserstein estimate (its
        ``critic_loss``) on the same forward pass.

        Stability guard: when any loss term or any gradient is not finite the step is SKIPPED
        as a whole (no variable, optimizer slot or iteration count changes) and counted in
        ``nonfinite_steps``; :class:`~tfrrl.training.callbacks.NonFiniteGuard` stops training
        with a clear error once ``train.max_nonfinite_steps`` is exceeded. The critics'
        gradients are clipped to ``rrl.critic_clip_norm`` (WGAN-GP critics see large gradients
        early on); the main gradients to ``train.clip_norm`` when set.
        """
        critic_vars = self.critic_variables()
        main_vars = self.main_variables()
        ctx, replicas, _ = _replica()
        # Negatives drawn from a stateless seed (run seed, step): the same in every replica
        # and worker, the same as a one-worker run at that step, and replayed by a resume.
        step_seed = tf.stack([tf.constant(self.train_config.seed, tf.int64),
                              tf.cast(self.optimizer.iterations, tf.int64)])
        with tf.GradientTape(persistent=critic_vars != []) as tape:
            losses, critic_loss = self.loss_terms(data, training=True, seed=step_seed)
            # Keras' optimizers SUM the replicas' gradients: scale so the update is the mean
            # over the global batch (1 replica: unchanged).
            scaled_loss = losses["loss"] / replicas
            scaled_critic_loss = critic_loss / replicas if critic_loss is not None else None
        pairs = [(g, v) for g, v in zip(tape.gradient(scaled_loss, main_vars), main_vars)
                 if g is not None]
        grads = _clip([g for g, _ in pairs], self.train_config.clip_norm)
        checked = list(losses.values()) + grads
        critic_grads = []
        if critic_vars:
            critic_grads = _clip(tape.gradient(scaled_critic_loss, critic_vars),
                                 self.config.rrl.critic_clip_norm)
            losses["critic_loss"] = critic_loss
            checked += [critic_loss] + critic_grads
            del tape
        # Optimizer slots must exist before the conditional apply (no variable creation
        # inside a tf.cond branch).
        self.build_optimizers()

        def apply(main_grads, critic_grads):
            self.optimizer.apply_gradients(zip(main_grads, [v for _, v in pairs]))
            if critic_vars:
                self.critic_optimizer.apply_gradients(zip(critic_grads, critic_vars))
            return tf.constant(True)

        def skip():
            self.nonfinite_steps.assign_add(1)
            return tf.constant(False)

        finite = _all_finite(checked)
        if ctx is None:
            tf.cond(finite, lambda: apply(grads, critic_grads), skip)
        else:
            # One replica's NaN skips the step everywhere: all-reduce the flag. The optimizers
            # all-reduce gradients (a merge_call), which may not sit inside a cond branch in a
            # replica context: take the branch in the cross-replica context, as Keras'
            # LossScaleOptimizer does, and apply per replica from there.
            bad = ctx.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32))

            def cross_replica(strategy, bad, main_grads, critic_grads):
                def apply_everywhere():
                    strategy.extended.call_for_each_replica(apply, args=(main_grads,
                                                                         critic_grads))
                    return tf.constant(True)

                tf.cond(tf.equal(strategy.experimental_local_results(bad)[0], 0.0),
                        apply_everywhere, skip)

            ctx.merge_call(cross_replica, args=(bad, grads, critic_grads))
        logs = self._update_metrics(losses)
        logs["nonfinite_steps"] = self.nonfinite_steps.value
        return _multi_worker_logs(logs)

    def test_step(self, data):
        # A fixed seed makes the eval loss comparable across epochs (early stopping).
        losses, critic_loss = self.loss_terms(data, training=False,
                                           seed=tf.constant([self.train_config.seed, 7]))
        if critic_loss is not None:
            losses["critic_loss"] = critic_loss
        return _multi_worker_logs(self._update_metrics(losses))

    def _update_metrics(self, losses):
        for name, value in losses.items():
            if name in self._trackers:
                self._trackers[name].update_state(value)
        logs = {name: m.result() for name, m in self._trackers.items()}
        if self.config.rrl.uwl and self.weighting is not None:
            # The weights are state, not a per-batch value: log their current value (Fig. 5).
            for name, w in self.weighting.loss_weights().items():
                logs[f"uwl_weight_{name}"] = w
        return logs

    # -- introspection ----------------------------------------------------------------------
    def rrl_variables(self) -> List[tf.Variable]:
        """Variables of the training-only modules (never exported)."""
        out = []
        for module in (self.dal, self.mvwdl, self.weighting):
            if module is not None:
                out.extend(module.weights)
        return out

    def training_only_variables(self) -> List[tf.Variable]:
        """Everything the export leaves out: the RRL modules and the training bookkeeping
        (``nonfinite_steps``)."""
        return self.rrl_variables() + [self.nonfinite_steps] + (
            [self.pseudo_fraction] if self.pseudo_fraction is not None else [])
