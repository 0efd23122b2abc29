"""Validated hot reload of model versions: the matching service serves the newest version that
has a complete index (published atomically by ``tfrrl export`` / ``tfrrl index``,
:func:`tfrrl_serving.indexing.layout.indexed_versions`) AND passes validation
(:mod:`tfrrl_serving.matching.validation`: index checksums, finite representations, a warm-up
retrieval with a finite top-k). A candidate is loaded beside the current version, validated, and
only then swapped into the servicer; requests in flight finish on the model they started with.

* A candidate that fails is quarantined: logged ONCE (``version_rejected``, with the reason),
  never served, and retried with exponential backoff (``backoff_initial_s`` doubling up to
  ``backoff_max_s``) — at once when it is republished (its index manifest or SavedModel
  changed, e.g. ``tfrrl index --overwrite``). The last good version keeps serving.
* Rollback: when the served version is deleted from disk, the newest remaining valid version is
  swapped in (``model_rolled_back``); with none left, the loaded one keeps serving.
* A version without its index is not a candidate (a model and its index are swapped together).
* With TF Serving scoring (``tf_serving``), a version TF Serving does not serve yet is simply
  not a candidate yet.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

from tfrrl.artifacts.export_folder import INDEX_MANIFEST, SAVED_MODEL
from tfrrl.errors import UserError
from tfrrl_serving.errors import ExportNotFoundError, NoValidVersionError
from tfrrl_serving.indexing.layout import index_dir, indexed_versions, model_versions
from tfrrl_serving.matching.log import event_line, logger
from tfrrl_serving.matching.model import ModelContext, VersionNotServed, load_model
from tfrrl_serving.matching.servicer import MatchingServicer
from tfrrl_serving.matching.validation import VersionRejected, warm_up
from tfrrl_serving.status import shown
from tfrrl_serving.transport import ClientTLS

DEFAULT_BACKOFF_INITIAL_S = 30.0
DEFAULT_BACKOFF_MAX_S = 3600.0

Stamp = Tuple[Tuple[int, int], ...]


@dataclasses.dataclass
class Rejection:
    """A quarantined candidate: why, how often, when to try again, and what it looked like on
    disk (a new stamp = republished = try at once)."""

    reason: str
    attempts: int
    retry_at: float
    stamp: Stamp


class ModelReloader:
    """Chooses, validates and swaps model versions for ``servicer`` (module docstring):
    :meth:`initial_model` at start-up, :meth:`reload` once, or every ``seconds`` in a daemon
    thread (:meth:`start`) until :meth:`stop`. ``rejected``: the quarantined versions."""

    def __init__(self, servicer: Optional[MatchingServicer], export_dir: str,
                 name: str = "tfrrl", tf_serving: Optional[str] = None, *,
                 tf_serving_tls: Optional[ClientTLS] = None,
                 backoff_initial_s: float = DEFAULT_BACKOFF_INITIAL_S,
                 backoff_max_s: float = DEFAULT_BACKOFF_MAX_S,
                 clock: Callable[[], float] = time.monotonic):
        self.servicer = servicer
        self.export_dir, self.name, self.tf_serving = export_dir, name, tf_serving
        self.tf_serving_tls = tf_serving_tls
        self.backoff_initial_s = float(backoff_initial_s)
        self.backoff_max_s = max(float(backoff_max_s), self.backoff_initial_s)
        self.clock = clock
        self.rejected: Dict[int, Rejection] = {}
        self._deleted_logged: Optional[int] = None
        self._poll_error_logged = False
        self._lock = threading.Lock()  # one reload at a time
        self._stop = threading.Event()
        self._poller: Optional[threading.Thread] = None

    # -- one candidate -----------------------------------------------------------------------
    def _stamp(self, version: int) -> Stamp:
        """When and how big the candidate's index manifest and saved_model.pb are on disk."""
        paths = (os.path.join(index_dir(self.export_dir, version, self.name), INDEX_MANIFEST),
                 os.path.join(self.export_dir, self.name, str(version), SAVED_MODEL))
        stamp = []
        for path in paths:
            try:
                st = os.stat(path)
                stamp.append((st.st_mtime_ns, st.st_size))
            except OSError:
                stamp.append((0, 0))
        return tuple(stamp)

    def _due(self, version: int) -> bool:
        rejection = self.rejected.get(version)
        return (rejection is None or self.clock() >= rejection.retry_at
                or self._stamp(version) != rejection.stamp)

    def _reject(self, version: int, err: BaseException) -> None:
        stamp = self._stamp(version)
        previous = self.rejected.get(version)
        republished = previous is not None and previous.stamp != stamp
        attempts = 1 if previous is None or republished else previous.attempts + 1
        backoff = min(self.backoff_initial_s * 2 ** (attempts - 1), self.backoff_max_s)
        reason = shown(f"{type(err).__name__}: {err}", 500, quote=False)
        self.rejected[version] = Rejection(reason, attempts, self.clock() + backoff, stamp)
        if attempts == 1:  # once per version (and once more if it is republished)
            serving = self.servicer.model.version if self.servicer is not None else None
            logger.warning(event_line("version_rejected", model_version=version, reason=reason,
                                      serving_version=serving, retry_in_s=backoff))

    def try_load(self, version: int) -> Optional[ModelContext]:
        """``version`` loaded and validated, or None (quarantined, or not served by TF Serving
        yet)."""
        try:
            model = load_model(self.export_dir, self.name, version=version,
                               tf_serving=self.tf_serving, tf_serving_tls=self.tf_serving_tls)
            warm_up(model)
        except VersionNotServed:
            return None
        except Exception as err:  # pylint: disable=broad-except  (any failure quarantines)
            self._reject(version, err)
            return None
        if version in self.rejected:  # it was repaired (or it was transient)
            del self.rejected[version]
        return model

    # -- which version ------------------------------------------------------------------------
    def _candidates(self) -> List[int]:
        if not os.path.isdir(self.export_dir):
            raise ExportNotFoundError(f"--export {self.export_dir} does not exist: give the "
                                      "folder `tfrrl export --out` wrote")
        versions = indexed_versions(self.export_dir, self.name)
        if not versions:
            raise ExportNotFoundError(
                f"no indexed model version under {os.path.join(self.export_dir, self.name)}: "
                "run `tfrrl export` and then `tfrrl index` (or check --export and --name)")
        return versions[::-1]  # newest first

    def initial_model(self) -> ModelContext:
        """The model to start with: the newest indexed version that passes validation (with
        TF Serving scoring: the version it serves); :class:`NoValidVersionError` when none
        does."""
        if self.tf_serving:
            try:
                model = load_model(self.export_dir, self.name, tf_serving=self.tf_serving,
                                   tf_serving_tls=self.tf_serving_tls)
                warm_up(model)
            except UserError:
                raise
            except FileNotFoundError as err:  # TF Serving's version has no index here
                raise ExportNotFoundError(f"{shown(str(err), 300, quote=False)}") from None
            except (ValueError, VersionRejected) as err:
                raise NoValidVersionError(
                    f"the version TF Serving at {self.tf_serving} serves failed validation "
                    f"({shown(f'{type(err).__name__}: {err}', 500, quote=False)}): export and "
                    "index it again") from None
            return model
        with self._lock:
            for version in self._candidates():
                model = self.try_load(version)
                if model is not None:
                    return model
        reasons = "; ".join(f"{v}: {r.reason}" for v, r in sorted(self.rejected.items()))
        raise NoValidVersionError(f"no version under {os.path.join(self.export_dir, self.name)}"
                                  f" passed validation ({shown(reasons, 600, quote=False)}): "
                                  "export and index it again")

    def reload(self) -> bool:
        """Swaps in the newest valid version newer than the served one (or, when the served
        one was deleted, the newest valid one left); True if swapped."""
        with self._lock:
            try:
                candidates = self._candidates()
            except (OSError, ValueError):  # nothing to serve on disk right now
                candidates = []
            current = self.servicer.model.version
            deleted = current not in model_versions(self.export_dir, self.name)
            if deleted and self._deleted_logged != current:
                self._deleted_logged = current
                logger.warning(event_line("served_version_deleted", model_version=current,
                                          effect="rolling back to the newest valid version "
                                                 "left, or keeping it in memory"))
            for version in candidates:
                if version == current or (version < current and not deleted):
                    continue
                if not self._due(version):
                    continue
                model = self.try_load(version)
                if model is None:
                    continue
                self.servicer.model = model  # atomic reference swap; in-flight requests keep theirs
                event = "model_swapped" if version > current else "model_rolled_back"
                logger.info(event_line(event, model_version=version, previous_version=current))
                return True
            return False

    # -- polling ---------------------------------------------------------------------------
    def start(self, seconds: float) -> None:
        """Polls for a newer version every ``seconds``."""
        self._poller = threading.Thread(target=self._poll, args=(float(seconds),),
                                        daemon=True, name="matching-model-poller")
        self._poller.start()

    def _poll(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            try:
                self.reload()
                self._poll_error_logged = False
            except Exception:  # pylint: disable=broad-except  (keep serving the current one)
                if not self._poll_error_logged:  # once until a poll succeeds again
                    self._poll_error_logged = True
                    logger.exception(event_line("reload_failed",
                                                serving_version=self.servicer.model.version))

    def stop(self) -> None:
        self._stop.set()
