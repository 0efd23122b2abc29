"""Progress of a long step, for a person watching a terminal or reading a log file later.

:class:`Progress` counts work done (training steps, queries scored, runs of a benchmark) and
reports it in one of two ways, chosen by where the output goes:

* a **terminal**: one bar redrawn in place (``\\r``) at most every ``redraw`` seconds::

      train [##########··········] 120/300 steps 40% · 4.1 steps/s · loss 7.4844 · ETA 0:44

* a **file or pipe** (nohup, CI, a scheduler): one line every ``interval`` seconds (30 by
  default) and one at the end, so a log shows the job is alive and how far it is::

      [tfrrl 12:00:30] train: 120/300 steps (40%), 4.1 steps/s, loss 7.4844, ETA 0:44
      [tfrrl 12:01:13] train: done, 300 steps in 1:13 (4.1 steps/s), loss 7.2011

The rate is the mean since the reporter started (``done - start`` over the elapsed time); the ETA
is the work left at that rate, up to ``total`` or, once :meth:`Progress.set_expected_end` names an
earlier end (training that early stopping will end sooner), up to that end, said beside it.
``values`` (e.g. ``loss=7.48``) are shown as they were last given; an ``activity`` (e.g.
``validating: 57 batches``) says what happens between two counted units.
With ``heartbeat``, a log file also gets its line every ``interval`` seconds while no unit ends
(a first step that traces the model, a validation pass): a daemon thread writes it, under the
same lock as every other line. Pure standard library: any stage may report through it.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from typing import Callable, Dict, Optional, TextIO

DEFAULT_INTERVAL = 30.0  # seconds between two lines in a log file
DEFAULT_REDRAW = 0.2  # seconds between two redraws of a terminal bar
BAR_WIDTH = 20


def format_duration(seconds: float) -> str:
    """``75`` → ``1:15``; ``3725`` → ``1:02:05``; negative or non-finite → ``?``."""
    if not seconds >= 0 or seconds == float("inf"):
        return "?"
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_value(value: float) -> str:
    """A metric as the reports show it: 4 decimals, or the scientific form for tiny/huge ones."""
    value = float(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
        return f"{value:.3e}"
    return f"{value:.4f}"


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal (not a file, a pipe or a captured stream)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class Progress:
    """Reports ``done`` out of ``total`` (None: unknown) ``unit`` of the step called ``label``.

    ``stream`` defaults to ``sys.stdout`` at construction; ``terminal`` defaults to whether it is
    a TTY. ``prefix`` starts every log line (``[prefix HH:MM:SS]``, as the ``tfrrl`` command's
    own lines). ``heartbeat``: keep writing the log line every ``interval`` seconds while no
    update comes (log files only). ``clock`` (monotonic seconds) and ``wall`` (the time of day
    for the prefix) are injectable for tests. Use it as a context manager, or call
    :meth:`close`.
    """

    def __init__(self, label: str, total: Optional[int] = None, unit: str = "", *,
                 stream: Optional[TextIO] = None, terminal: Optional[bool] = None,
                 interval: float = DEFAULT_INTERVAL, redraw: float = DEFAULT_REDRAW,
                 prefix: str = "tfrrl", start: int = 0, heartbeat: bool = False,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], str] = lambda: time.strftime("%H:%M:%S")):
        self.label = label
        self.total = int(total) if total is not None else None
        self.unit = unit
        self.stream = stream if stream is not None else sys.stdout
        self.terminal = is_terminal(self.stream) if terminal is None else bool(terminal)
        self.interval = float(interval)
        self.redraw = float(redraw)
        self.prefix = prefix
        self.clock = clock
        self.wall = wall
        self.start = int(start)
        self.done = int(start)
        self.values: Dict[str, float] = {}
        self.activity: Optional[str] = None
        self.expected_end: Optional[int] = None
        self.expected_end_text = ""
        self.started_at = clock()
        self._last_report = self.started_at
        self._drawn_width = 0
        self.closed = False
        self.lines_written = 0
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._heartbeat: Optional[threading.Thread] = None
        if heartbeat and not self.terminal:
            self._heartbeat = threading.Thread(target=self._beat, name=f"progress-{label}",
                                               daemon=True)
            self._heartbeat.start()

    # -- counting ----------------------------------------------------------------------------
    def advance(self, count: int = 1, **values: float) -> None:
        """``count`` more units done; ``values`` replace the shown metrics of the same name."""
        self.update(self.done + int(count), **values)

    def update(self, done: int, **values: float) -> None:
        """``done`` units done in all (from the start of the work, not of this reporter)."""
        with self._lock:
            self.done = int(done)
            self.values.update({k: float(v) for k, v in values.items()})
        self._report_if_due()

    def restart(self, start: int) -> None:
        """Counts from ``start`` (units done before, e.g. by an interrupted run) and measures
        the rate from now: the work so far (a set-up) was not the counted work."""
        with self._lock:
            self.start = self.done = int(start)
            self.started_at = self.clock()

    def set_activity(self, text: Optional[str]) -> None:
        """What happens now between counted units (None: nothing to say), shown in the next
        report."""
        with self._lock:
            self.activity = text
        self._report_if_due()

    def set_expected_end(self, done: Optional[int], text: str = "") -> None:
        """The work is expected to end at ``done`` units, before ``total`` (None: at ``total``);
        the ETA counts to it and ``text`` (e.g. ``to epoch 8 (early stopping)``) follows it."""
        with self._lock:
            self.expected_end = None if done is None else int(done)
            self.expected_end_text = text if done is not None else ""

    def _report_if_due(self) -> None:
        with self._lock:
            if self.closed:
                return
            now = self.clock()
            wait = self.redraw if self.terminal else self.interval
            if now - self._last_report >= wait:
                self._last_report = now
                self._emit(self.status_text(now), final=False)

    def _beat(self) -> None:
        while not self._stop.wait(min(1.0, max(self.interval / 4, 0.01))):
            self._report_if_due()

    # -- figures -----------------------------------------------------------------------------
    def rate(self, now: Optional[float] = None) -> Optional[float]:
        """Units per second since the start; None before any unit or time has passed."""
        elapsed = (self.clock() if now is None else now) - self.started_at
        work = self.done - self.start
        return work / elapsed if elapsed > 0 and work > 0 else None

    def eta(self, now: Optional[float] = None) -> Optional[float]:
        """Seconds left at the current rate, to the expected end if one is set, else to the
        total; None when the end or the rate is unknown."""
        rate = self.rate(now)
        end = self.expected_end if self.expected_end is not None else self.total
        if end is None or rate is None:
            return None
        return max(end - self.done, 0) / rate

    def _eta_text(self, eta: float) -> str:
        text = f"ETA {format_duration(eta)}"
        return f"{text} {self.expected_end_text}" if self.expected_end_text else text

    def _count_text(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.total is None:
            return f"{self.done:,}{unit}"
        return f"{self.done:,}/{self.total:,}{unit}"

    def _rate_text(self, rate: Optional[float]) -> str:
        unit = self.unit or "units"
        if rate is None:
            return f"? {unit}/s"
        if rate < 1:  # slow units (benchmark runs, epochs): the time each takes
            return f"{format_duration(1 / rate)} each" if rate < 0.1 else f"{1 / rate:.1f} s each"
        return f"{rate:,.1f} {unit}/s"

    def _values_text(self, sep: str) -> str:
        return sep.join(f"{k} {format_value(v)}" for k, v in self.values.items())

    def status_text(self, now: Optional[float] = None) -> str:
        """The text of one report (a bar on a terminal, else a log line without its prefix)."""
        now = self.clock() if now is None else now
        rate, eta = self.rate(now), self.eta(now)
        if self.terminal:
            parts = [self._count_text()]
            head = self.label
            if self.total:
                filled = int(BAR_WIDTH * min(self.done / self.total, 1.0))
                head += f" [{'#' * filled}{'·' * (BAR_WIDTH - filled)}]"
                parts[0] += f" {100 * self.done // self.total}%"
            parts.append(self._rate_text(rate))
            if self.values:
                parts.append(self._values_text(" · "))
            if self.activity:
                parts.append(self.activity)
            if eta is not None:
                parts.append(self._eta_text(eta))
            return f"{head} " + " · ".join(parts)
        text = f"{self.label}: {self._count_text()}"
        if self.total:
            text += f" ({100 * self.done // self.total}%)"
        parts = [text, self._rate_text(rate)]
        if self.values:
            parts.append(self._values_text(", "))
        if self.activity:
            parts.append(self.activity)
        if eta is not None:
            parts.append(self._eta_text(eta))
        return ", ".join(parts)

    def summary_text(self, now: Optional[float] = None) -> str:
        """The closing report: how much, in how long, at which rate, the last values."""
        now = self.clock() if now is None else now
        elapsed = now - self.started_at
        unit = f" {self.unit}" if self.unit else ""
        text = f"{self.label}: done, {self.done - self.start:,}{unit} in {format_duration(elapsed)}"
        rate = self.rate(now)
        if rate is not None:
            text += f" ({self._rate_text(rate)})"
        if self.values:
            text += ", " + self._values_text(", ")
        return text

    # -- output ------------------------------------------------------------------------------
    def _emit(self, text: str, final: bool) -> None:
        if self.terminal:
            width = max(shutil.get_terminal_size((100, 20)).columns - 1, 20)
            text = text[:width]
            pad = " " * max(self._drawn_width - len(text), 0)
            self.stream.write("\r" + text + pad + ("\n" if final else ""))
            self._drawn_width = 0 if final else len(text)
        else:
            self.stream.write(f"[{self.prefix} {self.wall()}] {text}\n")
            self.lines_written += 1
        self.stream.flush()

    def pause(self) -> None:
        """Ends the bar's line on a terminal (another report may draw below it; the next update
        draws a new bar). Nothing happens in a log file."""
        with self._lock:
            if self.terminal and self._drawn_width:
                self.stream.write("\n")
                self.stream.flush()
                self._drawn_width = 0

    def message(self, text: str) -> None:
        """A line of its own (e.g. an epoch's summary) that does not break the bar."""
        with self._lock:
            self._message(text)

    def _message(self, text: str) -> None:
        if self.terminal and self._drawn_width:
            self.stream.write("\r" + " " * self._drawn_width + "\r")
            self._drawn_width = 0
        if self.terminal:
            self.stream.write(text + "\n")
        else:
            self.stream.write(f"[{self.prefix} {self.wall()}] {text}\n")
            self.lines_written += 1
        self.stream.flush()
        if not self.terminal:  # the next periodic line comes a full interval later
            self._last_report = self.clock()

    def close(self, summary: bool = True) -> None:
        """Ends the report: the bar's last state (terminal), then the summary line."""
        self._stop.set()
        if self._heartbeat is not None and self._heartbeat is not threading.current_thread():
            self._heartbeat.join(timeout=5)
        with self._lock:
            self._close(summary)

    def _close(self, summary: bool) -> None:
        if self.closed:
            return
        self.closed = True
        now = self.clock()
        if self.terminal and self._drawn_width:
            self._emit(self.status_text(now), final=True)
        if summary:
            if self.terminal:
                self.stream.write(self.summary_text(now) + "\n")
                self.stream.flush()
            else:
                self._emit(self.summary_text(now), final=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # On an error, end the bar's line but claim no "done".
        self.close(summary=exc_type is None)


def maybe_progress(enabled: bool, label: str, total: Optional[int] = None, unit: str = "",
                   **kwargs) -> Optional[Progress]:
    """A :class:`Progress` when ``enabled``, else None (callers test ``if progress:``)."""
    return Progress(label, total, unit, **kwargs) if enabled else None


class Steps:
    """The numbered steps of a task made of a few long steps with nothing to count inside them
    (an export: rebuild the model, trace, write): each step is one line through ``say``::

        export [2/4] tracing the serving signatures (0:08 elapsed)
    """

    def __init__(self, label: str, total: int, say: Optional[Callable[[str], None]],
                 clock: Callable[[], float] = time.monotonic):
        self.label = label
        self.total = int(total)
        self.say = say
        self.clock = clock
        self.done = 0
        self.started_at = clock()

    def __call__(self, text: str) -> None:
        """Starts the next step, described by ``text``."""
        self.done += 1
        if self.say is None:
            return
        elapsed = self.clock() - self.started_at
        suffix = f" ({format_duration(elapsed)} elapsed)" if self.done > 1 else ""
        self.say(f"{self.label} [{self.done}/{self.total}] {text}{suffix}")


class Heartbeat:
    """A line through ``say`` every ``interval`` seconds while its ``with`` block runs, for a
    long step that counts nothing itself (a Beam pipeline, an ANN graph build): ``line`` makes
    the text from the seconds elapsed. A daemon thread writes it; a block shorter than
    ``interval`` writes nothing::

        [index 21:33:02] HNSW: building the graph over 1,000,000 entities, 4:00 so far
    """

    def __init__(self, say: Callable[[str], None], line: Callable[[float], str],
                 interval: float = DEFAULT_INTERVAL,
                 clock: Callable[[], float] = time.monotonic):
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        self.say, self.line, self.interval, self.clock = say, line, float(interval), clock
        self.lines = 0
        self.started_at = clock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def current_line(self) -> str:
        """The line a beat would write now."""
        return self.line(self.clock() - self.started_at)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            self.say(self.current_line())
            self.lines += 1

    def __enter__(self) -> "Heartbeat":
        self.started_at = self.clock()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
