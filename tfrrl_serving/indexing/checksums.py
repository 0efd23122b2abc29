"""The checksums of an index folder: written by ``tfrrl index`` into the index manifest
(:data:`tfrrl.artifacts.export_folder.INDEX_CHECKSUMS`: the sha256 of every file of the folder but
the manifest) and verified before the index is served, so a file changed after the build (a
disk or copy error, a partial overwrite) is refused instead of hot-swapped in.

Standard library only.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
from typing import Any, Dict, Mapping

from tfrrl.artifacts.export_folder import CHECKSUM_ALGORITHM, INDEX_CHECKSUMS, INDEX_MANIFEST

CHUNK_BYTES = 1 << 20


class IndexIntegrityError(ValueError):
    """An index file does not match the checksum its manifest records (or is missing)."""


def file_sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def index_checksums(root: pathlib.Path) -> Dict[str, Any]:
    """``{"algorithm": "sha256", "files": {relative path: hex digest}}`` of every file under
    ``root`` except its manifest (paths with ``/``, sorted)."""
    root = pathlib.Path(root)
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        if relative != INDEX_MANIFEST:
            files[relative] = file_sha256(path)
    return {"algorithm": CHECKSUM_ALGORITHM, "files": files}


def verify_index_checksums(root: pathlib.Path, manifest: Mapping[str, Any]) -> bool:
    """Checks every file the manifest's checksums list; :class:`IndexIntegrityError` naming the
    first that differs or is missing. False (nothing checked) for an index built before
    checksums were written."""
    recorded = manifest.get(INDEX_CHECKSUMS)
    if not recorded:
        return False
    if recorded.get("algorithm") != CHECKSUM_ALGORITHM:
        raise IndexIntegrityError(f"{root}: unknown checksum algorithm "
                                  f"{recorded.get('algorithm')!r}")
    for relative, want in sorted(recorded.get("files", {}).items()):
        path = pathlib.Path(root) / relative
        if os.path.isabs(relative) or ".." in pathlib.PurePosixPath(relative).parts:
            raise IndexIntegrityError(f"{root}: checksum entry {relative!r} is outside the index")
        if not path.is_file():
            raise IndexIntegrityError(f"{path} is missing (listed in {INDEX_MANIFEST}): rebuild "
                                      "the index with `tfrrl index --overwrite`")
        if file_sha256(path) != want:
            raise IndexIntegrityError(f"{path} differs from the sha256 in {INDEX_MANIFEST} "
                                      "(changed after `tfrrl index`): rebuild the index with "
                                      "`tfrrl index --overwrite`")
    return True
