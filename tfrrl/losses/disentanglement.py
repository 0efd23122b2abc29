"""Disentanglement losses between expert outputs, behind one interface (Crocodile §4.3, Table 4).

Every loss takes the outputs of the M experts on N samples, ``outputs`` [N, M, d], and returns a
scalar that is small when the experts carry different information; each sums over the expert
pairs p > q. Selected by ``model.multi_embedding.disentanglement.loss`` and added to the total
loss with the fixed weight α (Crocodile Eq. 7) by :class:`~tfrrl.model.matching.MatchingModel`:

===============  ================================================================================
``covariance``   Crocodile's CovLoss (Eq. 6): (1/d²) Σ_{p>q} ‖(O_p − Ō_p)ᵀ (O_q − Ō_q)‖_1
``dot``          Dot product [38]: mean_n Σ_{p>q} (o_{p,n} · o_{q,n})²
``cosine``       Cosine similarity [20]: mean_n Σ_{p>q} cos²(o_{p,n}, o_{q,n})
``ole``          OLE [17]: Σ_p ‖O_p‖_* − ‖[O_1; …; O_M]‖_* (nuclear norms, rows stacked)
``dcorr``        Distance correlation [19]: Σ_{p>q} dCor²(O_p, O_q) (Székely's V-statistic)
``orthogonality`` RRL's Eq. 24 (tfrrl.losses.orthogonality, target 0) between experts p and q
===============  ================================================================================

Open points (documented defaults; README "Multi-embedding backbones"):

* CovLoss prints no 1/N, so its value grows with the batch size; ``normalize=True`` (default)
  divides the cross-covariance by N (the true covariance), ``False`` is the literal Eq. 6. The
  batch mean Ō is part of the graph (no stop-gradient; the paper does not say).
* Dot and cosine are squared so that each is minimised exactly at orthogonality whatever the
  sign (ReLU experts give non-negative dot products: same minimiser as |·|).
* OLE "(F-norm form)": replacing the nuclear norms by Frobenius norms gives Σ_p ‖O_p‖_F −
  ‖O‖_F, which does not depend on the orientation of the experts' subspaces (with O_1 ⟂ O_2 and
  with O_1 = O_2 it takes the same value), so it cannot disentangle: the original nuclear-norm
  between-class term of OLE is used, without OLE's intra-class floor Δ.
* dCorr is the squared distance correlation (no square root: its gradient is finite at 0).
* The loss runs over the whole mixed-domain batch (Eq. 7 implies it), optionally on a random
  sub-sample of ``subsample`` rows (Crocodile §5.6: 32 rows suffice).
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import tensorflow as tf

from tfrrl.config.backbones import DISENTANGLEMENT_LOSSES
from tfrrl.losses.orthogonality import orthogonality_loss


def _pairs(m: int):
    return [(p, q) for p in range(m) for q in range(p)]


def _experts(outputs: tf.Tensor):
    outputs = tf.cast(outputs, tf.float32)
    if outputs.shape.rank != 3:
        raise ValueError(f"expert outputs must be [N, M, d], got shape {outputs.shape}")
    return tf.unstack(outputs, axis=1)


def covariance_loss(outputs: tf.Tensor, normalize: bool = True) -> tf.Tensor:
    """Crocodile Eq. 6: (1/d²) Σ_{p>q} ‖(O_p − Ō_p)ᵀ(O_q − Ō_q)‖_1, with 1/N when ``normalize``."""
    experts = _experts(outputs)
    d = tf.cast(tf.shape(outputs)[-1], tf.float32)
    n = tf.cast(tf.shape(outputs)[0], tf.float32)
    centred = [o - tf.reduce_mean(o, axis=0, keepdims=True) for o in experts]
    total = tf.constant(0.0)
    for p, q in _pairs(len(experts)):
        cross = tf.matmul(centred[p], centred[q], transpose_a=True)  # [d, d]
        total += tf.reduce_sum(tf.abs(cross))
    total /= d * d
    return total / tf.maximum(n, 1.0) if normalize else total


def dot_loss(outputs: tf.Tensor, normalize: bool = True) -> tf.Tensor:
    """mean_n Σ_{p>q} (o_{p,n} · o_{q,n})²."""
    experts = _experts(outputs)
    total = tf.constant(0.0)
    for p, q in _pairs(len(experts)):
        total += tf.reduce_mean(tf.square(tf.reduce_sum(experts[p] * experts[q], -1)))
    return total


def cosine_loss(outputs: tf.Tensor, normalize: bool = True,
                epsilon: float = 1e-12) -> tf.Tensor:
    """mean_n Σ_{p>q} cos²(o_{p,n}, o_{q,n}); a zero row has cosine 0."""
    experts = [tf.math.l2_normalize(o, axis=-1, epsilon=epsilon) for o in _experts(outputs)]
    return dot_loss(tf.stack(experts, axis=1))


def _nuclear_norm(x: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.linalg.svd(x, compute_uv=False))


def ole_loss(outputs: tf.Tensor, normalize: bool = True) -> tf.Tensor:
    """OLE's between-class term: Σ_p ‖O_p‖_* − ‖[O_1; …; O_M]‖_* ≥ 0, zero iff the experts'
    row spaces are orthogonal (Lezama et al. 2018, Eq. 1 without the Δ floor)."""
    experts = _experts(outputs)
    return tf.add_n([_nuclear_norm(o) for o in experts]) - _nuclear_norm(tf.concat(experts, 0))


def _centred_distances(x: tf.Tensor) -> tf.Tensor:
    """Double-centred Euclidean distance matrix of the rows of x [N, d]:
    A_ij = a_ij − ā_i· − ā_·j + ā_··."""
    sq = tf.reduce_sum(tf.square(x[:, None, :] - x[None, :, :]), -1)
    a = tf.sqrt(tf.maximum(sq, 1e-12)) * tf.cast(sq > 1e-12, x.dtype)  # finite gradient at 0
    return (a - tf.reduce_mean(a, 0, keepdims=True) - tf.reduce_mean(a, 1, keepdims=True)
            + tf.reduce_mean(a))


def distance_correlation(x: tf.Tensor, y: tf.Tensor, epsilon: float = 1e-12) -> tf.Tensor:
    """Squared distance correlation dCor²(x, y) = dCov²(x, y) / √(dVar²(x) dVar²(y)) ∈ [0, 1]."""
    a, b = _centred_distances(x), _centred_distances(y)
    dcov = tf.reduce_mean(a * b)
    return dcov / (tf.sqrt(tf.reduce_mean(a * a) * tf.reduce_mean(b * b)) + epsilon)


def dcorr_loss(outputs: tf.Tensor, normalize: bool = True) -> tf.Tensor:
    """Σ_{p>q} dCor²(O_p, O_q)."""
    experts = _experts(outputs)
    total = tf.constant(0.0)
    for p, q in _pairs(len(experts)):
        total += distance_correlation(experts[p], experts[q])
    return total


def expert_orthogonality_loss(outputs: tf.Tensor, normalize: bool = True) -> tf.Tensor:
    """RRL's Eq. 24 with target 0 between every pair of experts (one 'domain': the batch)."""
    experts = _experts(outputs)
    one_domain = tf.zeros(tf.shape(outputs)[:1], tf.int32)
    total = tf.constant(0.0)
    for p, q in _pairs(len(experts)):
        total += orthogonality_loss(experts[p], experts[q], one_domain, 1, normalize=normalize)
    return total


