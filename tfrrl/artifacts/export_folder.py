"""Layout of an export folder: the output of ``tfrrl export`` and ``tfrrl index``.

::

    EXPORT/
      models.config                      TF Serving model config (one model, its base path)
      README.md                          how to serve it
      <model>/<version>/                 a SavedModel of the scorer (stock TF ops only)
        saved_model.pb, variables/, assets/<vocabulary>.txt
        export_manifest.json             signatures, domains, vocabulary sizes, dims
      <model>/index-<version>/           written by ``tfrrl index`` beside the SavedModel
        manifest.json                    format, sizes, checksums
        entity_keys.txt, entity_repr.npy
        hnsw/, scann/                    the ANN indexes
      <model>/users.sqlite               the user store ``tfrrl serve`` builds (its default place)

Version folders are named by a positive integer in ASCII digits (TF Serving's rule):
:func:`parse_version` is the one rule every reader uses.
"""

from __future__ import annotations

import re
from typing import Optional

SAVED_MODEL = "saved_model.pb"  # in a version folder: what makes it a SavedModel
ASSETS_DIR = "assets"  # in a version folder: the vocabularies, <vocabulary>.txt
MANIFEST = "export_manifest.json"
MODELS_CONFIG = "models.config"
README = "README.md"
INDEX_SIGNATURE = "encode_entities"  # the signature whose output the indexes are built on
INDEX_OUTPUT = "entity_repr"  # the encode_entities output the indexes are built on
INDEX_FORMAT = "tfrrl-index/1"
INDEX_PREFIX = "index-"
INDEX_MANIFEST = "manifest.json"
ENTITY_KEYS = "entity_keys.txt"
ENTITY_REPR = "entity_repr.npy"
HNSW_DIR = "hnsw"
SCANN_DIR = "scann"

_VERSION = re.compile(r"[0-9]+")


def parse_version(name: str) -> Optional[int]:
    """The version number of a version folder's name, or None when the name is not one.

    Only ASCII digits count: ``str.isdigit`` also accepts e.g. superscripts, which ``int``
    then rejects."""
    if not _VERSION.fullmatch(name):
        return None
    return int(name)
