"""Backbones: the layer between the pair representations and the scores (RRL paper §III-C and
the baselines of Table III), one module per architecture, selected by ``model.backbone``
through the registry (:func:`register_backbone`, :func:`make_backbone`).

=================  ==========================================================================
``backbone``       architecture (module)
=================  ==========================================================================
``rrl``            hybrid experts + CONCAT gates + K towers (RRL §III-C; hybrid_experts)
``dnn``            one MLP tower on mixed data; the domain enters as E_did (dnn)
``shared_bottom``  a shared MLP, then one tower per domain (shared_bottom)
``cross_stitch``   one MLP column per domain mixed by cross-stitch units (cross_stitch)
``mmoe``           shared experts, a softmax gate and a tower per domain (mixture_of_experts)
``dselect_k``      MMoE with DSelect-k gates (mixture_of_experts)
``ple``            Progressive Layered Extraction (ple)
``adi``            Adaptive Domain Interest network (adi)
``two_tower``      dot product of a user tower and an entity tower (two_tower)
``multi_embedding``, ``stem``, ``ame``, ``crocodile``: M embedding sets, one expert per set
                   (multi_embedding)
=================  ==========================================================================
"""

# Importing the built-in modules registers them, in this order.
from tfrrl.model.backbones import hybrid_experts  # noqa: F401  rrl
from tfrrl.model.backbones import dnn  # noqa: F401
from tfrrl.model.backbones import shared_bottom  # noqa: F401
from tfrrl.model.backbones import cross_stitch  # noqa: F401
from tfrrl.model.backbones import mixture_of_experts  # noqa: F401  mmoe, dselect_k
from tfrrl.model.backbones import ple  # noqa: F401
from tfrrl.model.backbones import adi  # noqa: F401
from tfrrl.model.backbones import multi_embedding  # noqa: F401  multi_embedding, stem, ame, crocodile
from tfrrl.model.backbones import two_tower  # noqa: F401
from tfrrl.model.backbones.registry import (BackboneSpec, backbone_names, backbone_spec,
                                            make_backbone, register_backbone,
                                            unregister_backbone)

__all__ = ["BackboneSpec", "backbone_names", "backbone_spec", "make_backbone",
           "register_backbone", "unregister_backbone"]
