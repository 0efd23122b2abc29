"""Multiple embedding sets for the multi-embedding backbones (Tencent §4.2/§5.1, Crocodile Eq. 3).

An *embedding set* is a full copy of the shared input stack (tfrrl.model.encoders.input_stack):
SharedEmbeddings → AdNetwork, UserTransformer, TargetAttention, with its own widths (E_m, R_m).
Set m yields its own pair representation r_m = [E_uee, E_tran, E_att, E_aid]_m, D_m = 3·R_m + E_m
wide, and feeds only expert m (Crocodile Eq. 3: "table p feeds ONLY expert p").

Set 0 is the scorer's primary stack (``Scorer.embeddings`` etc., tfrrl.model.scorer);
:class:`EmbeddingSets` holds sets 1…M−1 and, for PEG, the prior embeddings (user id, domain id,
entity id; Crocodile Eq. 9). With M = 1 and no PEG it is empty and inactive, and the model is
exactly the single-set model.

Encoding layout when active (every consumer — training, evaluation, export — goes through
``Scorer.encode_users`` / ``encode_entities`` / ``pair_representations``):

* users: ``e_tran`` = [e_tran_0 … e_tran_{M−1}, prior(user id), prior(domain id)],
  ``seq_keys`` = [seq_0 … seq_{M−1}] (last axis), ``seq_mask`` (shared), ``e_did`` = set 0's;
* entities: ``target`` (= ``entity_repr``, the served index vector) = [E_uee_0, E_aid_0, …,
  E_uee_{M−1}, E_aid_{M−1}, prior(entity id)]; ``e_uee`` / ``e_aid`` the per-set concatenations;
* pairs: r = [r_0 … r_{M−1}, prior pair] with prior pair = [user id, domain id, entity id]
  embeddings: [B, C, Σ D_m + 3·prior_dim].
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Tuple

import tensorflow as tf

from tfrrl.model.encoders.embeddings import SharedEmbeddings
from tfrrl.model.encoders.features import vocabulary_of
from tfrrl.model.encoders.input_stack import build_input_stack
from tfrrl.model.layers import SublayerContainer
from tfrrl.model.pairs import ENTITY, PAIR, USER, PairParts

MULTI_EMBEDDING_BACKBONES = ("multi_embedding", "stem", "ame", "crocodile")
PRIOR_FIELDS = ("user_id", "domain", "entity_id")  # Crocodile Eq. 9: user, domain, item ids


AME_SCALES = (0.5, 1.0, 2.0)  # automatic AME widths: × model.embedding/representation_dim


def num_sets(config, num_domains: int) -> int:
    """M: ``multi_embedding.num_sets``, or automatic (0): K + 1 for stem, multi_embedding and
    crocodile (the Backbone's 1 shared + K specific experts), 3 for ame (Tencent's 3 tables),
    1 for every single-embedding backbone."""
    me = config.multi_embedding
    if me.num_sets:
        return int(me.num_sets)
    if config.backbone == "ame":
        return len(AME_SCALES)
    return num_domains + 1 if config.backbone in MULTI_EMBEDDING_BACKBONES else 1


def gate_kind(config) -> str:
    """softmax | peg (``gate: auto`` → peg for crocodile)."""
    gate = config.multi_embedding.gate
    if gate == "auto":
        return "peg" if config.backbone == "crocodile" else "softmax"
    return gate


def disentanglement_kind(config) -> str:
    """The disentanglement loss name (``loss: auto`` → covariance for crocodile, else none)."""
    loss = config.multi_embedding.disentanglement.loss
    if loss == "auto":
        return "covariance" if config.backbone == "crocodile" else "none"
    return loss


def set_dims(config, num_domains: int) -> List[Tuple[int, int]]:
    """(embedding_dim E_m, representation_dim R_m) of every set, with the config's checks."""
    me, m = config.multi_embedding, num_sets(config, num_domains)
    is_me = config.backbone in MULTI_EMBEDDING_BACKBONES
    if m > 1 and not is_me:
        raise ValueError(f"model.multi_embedding.num_sets = {m} needs a multi-embedding backbone "
                         f"{MULTI_EMBEDDING_BACKBONES}, got model.backbone={config.backbone!r}")
    if config.backbone == "stem" and m != num_domains + 1:
        raise ValueError(f"backbone stem needs num_sets = K + 1 = {num_domains + 1} (one shared "
                         f"set + one per domain) or 0 (automatic), got {m}")

    def widths(values: Sequence[int], default: int, what: str) -> List[int]:
        if not values and config.backbone == "ame" and m == len(AME_SCALES):
            # Automatic AME: tables of half, equal and double width (Tencent: 16 / 32 / 64).
            return [max(1, round(default * s)) for s in AME_SCALES]
        if not values:
            return [int(default)] * m
        if len(values) != m:
            raise ValueError(f"model.multi_embedding.{what} has {len(values)} entries, "
                             f"num_sets = {m}")
        return [int(v) for v in values]

    emb = widths(me.embedding_dims, config.embedding_dim, "embedding_dims")
    rep = widths(me.representation_dims, config.representation_dim, "representation_dims")
    if config.backbone == "ame" and len(set(zip(emb, rep))) < 2:
        raise ValueError("backbone ame (asymmetric multi-embedding) needs embedding sets of "
                         "different sizes: set model.multi_embedding.embedding_dims (e.g. "
                         f"[8, 16, 32]), got embedding_dims={emb}, representation_dims={rep}")
    if not is_me and (me.embedding_dims or me.representation_dims):
        raise ValueError("model.multi_embedding.embedding_dims / representation_dims need a "
                         f"multi-embedding backbone {MULTI_EMBEDDING_BACKBONES}")
    return list(zip(emb, rep))


