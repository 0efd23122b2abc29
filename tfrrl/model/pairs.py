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
from typing import Callable, Dict, List, Sequence, Tuple, Union

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

    def split(self, widths: Sequence[int]) -> List["PairParts"]:
        """r split along its last axis as ``tf.split(r, widths, -1)`` would, each piece as its
        blocks (a piece holds whole blocks: a boundary inside a block is an error)."""
        pieces, offsets, stop = [], {ENTITY: 0, USER: 0, PAIR: 0}, 0
        for width in widths:
            taken, start, filled = {ENTITY: [], USER: [], PAIR: []}, stop, 0
            while filled < width and stop < len(self.layout):
                kind, w = self.layout[stop]
                taken[kind].append((offsets[kind], w))
                offsets[kind], filled, stop = offsets[kind] + w, filled + w, stop + 1
            if filled != width:
                raise ValueError(f"widths {list(widths)} cut a block of layout {self.layout} "
                                 f"or exceed its width {self.width}")
            pieces.append(PairParts(*(_columns(t, taken[k]) for t, k in (
                (self.entity, ENTITY), (self.user, USER), (self.pair, PAIR))),
                self.layout[start:stop]))
        if stop != len(self.layout):
            raise ValueError(f"widths {list(widths)} leave part of r's {self.width} unused")
        return pieces

    @staticmethod
    def concat(pieces: Sequence["PairParts"]) -> "PairParts":
        """The pieces side by side: ``tf.concat([p.materialize() for p in pieces], -1)`` as
        blocks (every piece of the same users and candidates)."""
        return PairParts(*(tf.concat([getattr(p, kind) for p in pieces], -1)
                           for kind in (ENTITY, USER, PAIR)),
                         tuple(block for p in pieces for block in p.layout))

    def rows(self, fn: Callable[[tf.Tensor], tf.Tensor]) -> "PairParts":
        """The same candidates for the users ``fn`` keeps (``fn`` maps a [B, …] tensor to the
        rows it keeps, e.g. one domain's partition)."""
        return PairParts(self.entity, fn(self.user), fn(self.pair), self.layout)


def _columns(x: tf.Tensor, spans: Sequence[Tuple[int, int]]) -> tf.Tensor:
    """The last-axis ``(start, width)`` spans of ``x``, side by side (none: zero columns)."""
    if not spans:
        return x[..., :0]
    return tf.concat([x[..., start:start + width] for start, width in spans], -1)


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

    kinds = {kind for kind, _ in parts.layout}
    shape = tf.concat([tf.shape(parts.pair)[:2], [layer.units]], 0)
    # The bias joins the per-user term ([B, H]; else the per-candidate one) before it is
    # broadcast, so the [B, C, H] output takes two additions, not three, and the bias
    # gradient sums a [B, H] tensor, not a [B, C, H] one.
    bias = tf.cast(layer.bias, layer.compute_dtype) if layer.use_bias else None
    narrow = []
    for kind, axis in ((USER, 1), (ENTITY, 0)):
        if kind in kinds:
            t = term(getattr(parts, kind), kind)
            if bias is not None:
                t, bias = t + bias, None
            narrow.append(tf.expand_dims(t, axis))
    terms = [tf.reshape(term(tf.reshape(parts.pair, [-1, parts.pair.shape[-1]]), PAIR), shape)
             ] if PAIR in kinds else []
    terms += narrow
    out = terms[0]
    for t in terms[1:]:
        out = out + t
    if PAIR not in kinds:  # e.g. the PEG prior: per-user and per-candidate blocks only
        out = tf.broadcast_to(out, shape)
    if bias is not None:  # a layout of pair blocks only
        out = out + bias
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


def side_by_side(pieces: Sequence[Union[tf.Tensor, PairParts]]) -> Union[tf.Tensor, PairParts]:
    """Materialised r's concatenated on the last axis, or :meth:`PairParts.concat` of blocks."""
    if isinstance(pieces[0], PairParts):
        return PairParts.concat(pieces)
    return tf.concat(list(pieces), -1)


def rows_apart(items: Sequence[Union[tf.Tensor, PairParts]]
               ) -> Tuple[List[tf.Tensor], Callable[[Sequence[tf.Tensor]], list]]:
    """What routing by rows splits: the tensors of ``items`` whose first axis is the users
    (a materialised r itself; of blocks, the per-user and per-pair tensors, never the
    candidates'), and the function that rebuilds the items from those tensors' rows."""
    tensors: List[tf.Tensor] = []
    kept = []
    for x in items:
        kept.append((x, len(tensors)))
        tensors += [x.user, x.pair] if isinstance(x, PairParts) else [x]

    def rebuild(rows: Sequence[tf.Tensor]) -> list:
        return [PairParts(x.entity, rows[i], rows[i + 1], x.layout)
                if isinstance(x, PairParts) else rows[i] for x, i in kept]

    return tensors, rebuild
