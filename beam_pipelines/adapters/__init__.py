"""Adapters from public datasets to the raw contract (:mod:`tfrrl.data.link_spec`).

Each adapter is ``convert(source_dir, out_dir, **options) -> dict``: it writes a raw folder
(impressions, one catalog per entity type, optional users, ``link_spec.yaml``) that the Beam
pipeline unifies, and returns a summary with row counts. See :mod:`beam_pipelines.adapters.common`
for the folder layout and each module's docstring for its dataset's choices.
"""

from __future__ import annotations

import inspect
from typing import Callable, Dict

from beam_pipelines.adapters import ciao, douban, movielens

ADAPTERS: Dict[str, Callable[..., dict]] = {
    "ciao": ciao.convert,
    "ml100k": movielens.convert,
    "douban": douban.convert,
}


class AdapterError(ValueError):
    """What an adapter was given is wrong: an unknown option or a value it refuses (its message
    says which; ``tfrrl prepare`` shows it as one line)."""


def options_of(name: str) -> list:
    """The keyword options of the adapter ``name`` (``--adapter-option KEY=VALUE``)."""
    return [p for p in inspect.signature(ADAPTERS[name]).parameters
            if p not in ("source_dir", "out_dir")]


def convert(name: str, source_dir: str, out_dir: str, **options) -> dict:
    """Runs the adapter ``name`` (one of :data:`ADAPTERS`). An unknown option, or a value the
    adapter refuses (its ValueError), raises :class:`AdapterError`."""
    try:
        adapter = ADAPTERS[name]
    except KeyError:
        raise ValueError(f"unknown dataset adapter {name!r}; known: {sorted(ADAPTERS)}") from None
    unknown = sorted(set(options) - set(options_of(name)))
    if unknown:
        raise AdapterError(f"adapter {name} has no option {', '.join(unknown)}; its options: "
                           f"{', '.join(options_of(name))}")
    try:
        return adapter(source_dir, out_dir, **options)
    except AdapterError:
        raise
    except ValueError as error:
        raise AdapterError(f"adapter {name}: {error}") from error
