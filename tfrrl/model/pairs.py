"""The pair representation r = [E_uee, E_tran, E_att, E_aid] (RRL paper Eq. 5) kept in its
parts, and the first Dense layer applied to it without building r.

Of r's blocks only E_att depends on the (user, candidate) pair: E_uee and E_aid belong to the
candidate, E_tran to the user. A Dense layer on r is linear in each block,

    W·[e_uee; e_tran; e_att; e_aid] + b = W_e·[e_uee; e_aid] + W_u·e_tran + W_p·e_att + b,

so the entity term runs once per candidate ([C, H]), the user term once per user ([B, H]) and
only W_p·e_att per pair ([B, C, H]); the [B, C, D] tensor r is never materialised. The kernel is
the Dense layer's own [D, H] kernel, sliced by block, so the parameters — and the exported
variables — are those of the plain layer, and the output equals it up to the summation order.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Sequence, Tuple, Union

import keras
import tensorflow as tf
from keras import layers

ENTITY, USER, PAIR = "entity", "user", "pair"
BLOCK_PREFIX = "block"


@dataclasses.dataclass(frozen=True)
class PairParts:
    """r of B users × C candidates as its parts.

    Attributes:
      entity: [C, w_e] the candidate blocks, concatenated.
      user: [B, w_u] the user blocks, concatenated.
      pair: [B, C, w_p] the pair blocks, concatenated.
      layout: r's blocks in concatenation order, each ``(kind, width)`` with kind in
        (``entity``, ``user``, ``pair``); the blocks of one kind appear in its tensor in this
        order.
    """

    entity: tf.Tensor
    user: tf.Tensor
    pair: tf.Tensor
    layout: Tuple[Tuple[str, int], ...]

    @property
    def width(self) -> int:
        """D, the width of the materialised r."""
        return sum(w for _, w in self.layout)

    def materialize(self) -> tf.Tensor:
        """r itself: [B, C, D] in layout order."""
        b, c = tf.shape(self.pair)[0], tf.shape(self.pair)[1]
        offsets = {ENTITY: 0, USER: 0, PAIR: 0}
        blocks = []
        for kind, width in self.layout:
            start = offsets[kind]
            offsets[kind] += width
            if kind == ENTITY:
                x = self.entity[None, :, start:start + width]
            elif kind == USER:
                x = self.user[:, None, start:start + width]
            else:
                x = self.pair[:, :, start:start + width]
            blocks.append(tf.broadcast_to(x, tf.stack([b, c, width])))
        return tf.concat(blocks, axis=-1)

    def as_inputs(self) -> Dict[str, tf.Tensor]:
        """The parts as a flat dict of tensors (one per block, keys in layout order), what a
        Keras layer's ``__call__`` passes through; :func:`as_pair` reads it back."""
        offsets = {ENTITY: 0, USER: 0, PAIR: 0}
        tensors = {ENTITY: self.entity, USER: self.user, PAIR: self.pair}
        out = {}
        for i, (kind, width) in enumerate(self.layout):
            start = offsets[kind]
            offsets[kind] += width
            out[f"{BLOCK_PREFIX}{i:02d}_{kind}"] = tensors[kind][..., start:start + width]
        return out

    def with_user_block(self, x: tf.Tensor) -> "PairParts":
        """r extended by a per-user block ``x`` [B, w] at its end (e.g. E_did for the DNN)."""
        return PairParts(self.entity, tf.concat([self.user, tf.cast(x, self.user.dtype)], -1),
                         self.pair, self.layout + ((USER, int(x.shape[-1])),))

    def rows(self, fn: Callable[[tf.Tensor], tf.Tensor]) -> "PairParts":
        """The same candidates for the users ``fn`` keeps (``fn`` maps a [B, …] tensor to the
        rows it keeps, e.g. one domain's partition)."""
        return PairParts(self.entity, fn(self.user), fn(self.pair), self.layout)


def kernel_block(kernel: tf.Tensor, layout: Sequence[Tuple[str, int]], kind: str) -> tf.Tensor:
    """The rows of a [D, H] kernel that multiply the blocks of ``kind``, in layout order
    (static slices: their gradient is a dense block, no gather)."""
    pieces, offset = [], 0
    for k, width in layout:
        if k == kind:
            pieces.append(kernel[offset:offset + width])
        offset += width
    return pieces[0] if len(pieces) == 1 else tf.concat(pieces, axis=0)


def pair_dense(layer: layers.Dense, parts: PairParts) -> tf.Tensor:
    """``layer(parts.materialize())`` without materialising r: [B, C, H]."""
    if not layer.built:
        layer.build((None, None, parts.width))
    kernel = tf.cast(layer.kernel, layer.compute_dtype)

    def term(x, kind):
        return tf.matmul(tf.cast(x, layer.compute_dtype),
                         kernel_block(kernel, parts.layout, kind))

    out = (tf.reshape(term(tf.reshape(parts.pair, [-1, parts.pair.shape[-1]]), PAIR),
                      tf.concat([tf.shape(parts.pair)[:2], [layer.units]], 0))
           + term(parts.user, USER)[:, None, :] + term(parts.entity, ENTITY)[None, :, :])
    if layer.use_bias:
        out = out + tf.cast(layer.bias, out.dtype)
    return layer.activation(out)


def apply_mlp(net: keras.Sequential, x, training: bool = False) -> tf.Tensor:
    """``net(x)`` for a materialised r or for :class:`PairParts` (then the first Dense layer
    runs by blocks, :func:`pair_dense`, and the rest of the stack as usual)."""
    if not isinstance(x, PairParts):
        return net(x, training=training)
    if not net.built:
        net.build((None, None, x.width))
    first, rest = net.layers[0], net.layers[1:]
    h = pair_dense(first, x)
    for layer in rest:
        h = layer(h, training=training)
    return h


def as_pair(r: Union[tf.Tensor, Dict[str, tf.Tensor]]) -> Union[tf.Tensor, PairParts]:
    """A backbone's input ``r``: the materialised [B, C, D] tensor as it is, or the blocks of
    :meth:`PairParts.as_inputs` as :class:`PairParts`."""
    if not isinstance(r, dict):
        return r
    keys = sorted(r)
    layout = tuple((k.split("_", 1)[1], int(r[k].shape[-1])) for k in keys)
    parts = {kind: [r[k] for k in keys if k.endswith("_" + kind)] for kind in (ENTITY, USER,
                                                                              PAIR)}
    return PairParts(tf.concat(parts[ENTITY], -1), tf.concat(parts[USER], -1),
                     tf.concat(parts[PAIR], -1), layout)


def dense_on(layer: layers.Dense, r: Union[tf.Tensor, PairParts]) -> tf.Tensor:
    """``layer(r)`` for a materialised r or :class:`PairParts` (:func:`pair_dense`)."""
    return pair_dense(layer, r) if isinstance(r, PairParts) else layer(r)