def prior_dim(config) -> int:
    """Width of each prior field embedding (0: no PEG, no prior tables)."""
    uses_peg = config.backbone in MULTI_EMBEDDING_BACKBONES and gate_kind(config) == "peg"
    return int(config.multi_embedding.prior_dim) if uses_peg else 0


def pair_widths(config, num_domains: int) -> List[int]:
    """[D_0, …, D_{M−1}, P]: each set's pair width 3·R_m + E_m, then the prior width P."""
    return ([3 * r + e for e, r in set_dims(config, num_domains)]
            + [len(PRIOR_FIELDS) * prior_dim(config)])


class InputStack(SublayerContainer):
    """One extra embedding set: its own embeddings, ad network, user transformer, attention."""

    def __init__(self, vocabulary_sizes: Mapping[str, int], embedding_dim: int,
                 representation_dim: int, config, sequence_length: int, **kwargs):
        super().__init__(**kwargs)
        (self.embeddings, self.ad_network, self.user_transformer,
         self.target_attention) = build_input_stack(
             vocabulary_sizes, embedding_dim, representation_dim, config, sequence_length,
             prefix=f"{self.name}_")
        self.build()  # never called itself: its sub-layers build on first use


def _pairs(entity_parts: Sequence[tf.Tensor], user_parts: Sequence[tf.Tensor],
           pair_parts: Sequence[tf.Tensor], order: str, pairwise: bool) -> tf.Tensor:
    """Concatenates per-entity [C, w], per-user [B, w] and per-pair [B, C, w] parts in ``order``
    (letters e/u/p, consumed in turn) → [B, C, Σw]; not ``pairwise``: all [B, w] → [B, 1, Σw]."""
    if not pairwise:
        parts = {"e": list(entity_parts), "u": list(user_parts), "p": list(pair_parts)}
        return tf.concat([parts[k].pop(0) for k in order], -1)[:, None, :]
    b = tf.shape(user_parts[0])[0]
    c = tf.shape(entity_parts[0])[0]

    def spread(x, kind):
        if kind == "e":
            return tf.broadcast_to(x[None], tf.stack([b, c, tf.shape(x)[-1]]))
        if kind == "u":
            return tf.broadcast_to(x[:, None], tf.stack([b, c, tf.shape(x)[-1]]))
        return x

    parts = {"e": list(entity_parts), "u": list(user_parts), "p": list(pair_parts)}
    return tf.concat([spread(parts[k].pop(0), k) for k in order], -1)


