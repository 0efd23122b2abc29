"""The self-training fraction schedule (ADI Alg. 1 line 15: p = p + Δp after every epoch)."""

from __future__ import annotations

import keras

from tfrrl.losses.self_training import pseudo_fraction


class PseudoFractionSchedule(keras.callbacks.Callback):
    """Sets the model's ``pseudo_fraction`` (p) at the start of every epoch to
    :func:`~tfrrl.losses.self_training.pseudo_fraction` of that epoch, from
    ``model.adi.self_training`` (a resumed run gets its epoch's p again)."""

    def __init__(self, initial: float, step: float, maximum: float):
        super().__init__()
        self.initial, self.step, self.maximum = float(initial), float(step), float(maximum)

    @classmethod
    def from_config(cls, self_training_config) -> "PseudoFractionSchedule":
        st = self_training_config
        return cls(st.initial_fraction, st.fraction_step, st.max_fraction)

    def on_epoch_begin(self, epoch, logs=None):
        if getattr(self.model, "pseudo_fraction", None) is None:
            raise ValueError("PseudoFractionSchedule needs a model with self-training enabled "
                             "(model.adi.self_training.enabled)")
        self.model.pseudo_fraction.assign(
            pseudo_fraction(epoch, self.initial, self.step, self.maximum))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["pseudo_fraction"] = float(self.model.pseudo_fraction.numpy())
