"""Data safety of a run: where it writes, and how the dataset appears at ``out_dir``.

A non-empty ``out_dir`` is never replaced unless the run may overwrite it. A local ``out_dir``
is written under a hidden staging sibling (``.<name>.tmp-<hex>``, same filesystem) and renamed
into place only when complete, so a failed or killed run leaves no dataset at ``out_dir``.
Object stores (gs://) have no atomic directory rename: there the dataset is written in place,
an old one's ``_SUCCESS`` is deleted first, and the run writes ``_SUCCESS`` last (readers
require it).
"""

from __future__ import annotations

import os
import shutil
import uuid

from apache_beam.io.filesystems import FileSystems

from tfrrl.artifacts import prepared
from tfrrl.data import fileio


class OutputExistsError(FileExistsError):
    """``out_dir`` holds files and the run may not overwrite them."""


def is_local(path: str) -> bool:
    return "://" not in path


def staging_dir(out_dir: str) -> str:
    """A hidden sibling of ``out_dir`` the run writes into (same filesystem, so the publishing
    rename is atomic)."""
    parent, base = os.path.split(os.path.abspath(out_dir))
    return os.path.join(parent, f".{base}.tmp-{uuid.uuid4().hex[:12]}")


def delete_folder(path: str) -> None:
    """Deletes a folder and everything in it, locally or on an object store."""
    if is_local(path):
        if os.path.exists(path):
            shutil.rmtree(path)
    else:
        # Only a trailing "/" makes Beam's GCS delete recursive; without it the match finds
        # no object of that exact name and the old shards would stay beside the new ones.
        FileSystems.delete([path.rstrip("/") + "/"])


def claim_output(out_dir: str, overwrite: bool) -> str:
    """Checks ``out_dir`` and returns the folder the run writes into: a fresh staging sibling
    for a local ``out_dir`` (whose parent is created here), ``out_dir`` itself on an object
    store (whose old dataset, with ``overwrite``, is deleted here: its ``_SUCCESS`` first)."""
    if fileio.exists(out_dir) and fileio.glob(fileio.join(out_dir, "*")):
        if not overwrite:
            raise OutputExistsError(
                f"{out_dir} exists and is not empty; pass --overwrite to replace it")
        if not is_local(out_dir):
            marker = fileio.join(out_dir, prepared.SUCCESS_FILE)
            if fileio.exists(marker):
                FileSystems.delete([marker])
            delete_folder(out_dir)
    if not is_local(out_dir):
        return out_dir
    # The parent exists from here on, whichever step of the run writes first or fails first.
    os.makedirs(os.path.dirname(os.path.abspath(out_dir)), exist_ok=True)
    return staging_dir(out_dir)


def discard(work_dir: str, out_dir: str) -> None:
    """After a failure: deletes the staging folder (nothing was published)."""
    if work_dir != out_dir:
        shutil.rmtree(work_dir, ignore_errors=True)


def publish(work_dir: str, out_dir: str) -> None:
    """Renames a complete local dataset into place (nothing to do when written in place). An
    existing ``out_dir`` (``--overwrite``) is renamed away first and deleted only after the new
    one is in place: a crash between the two renames leaves the old dataset beside (never a mix
    of old and new files)."""
    if work_dir == out_dir:
        return
    old = None
    if os.path.exists(out_dir):
        old = f"{staging_dir(out_dir)}-old"
        os.rename(out_dir, old)
    os.rename(work_dir, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
