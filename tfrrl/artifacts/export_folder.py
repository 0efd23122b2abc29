"""Layout of an export folder: the output of ``tfrrl export`` and ``tfrrl index``.

::

    EXPORT/
      models.config                      TF Serving model config (one model, its base path)
      README.md                          how to serve it
      <model>/<version>/                 a SavedModel of the scorer (stock TF ops only)
        saved_model.pb, variables/, assets/<vocabulary>.txt
        export_manifest.json             signatures, domains, vocabulary sizes, dims
        prior_shift.npz                  optional (``tfrrl export --prior-shift``): the score
                                         offset of every (domain, entity), added when serving
      <model>/index-<version>/           written by ``tfrrl index`` beside the SavedModel
        manifest.json                    format, sizes, and ``checksums``: the sha256 of every
                                         other file of the folder, verified when it is loaded
        entity_keys.txt, entity_repr.npy
        hnsw/, scann/                    the ANN indexes
      <model>/users.sqlite               the user store ``tfrrl serve`` builds (its default place)

Version folders are named by a positive integer in ASCII digits (TF Serving's rule):
:func:`parse_version` is the one rule every reader uses.

Writers publish atomically: a version or an index is written under a hidden ``.tmp-…`` name
and renamed into place; an index replaced with ``--overwrite`` is first renamed to ``.old-…``.
A writer killed half-way leaves such a folder behind; :func:`remove_stale_temporary_folders`
(called by the next ``tfrrl export`` / ``tfrrl index``) deletes those untouched for
:data:`STALE_TEMPORARY_SECONDS`.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from typing import List, Optional

SAVED_MODEL = "saved_model.pb"  # in a version folder: what makes it a SavedModel
ASSETS_DIR = "assets"  # in a version folder: the vocabularies, <vocabulary>.txt
MANIFEST = "export_manifest.json"
# In a version folder, optional: ``entity_keys`` [N] str, ``domains`` [D] str (expert-index
# order, as the manifest's), ``offsets`` float32 [D, N] (tfrrl.evaluation.prior_shift).
PRIOR_SHIFT = "prior_shift.npz"
MODELS_CONFIG = "models.config"
README = "README.md"
INDEX_SIGNATURE = "encode_entities"  # the signature whose output the indexes are built on
INDEX_OUTPUT = "entity_repr"  # the encode_entities output the indexes are built on
INDEX_FORMAT = "tfrrl-index/1"
INDEX_PREFIX = "index-"
INDEX_MANIFEST = "manifest.json"
# In the index manifest: {"algorithm": "sha256", "files": {path relative to the index folder:
# hex digest}} for every file of the folder but the manifest itself.
INDEX_CHECKSUMS = "checksums"
CHECKSUM_ALGORITHM = "sha256"
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


# --------------------------------------------------------------------------------------------
# temporary folders of interrupted writers
# --------------------------------------------------------------------------------------------

TEMPORARY_PREFIXES = (".tmp-", ".old-")  # being written / being replaced (never served)
# A temporary folder nothing has written to for this long is left by a killed writer: a live
# export or index build writes its files one after the other, well within it.
STALE_TEMPORARY_SECONDS = 3600.0


def _last_write(path: str) -> float:
    """The newest modification time of ``path`` and everything under it."""
    newest = os.lstat(path).st_mtime
    for root, dirs, files in os.walk(path):
        for entry in dirs + files:
            try:
                newest = max(newest, os.lstat(os.path.join(root, entry)).st_mtime)
            except FileNotFoundError:  # removed meanwhile
                continue
    return newest


def stale_temporary_folders(model_dir: str, older_than_s: float = STALE_TEMPORARY_SECONDS,
                            now: Optional[float] = None) -> List[str]:
    """The ``.tmp-*`` / ``.old-*`` folders of ``<export>/<model>`` that nothing has written to
    for ``older_than_s`` seconds (a writer killed half-way left them), sorted."""
    if not os.path.isdir(model_dir):
        return []
    now = time.time() if now is None else now
    stale = []
    for entry in sorted(os.listdir(model_dir)):
        path = os.path.join(model_dir, entry)
        if not entry.startswith(TEMPORARY_PREFIXES) or not os.path.isdir(path):
            continue
        try:
            if now - _last_write(path) >= older_than_s:
                stale.append(path)
        except FileNotFoundError:  # published or removed meanwhile
            continue
    return stale


def remove_stale_temporary_folders(model_dir: str,
                                   older_than_s: float = STALE_TEMPORARY_SECONDS,
                                   now: Optional[float] = None) -> List[str]:
    """Deletes :func:`stale_temporary_folders`; returns the paths removed (the caller logs
    them)."""
    removed = []
    for path in stale_temporary_folders(model_dir, older_than_s, now):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.exists(path):
            removed.append(path)
    return removed
