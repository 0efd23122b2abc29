"""What every subcommand shares: the progress line and TensorFlow's quiet C++ logging."""

from __future__ import annotations

import os
import time


def say(message: str) -> None:
    """One progress line, ``[tfrrl HH:MM:SS] message``, flushed at once."""
    print(f"[tfrrl {time.strftime('%H:%M:%S')}] {message}", flush=True)


def quiet_tensorflow() -> None:
    """Keeps TensorFlow's C++ info logs off (unless the environment asks for them); call it
    before TensorFlow is first imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
