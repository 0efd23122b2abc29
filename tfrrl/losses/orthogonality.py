"""Orthogonality constraint learning, OCL (RRL paper §III-D-3, Eq. 24).

    L_ortho = Σ_k ‖ E_s^kᵀ E_d^k − I ‖_F²                                          (Eq. 24)

E_s^k, E_d^k ∈ R^{n_k × d} are the rows of domain k, so E_s^kᵀ E_d^k is d × d.

Decisions (all options keep the literal form reachable):

* ``target``: ``"zero"`` (default) penalises ‖E_s^kᵀ E_d^k‖_F², the DSN "difference loss" that
  the DIGEST (§5.7, "RRL orthogonality, e.g. ‖H_sharedᵀ H_specific‖_F²") and the paper's own
  text describe: it "penalize[s] redundant information" so that shared and specific experts
  "capture distinct and non-redundant knowledge". [AMBIG] the printed ``− I`` (``target=
  "identity"``, the literal Eq. 24) asks Σ_i e_s,ia · e_d,ib = δ_ab, i.e. every shared dimension
  *correlated* with the same specific dimension — the opposite of the stated goal. It is kept
  for exact reproduction.
* ``normalize`` (default ``True``): rows are L2-normalised and the d × d product is divided by
  n_k, i.e. M_k = (1/n_k) Σ_i ê_s,i ê_d,iᵀ. Then ‖M_k‖_F ≤ 1, so the loss is bounded (≤ K with
  ``target="zero"``), independent of the batch size and of the embeddings' scale (the literal
  form grows like n_k² and can be driven to zero by shrinking the embeddings rather than
  decorrelating them), which keeps its value meaningful for the uncertainty weighting (Eq. 25).
  ``normalize=False`` is the literal, unnormalised sum. (With ``target="identity"`` and
  ``normalize=True`` the minimum is (√d − 1)² > 0 rather than 0, since ‖M_k‖_F ≤ 1.)
* **Domains absent from the batch contribute 0.** Literally their E^k is empty, E^kᵀE^k = 0 and
  ``target="identity"`` would add a constant ‖−I‖_F² = d: no gradient, but a loss value that
  jumps with the batch's domain mix, which would mislead the uncertainty weights. With
  ``target="zero"`` both readings give 0.
* Sum over domains, as in Eq. 24 (not a mean).
"""

from __future__ import annotations

import tensorflow as tf

TARGETS = ("zero", "identity")


def orthogonality_loss(e_s: tf.Tensor, e_d: tf.Tensor, domain_index: tf.Tensor,
                       num_domains: int, normalize: bool = True,
                       target: str = "zero", epsilon: float = 1e-12) -> tf.Tensor:
    """Eq. 24 over the domains present in the batch; ``e_s``, ``e_d`` ``[N, d]``; scalar float32."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    e_s = tf.cast(e_s, tf.float32)
    e_d = tf.cast(e_d, tf.float32)
    if normalize:
        e_s = e_s * tf.math.rsqrt(tf.reduce_sum(tf.square(e_s), -1, keepdims=True) + epsilon)
        e_d = e_d * tf.math.rsqrt(tf.reduce_sum(tf.square(e_d), -1, keepdims=True) + epsilon)
    member = tf.one_hot(tf.cast(domain_index, tf.int32), num_domains, dtype=tf.float32)  # [N, K]
    products = tf.einsum("nk,na,nb->kab", member, e_s, e_d)                     # [K, d, d]
    counts = tf.reduce_sum(member, axis=0)                                                # [K]
    if normalize:
        products = products / tf.maximum(counts, 1.0)[:, None, None]
    if target == "identity":
        present = tf.cast(counts > 0, tf.float32)
        eye = tf.eye(tf.shape(e_s)[-1], tf.shape(e_d)[-1], dtype=tf.float32)
        products = products - present[:, None, None] * eye[None]
    return tf.reduce_sum(tf.square(products))
