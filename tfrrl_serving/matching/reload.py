"""Hot reload of model versions: a newer model version with a complete index (published
atomically by ``tfrrl export`` / ``tfrrl index``,
:func:`tfrrl_serving.indexing.layout.latest_indexed_version`) is loaded beside the current one
and swapped into the servicer; requests in flight finish on the retriever they started with. A
version without its index is not served; a failed load is logged and the current version keeps
serving."""

from __future__ import annotations

import threading
from typing import Optional

from tfrrl_serving.indexing.layout import latest_indexed_version
from tfrrl_serving.matching.log import event_line, logger
from tfrrl_serving.matching.model import load_model
from tfrrl_serving.matching.servicer import MatchingServicer


class ModelReloader:
    """Swaps newer indexed versions into ``servicer``: :meth:`reload` once, or every
    ``seconds`` in a daemon thread (:meth:`start`) until :meth:`stop`."""

    def __init__(self, servicer: MatchingServicer, export_dir: str, name: str = "tfrrl",
                 tf_serving: Optional[str] = None):
        self.servicer = servicer
        self.export_dir, self.name, self.tf_serving = export_dir, name, tf_serving
        self._stop = threading.Event()
        self._poller: Optional[threading.Thread] = None

    def reload(self) -> bool:
        """Loads a newer indexed version if there is one and swaps it in; True if swapped."""
        try:
            latest = latest_indexed_version(self.export_dir, self.name)
        except (FileNotFoundError, ValueError):
            return False
        if latest <= self.servicer.model.version:
            return False
        model = load_model(self.export_dir, self.name, version=latest,
                           tf_serving=self.tf_serving)
        self.servicer.model = model  # atomic reference swap; in-flight requests keep theirs
        logger.info(event_line("model_swapped", model_version=model.version))
        return True

    def start(self, seconds: float) -> None:
        """Polls for a newer version every ``seconds``."""
        self._poller = threading.Thread(target=self._poll, args=(float(seconds),),
                                        daemon=True, name="matching-model-poller")
        self._poller.start()

    def _poll(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            try:
                self.reload()
            except Exception:  # pylint: disable=broad-except  (keep serving the current one)
                logger.exception("reload failed; still serving version %s",
                                 self.servicer.model.version)

    def stop(self) -> None:
        self._stop.set()
