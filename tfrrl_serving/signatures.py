"""A SavedModel signature as serving code calls it: a function of ``tf.saved_model.load`` or a
served one (:class:`tfrrl_serving.prediction.remote_model.RemoteSignature`), both called with
keyword tensors named by :func:`signature_inputs`."""

from __future__ import annotations

from typing import Any, Dict


def signature_inputs(fn) -> Dict[str, Any]:
    """``{input name: tf.TensorSpec}`` of a signature function (its keyword inputs; a
    ``tf.function`` traced with one positional dict gives that dict)."""
    args, kwargs = fn.structured_input_signature
    return dict(kwargs) if kwargs else dict(args[0])
