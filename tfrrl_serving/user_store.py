"""The matching service's user-feature store: the pipeline's user snapshot in embedded SQLite.

``tfrrl prepare`` writes ``<data>/user_snapshot/part-*.jsonl``: per user, the serving-time state
after their last impression — the profile and the last L exposures, as the schema's user and
``seq_*`` features (beam_pipelines/transforms.py ``assemble_user``; the same features the model
was trained on). A request that names only a user id is answered from it.

:func:`build_user_store` loads it into ``users.sqlite`` (one row per user, keyed by user id,
features as JSON; a ``meta`` table records the snapshot's fingerprint, L and the count). The file
is written under a temporary name and renamed, so a reader never opens a half-built store.
:func:`open_user_store` builds it on first use and rebuilds it when the snapshot changed
(``tfrrl serve`` puts it beside the index: ``<export>/<name>/users.sqlite``).

:class:`UserStore` is read-only and safe to share between the server's threads: one
connection per thread (SQLite connections must not be used concurrently), opened with the
read-only URI flag (:func:`read_only_uri`, the path escaped).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
import urllib.parse
import uuid
from typing import Any, Dict, Iterator, List, Optional, Tuple

from tfrrl.artifacts import prepared
from tfrrl.data import schema

# The exposure sequence of a row (the schema's E_seq lists), required in every row.
SEQUENCE_FEATURES: Tuple[str, ...] = tuple(f.name for f in schema.example_features()
                                           if f.group == "E_seq" and f.is_sequence)


def snapshot_files(data_dir: str) -> List[str]:
    """The snapshot's ``*.jsonl`` files; FileNotFoundError when the dataset has none."""
    # Here, not at the top: fileio imports Beam's filesystems (the server imports this module).
    from tfrrl.data import fileio  # pylint: disable=import-outside-toplevel  (Beam)

    files = fileio.glob(fileio.join(data_dir, prepared.USER_SNAPSHOT_DIR, "*.jsonl"))
    if not files:
        raise FileNotFoundError(
            f"{data_dir} has no user snapshot ({prepared.USER_SNAPSHOT_DIR}/*.jsonl): prepare "
            "it again with this version of tfrrl")
    return files


def snapshot_fingerprint(files: List[str]) -> str:
    """sha256 over the snapshot files' contents (names excluded: shard names may change)."""
    from tfrrl.data import fileio  # pylint: disable=import-outside-toplevel  (Beam)

    digest = hashlib.sha256()
    for path in files:
        digest.update(fileio.read_text(path).encode("utf-8"))
    return digest.hexdigest()[:16]


def _rows(files: List[str]) -> Iterator[Tuple[str, str]]:
    from tfrrl.data import fileio  # pylint: disable=import-outside-toplevel  (Beam)

    for path in files:
        for number, line in enumerate(fileio.read_text(path).splitlines(), start=1):
            if line.strip():
                yield _row(line, f"{path}:{number}")


def _row(line: str, where: str) -> Tuple[str, str]:
    """(user id, features JSON) of one snapshot line; ValueError naming the line if it is
    not a user's serving state (the build then fails and the old store stays in place)."""
    try:
        features = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: not JSON ({err})") from None
    missing = [n for n in ("user_id",) + SEQUENCE_FEATURES
               if not isinstance(features, dict) or n not in features]
    if missing:
        raise ValueError(f"{where}: a user snapshot row needs {missing}")
    return str(features["user_id"]), json.dumps(features, sort_keys=True, ensure_ascii=False)


def build_user_store(data_dir: str, path: str) -> Dict[str, Any]:
    """(Re)builds the SQLite store at ``path`` from ``data_dir``'s snapshot; returns its meta."""
    files = snapshot_files(data_dir)
    start = time.time()
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        con = sqlite3.connect(tmp)
        try:
            con.execute("CREATE TABLE users (user_id TEXT PRIMARY KEY, features TEXT NOT NULL)")
            con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            try:
                con.executemany("INSERT INTO users VALUES (?, ?)", _rows(files))
            except sqlite3.IntegrityError as err:  # the pipeline writes one row per user
                raise ValueError(f"the snapshot of {data_dir} has a user twice ({err})") from None
            count = con.execute("SELECT COUNT(*) FROM users").fetchone()[0]
            first = con.execute("SELECT features FROM users LIMIT 1").fetchone()
            sequence_length = len(json.loads(first[0])["seq_entity_id"]) if first else 0
            meta = {"snapshot_fingerprint": snapshot_fingerprint(files), "users": count,
                    "sequence_length": sequence_length, "data_dir": data_dir,
                    "built_unix": int(time.time()),
                    "build_seconds": round(time.time() - start, 2)}
            con.executemany("INSERT INTO meta VALUES (?, ?)",
                            [(k, json.dumps(v)) for k, v in meta.items()])
            con.commit()
        finally:
            con.close()  # before the rename or the clean-up (a rollback journal may be open)
        os.replace(tmp, path)
    except BaseException:
        for leftover in (tmp, f"{tmp}-journal"):
            if os.path.exists(leftover):
                os.remove(leftover)
        raise
    return meta


def read_only_uri(path: str) -> str:
    """The SQLite URI that opens ``path`` read-only: the path percent-escaped, so ``#``, ``?``
    or ``%`` in it are part of the file name (unescaped, ``#`` would start the URI's fragment
    and SQLite would open a truncated path)."""
    return f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro"


class UserStore:
    """Read-only look-ups of a built store; one SQLite connection per thread."""

    def __init__(self, path: str):
        if not os.path.exists(path):
            raise FileNotFoundError(f"no user store at {path}")
        self.path = path
        self._local = threading.local()
        self.meta = {k: json.loads(v) for k, v in
                     self._connection().execute("SELECT key, value FROM meta")}

    def _connection(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(read_only_uri(self.path), uri=True, check_same_thread=True)
            self._local.con = con
        return con

    def get(self, user_id: str) -> Optional[Dict[str, Any]]:
        """The user's raw serving features (schema names), or None for an unknown user."""
        row = self._connection().execute("SELECT features FROM users WHERE user_id = ?",
                                         (user_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def __len__(self) -> int:
        return int(self.meta["users"])

    def sample_user_ids(self, n: int) -> List[str]:
        """Up to ``n`` user ids (for load tests and demos), in key order."""
        return [r[0] for r in self._connection().execute(
            "SELECT user_id FROM users ORDER BY user_id LIMIT ?", (int(n),))]


def open_user_store(data_dir: str, path: str) -> UserStore:
    """The store at ``path``, built (or rebuilt, when the snapshot changed) from ``data_dir``."""
    if os.path.exists(path):
        store = UserStore(path)
        if store.meta.get("snapshot_fingerprint") == snapshot_fingerprint(
                snapshot_files(data_dir)):
            return store
    build_user_store(data_dir, path)
    return UserStore(path)