LOSSES: Dict[str, Optional[Callable[..., tf.Tensor]]] = {
    "none": None,
    "covariance": covariance_loss,
    "dot": dot_loss,
    "cosine": cosine_loss,
    "ole": ole_loss,
    "dcorr": dcorr_loss,
    "orthogonality": expert_orthogonality_loss,
}
assert tuple(LOSSES) == DISENTANGLEMENT_LOSSES, "keep tfrrl.config.backbones.DISENTANGLEMENT_LOSSES in sync"


def subsample_rows(x: tf.Tensor, rows: int, seed=None) -> tf.Tensor:
    """``rows`` random rows of x (all of them when ``rows`` is 0 or ≥ N)."""
    if rows <= 0:
        return x
    n = tf.shape(x)[0]
    order = (tf.random.shuffle(tf.range(n)) if seed is None
             else tf.random.experimental.stateless_shuffle(tf.range(n), seed))
    return tf.gather(x, order[:tf.minimum(n, rows)])


def disentanglement_loss(name: str, outputs: tf.Tensor, subsample: int = 0,
                         normalize: bool = True, seed=None) -> tf.Tensor:
    """The registered loss ``name`` on expert outputs [N, M, d] (sub-sampled rows if asked)."""
    if name not in LOSSES or LOSSES[name] is None:
        known = sorted(k for k, fn in LOSSES.items() if fn is not None)
        raise ValueError(f"disentanglement loss must be one of {known}, got {name!r}")
    return LOSSES[name](subsample_rows(outputs, subsample, seed), normalize=normalize)
