"""A bounded background load of VALID requests for the serving tests: ``clients`` threads call
``call()`` back to back on loopback until :meth:`BackgroundLoad.stop` (or ``max_seconds``), and
record every answer and every failure, so a test can show that what it does meanwhile (a corrupted
version published, malformed requests sent) fails no valid request."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, List


class BackgroundLoad:
    """``call(i)`` (client ``i``) returns something to record or raises; ``answers`` and
    ``failures`` (the exceptions' repr) are filled as it runs."""

    def __init__(self, call: Callable[[int], Any], clients: int = 4, max_seconds: float = 180.0):
        self.call = call
        self.answers: List[Any] = []
        self.failures: List[str] = []
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_seconds
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(clients)]

    def _run(self, i: int) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                self.answers.append(self.call(i))
            except Exception as err:  # pylint: disable=broad-except  (the test asserts on it)
                self.failures.append(repr(err)[:300])

    def start(self, wait_for: int = 8) -> "BackgroundLoad":
        """Starts the clients and returns once ``wait_for`` answers (or failures) came back."""
        for t in self._threads:
            t.start()
        self.wait_for(wait_for)
        return self

    def wait_for(self, more: int, timeout: float = 60.0) -> None:
        """Waits until ``more`` further requests have finished."""
        target = len(self.answers) + len(self.failures) + more
        deadline = time.monotonic() + timeout
        while len(self.answers) + len(self.failures) < target and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)


def wait_until(condition: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    """Polls ``condition`` every 20 ms; AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)
