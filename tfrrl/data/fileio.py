"""Small file helpers over Apache Beam's FileSystems, so local paths and gs:// behave alike."""

from __future__ import annotations

from typing import List

from apache_beam.io.filesystems import FileSystems


def exists(path: str) -> bool:
    return FileSystems.exists(path)


def read_text(path: str) -> str:
    with FileSystems.open(path) as f:
        return f.read().decode("utf-8")


def write_text(path: str, text: str) -> None:
    with FileSystems.create(path) as f:
        f.write(text.encode("utf-8"))


def glob(pattern: str) -> List[str]:
    """Paths matching a glob, sorted (deterministic shard order)."""
    result = FileSystems.match([pattern])[0]
    return sorted(m.path for m in result.metadata_list)


def join(base: str, *parts: str) -> str:
    return FileSystems.join(base, *parts)
