"""What every subcommand shares: its progress line, TensorFlow's quiet start-up, and the one line
that reports a user's mistake.

TensorFlow prints its start-up noise from C++ (not through Python's logging), to file
descriptor 2, when it is imported and when it first creates its devices: on a machine without a
GPU, ``cudart_stub.cc`` "Could not find cuda drivers", ``port.cc`` "oneDNN custom operations are
on", ``cpu_feature_guard.cc`` "This TensorFlow binary is optimized…" (level I) and
``cuda_platform.cc`` "failed call to cuInit" (level E, an error by its look). The first three
obey ``TF_CPP_MIN_LOG_LEVEL`` (read once, at import: it must be set before); the ``cuInit`` line
is an error-level log and ``CUDA_VISIBLE_DEVICES=""`` does not prevent it, so
:func:`quiet_tensorflow` imports TensorFlow and creates its devices with descriptor 2 captured
and writes back every captured line but that noise. Level 2 keeps TensorFlow's later warnings
out and its errors in.

Later, TensorFlow's graph optimizer logs through absl, which ``TF_CPP_MIN_LOG_LEVEL`` does not
govern (even at 3): the first call of a served signature prints ``W0000 …
op_level_cost_estimator.cc … Error in PredictCost() for the op: "Softmax" …`` (a cost estimate
it could not make; nothing fails) after ``WARNING: All log messages before absl::InitializeLog()
is called are written to STDERR``. :func:`tensorflow_noise_dropped` captures descriptor 2 around
such a step and writes back everything else.

With ``--verbose``, or when the user has set ``TF_CPP_MIN_LOG_LEVEL`` themselves, nothing is
set or filtered: TensorFlow logs as the user asked.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import sys
import tempfile
import time
from typing import Iterable, Iterator, Optional

from tfrrl.errors import UserError

TF_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
QUIET_LEVEL = "2"  # 0 all, 1 no INFO, 2 no WARNING, 3 no ERROR (TF's C++ logging)
# TensorFlow's start-up lines on a machine without a GPU, and the graph optimizer's cost
# estimates (they say nothing wrong).
STARTUP_NOISE = re.compile(
    r"cuInit|cuda_platform\.cc|cudart_stub\.cc|Could not find cuda drivers|oneDNN custom "
    r"operations|cpu_feature_guard\.cc|rebuild TensorFlow with the appropriate compiler flags|"
    r"To enable the following instructions|Unable to register cu(DNN|FFT|BLAS) factory|"
    r"computation placer already registered|TF-TRT Warning|absl::InitializeLog\(\)|"
    r"op_level_cost_estimator\.cc:\d+\] Error in PredictCost\(\)")


class _State:
    """Whether this process filters TensorFlow's noise (decided by
    :func:`configure_tensorflow_logging`, before TensorFlow is imported)."""

    filter_startup = False


def say(message: str) -> None:
    """One progress line, ``[tfrrl HH:MM:SS] message``, flushed at once."""
    print(f"[tfrrl {time.strftime('%H:%M:%S')}] {message}", flush=True)


def configure_tensorflow_logging(verbose: bool) -> None:
    """Before any import of TensorFlow: its C++ logs at warnings-off level 2 and its start-up
    noise filtered, unless ``verbose`` or the user set ``TF_CPP_MIN_LOG_LEVEL``."""
    if verbose or TF_LOG_LEVEL in os.environ:
        _State.filter_startup = False
        return
    os.environ[TF_LOG_LEVEL] = QUIET_LEVEL
    _State.filter_startup = True


def drop_startup_noise(lines: Iterable[str]) -> list:
    """The lines that are not TensorFlow start-up noise (:data:`STARTUP_NOISE`)."""
    return [line for line in lines if not STARTUP_NOISE.search(line)]


@contextlib.contextmanager
def tensorflow_noise_dropped() -> Iterator[None]:
    """Within the block, descriptor 2 (C++ and Python alike) goes to a temporary file; at its
    end every captured line but TensorFlow's noise (:data:`STARTUP_NOISE`) is written back, in
    order. Nothing is captured unless :func:`configure_tensorflow_logging` chose to filter."""
    if not _State.filter_startup:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            kept = drop_startup_noise(text.splitlines(keepends=True))
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def quiet_tensorflow() -> None:
    """Imports TensorFlow and creates its devices now, dropping the start-up noise (see the
    module docstring) when :func:`configure_tensorflow_logging` chose to. Every subcommand
    that uses TensorFlow calls it first."""
    with tensorflow_noise_dropped():
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        tf.config.list_physical_devices()  # creates the platforms: the cuInit call


# --------------------------------------------------------------------------------------------
# A user's mistake: one line, exit code 2.

# Flags whose values are paths the user typed (an OSError about one of them is their mistake).
PATH_FLAGS = ("input", "out", "data", "run", "export", "config", "workdir", "keep_raw")
USER_OS_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
                  PermissionError)


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) as one space."""
    return " ".join(str(text).split())


def user_paths(args: argparse.Namespace) -> list:
    """The path values the user gave on the command line (:data:`PATH_FLAGS`)."""
    values = [getattr(args, flag, None) for flag in PATH_FLAGS]
    return [v for v in values if isinstance(v, str) and len(v) > 1]


def _mentions(error: OSError, paths: Iterable[str]) -> bool:
    text = f"{error} {getattr(error, 'filename', '') or ''} {getattr(error, 'filename2', '') or ''}"
    for p in paths:
        candidates = {p, os.path.normpath(p), os.path.abspath(p)}
        if any(c in text for c in candidates):
            return True
    return False


def describe_os_error(error: OSError) -> str:
    """``[Errno 2] No such file or directory: 'x'`` → ``x: no such file or directory``; other
    messages (already written for a person) as they are."""
    if error.errno is not None and error.filename is not None:
        reason = (error.strerror or errno.errorcode.get(error.errno, "error")).lower()
        return f"{error.filename}: {reason}"
    return str(error)


def user_error_message(error: BaseException, args: argparse.Namespace) -> Optional[str]:
    """The one line to show for ``error`` if it is the user's mistake — a
    :class:`~tfrrl.errors.UserError`, or a missing / existing / wrong-kind file error about a
    path the user gave — else None (a bug: it keeps its traceback)."""
    if isinstance(error, UserError):
        return one_line(str(error))
    if isinstance(error, USER_OS_ERRORS) and _mentions(error, user_paths(args)):
        return one_line(describe_os_error(error))
    return None


def error_line(command: str, message: str) -> str:
    """``tfrrl <command>: error: <message>`` (argparse's own form)."""
    return f"tfrrl {command}: error: {message}"
