"""The registry of backbones: ``model.backbone`` name → factory.

A backbone maps the pair representation ``r`` [B, C, D] (user b × candidate c, RRL paper §III-B,
Eq. 5), the user's domain index [B] and E_did [B, m] to a dict with ``scores`` [B, C] — exactly
where the hybrid-expert backbone sits (Eq. 5–11). Everything else (input modules, sampled
softmax with logQ, negatives, export) is shared, so a row of Table III differs from another
only in this layer. Adding one is one module with a factory and one decorator::

    @register_backbone("my_backbone")
    def make_my_backbone(config, num_domains):  # a tfrrl.config.ModelConfig
        return MyBackbone(num_domains, config.expert_units, name="backbone")

Capabilities declare which training-only losses may act on a backbone's outputs:
``"rrl_losses"`` (the RRL modules need its shared / specific representations ``e_s`` / ``e_d``,
§III-D), ``"disentanglement"`` (its ``expert_outputs`` come from separate embedding sets) and
``"pair_blocks"`` (it also takes r as its blocks, :mod:`tfrrl.model.pairs`, so its first Dense
layers run per user and per candidate instead of per pair) and ``"columnwise"`` (each candidate
column's scores depend on that column only — no statistics across candidates — so a training step
may score each distinct candidate once, ``train.unique_candidates``) and ``"branched"`` (its step
is many mid-sized ops on independent branches, one per domain, so on few cores one intra-op
thread and two inter-op threads train it faster than TensorFlow's default pools:
:mod:`tfrrl.training.threads`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, FrozenSet, Sequence, Tuple

from keras import layers

from tfrrl.model.encoders import embedding_sets

RRL_LOSSES = "rrl_losses"
DISENTANGLEMENT = "disentanglement"
PAIR_BLOCKS = "pair_blocks"
COLUMNWISE = "columnwise"
BRANCHED = "branched"
CAPABILITIES = (RRL_LOSSES, DISENTANGLEMENT, PAIR_BLOCKS, COLUMNWISE, BRANCHED)

BackboneFactory = Callable[[Any, int], layers.Layer]


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone: its name, factory ``(model_config, num_domains) → layer`` and
    capabilities."""

    name: str
    factory: BackboneFactory
    capabilities: FrozenSet[str] = frozenset()


_REGISTRY: Dict[str, BackboneSpec] = {}


def register_backbone(name: str, capabilities: Sequence[str] = ()
                      ) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator: registers ``factory`` under ``name`` (``model.backbone: name``)."""
    unknown = set(capabilities) - set(CAPABILITIES)
    if unknown:
        raise ValueError(f"unknown backbone capabilities {sorted(unknown)}; known: "
                         f"{CAPABILITIES}")

    def decorator(factory: BackboneFactory) -> BackboneFactory:
        if name in _REGISTRY:
            raise ValueError(f"a backbone named {name!r} is already registered "
                             f"({_REGISTRY[name].factory.__module__})")
        _REGISTRY[name] = BackboneSpec(name, factory, frozenset(capabilities))
        return factory

    return decorator


def unregister_backbone(name: str) -> None:
    """Removes a registration (tests that register a toy backbone clean up with it)."""
    _REGISTRY.pop(name, None)


def backbone_names() -> Tuple[str, ...]:
    """Every registered name, in registration order."""
    return tuple(_REGISTRY)


def backbone_spec(name: str) -> BackboneSpec:
    if name not in _REGISTRY:
        raise ValueError(f"model.backbone must be one of {backbone_names()}, got {name!r}")
    return _REGISTRY[name]


def make_backbone(config, num_domains: int) -> layers.Layer:
    """The layer ``config.backbone`` names (a :class:`tfrrl.config.ModelConfig`), after checking
    that the configured training-only losses can act on it."""
    spec = backbone_spec(config.backbone)
    if config.rrl.any and RRL_LOSSES not in spec.capabilities:
        raise ValueError(f"the RRL modules (DAL, MVWDL, orthogonality) act on the hybrid-expert "
                         f"backbone's E_s / E_d; model.backbone={spec.name!r} has none: switch "
                         "them off or use backbone: rrl")
    embedding_sets.set_dims(config, num_domains)  # the multi-embedding settings' checks
    if (embedding_sets.disentanglement_kind(config) != "none"
            and DISENTANGLEMENT not in spec.capabilities):
        raise ValueError("model.multi_embedding.disentanglement acts on expert_outputs of a "
                         f"multi-embedding backbone {embedding_sets.MULTI_EMBEDDING_BACKBONES}; "
                         f"model.backbone={spec.name!r} has none: set its loss to none")
    return spec.factory(config, num_domains)