class EmbeddingSets(SublayerContainer):
    """Sets 1…M−1 and the PEG prior embeddings; the layout is described in the module doc."""

    def __init__(self, dims: Sequence[Tuple[int, int]], vocabulary_sizes: Mapping[str, int],
                 config, sequence_length: int, prior_dim: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.dims = [(int(e), int(r)) for e, r in dims]
        self.sets = [InputStack(vocabulary_sizes, e, r, config, sequence_length,
                                name=f"embedding_set_{m}")
                     for m, (e, r) in enumerate(self.dims) if m > 0]
        vocabs = {vocabulary_of(f) for f in PRIOR_FIELDS}
        self.prior = (SharedEmbeddings(
            {v: vocabulary_sizes[v] for v in vocabs}, prior_dim, name="prior_embeddings")
            if prior_dim else None)
        self.prior_dim = int(prior_dim)
        # model.user_id_input false: every user reads the prior table's OOV row (id 1), a
        # learned constant, so the prior carries no user identity and the width stays the same.
        self.use_user_id = config.user_id_input is not False
        self.build()

    @property
    def active(self) -> bool:
        return len(self.dims) > 1 or self.prior is not None

    def widths(self) -> Dict[str, int]:
        """Last-axis widths of the encodings (what an export's signatures declare)."""
        emb = sum(e for e, _ in self.dims)
        rep = sum(r for _, r in self.dims)
        return {"e_tran": rep + 2 * self.prior_dim, "seq_keys": emb,
                "e_did": self.dims[0][0], "entity_repr": rep + emb + self.prior_dim}

    def entities_from_repr(self, target: tf.Tensor) -> Dict[str, tf.Tensor]:
        """The entity encoding from cached ``entity_repr`` rows (the export's score_encoded)."""
        if not self.active:
            r0 = self.dims[0][1]
            return {"target": target, "e_uee": target[:, :r0], "e_aid": target[:, r0:]}
        parts, offset = [], 0
        for e, r in self.dims:
            parts.append((target[:, offset:offset + r], target[:, offset + r:offset + r + e]))
            offset += r + e
        return {"target": target, "e_uee": tf.concat([p[0] for p in parts], -1),
                "e_aid": tf.concat([p[1] for p in parts], -1)}

    def _stacks(self, primary) -> list:
        return [primary] + list(self.sets)

    def encode_users(self, primary, users: Mapping[str, tf.Tensor],
                     training: bool = False) -> Dict[str, tf.Tensor]:
        encs = [s.user_transformer(users, training=training) for s in self._stacks(primary)]
        e_tran = [e["e_tran"] for e in encs]
        if self.prior is not None:
            user_ids = (users["user_id"] if self.use_user_id
                        else tf.ones_like(users["user_id"]))  # id 1: OOV
            e_tran += [self.prior.embed("user_id", user_ids),
                       self.prior.embed("domain", users["domain"])]
        return {"e_tran": tf.concat(e_tran, -1),
                "seq_keys": tf.concat([e["seq_keys"] for e in encs], -1),
                "seq_mask": encs[0]["seq_mask"]}

    def encode_entities(self, primary, entities: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        encs = [s.ad_network(entities) for s in self._stacks(primary)]
        target = [x for e in encs for x in (e["e_uee"], e["e_aid"])]
        if self.prior is not None:
            target.append(self.prior.embed("entity_id", entities["entity_id"]))
        return {"e_uee": tf.concat([e["e_uee"] for e in encs], -1),
                "e_aid": tf.concat([e["e_aid"] for e in encs], -1),
                "target": tf.concat(target, -1)}

    def pair_parts(self, primary, users, entities) -> PairParts:
        """:meth:`pair_representations` of every user × every entity as its blocks
        (tfrrl.model.pairs): per set E_uee and E_aid per candidate, E_tran per user, E_att per
        pair; the prior's user and domain ids per user, its entity id per candidate."""
        target, e_tran, keys = entities["target"], users["e_tran"], users["seq_keys"]
        entity, user, pair, layout, t0, u0, k0 = [], [], [], [], 0, 0, 0
        for stack, (e, r) in zip(self._stacks(primary), self.dims):
            t_m = target[..., t0:t0 + r + e]
            pair.append(stack.target_attention(t_m, keys[..., k0:k0 + e], users["seq_mask"],
                                               pairwise=True))
            entity.append(t_m)
            user.append(e_tran[..., u0:u0 + r])
            layout += [(ENTITY, r), (USER, r), (PAIR, int(pair[-1].shape[-1])), (ENTITY, e)]
            t0, u0, k0 = t0 + r + e, u0 + r, k0 + e
        if self.prior is not None:
            user.append(e_tran[..., u0:])
            entity.append(target[..., t0:])
            layout += [(USER, 2 * self.prior_dim), (ENTITY, self.prior_dim)]
        return PairParts(tf.concat(entity, -1), tf.concat(user, -1), tf.concat(pair, -1),
                         tuple(layout))

    def pair_representations(self, primary, users, entities, pairwise: bool = True) -> tf.Tensor:
        """r = [r_0 … r_{M−1}, prior pair]: [B, C, Σ D_m + P] (``pairwise``: every user × every
        entity; else each user with its own entity, [B, 1, …])."""
        target, e_tran, keys = entities["target"], users["e_tran"], users["seq_keys"]
        out, t0, u0, k0 = [], 0, 0, 0
        for stack, (e, r) in zip(self._stacks(primary), self.dims):
            t_m = target[..., t0:t0 + r + e]
            e_att = stack.target_attention(t_m, keys[..., k0:k0 + e], users["seq_mask"],
                                           pairwise=pairwise)
            out.append(_pairs([t_m[..., :r], t_m[..., r:]], [e_tran[..., u0:u0 + r]], [e_att],
                              "eupe", pairwise))
            t0, u0, k0 = t0 + r + e, u0 + r, k0 + e
        if self.prior is not None:
            out.append(_pairs([target[..., t0:]], [e_tran[..., u0:]], [], "ue", pairwise))
        return tf.concat(out, -1)
