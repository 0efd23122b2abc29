"""Adapters from public datasets to the raw contract (:mod:`tfrrl.data.link_spec`).

Each adapter is ``convert(source_dir, out_dir, **options) -> dict``: it writes a raw folder
(impressions, one catalog per entity type, optional users, ``link_spec.yaml``) that the Beam
pipeline unifies, and returns a summary with row counts. See :mod:`beam_pipelines.adapters.common`
for the folder layout and each module's docstring for its dataset's choices.
"""

from __future__ import annotations

from typing import Callable, Dict

from beam_pipelines.adapters import ciao, douban, movielens

ADAPTERS: Dict[str, Callable[..., dict]] = {
    "ciao": ciao.convert,
    "ml100k": movielens.convert,
    "douban": douban.convert,
}


def convert(name: str, source_dir: str, out_dir: str, **options) -> dict:
    """Runs the adapter ``name`` (one of :data:`ADAPTERS`)."""
    try:
        adapter = ADAPTERS[name]
    except KeyError:
        raise ValueError(f"unknown dataset adapter {name!r}; known: {sorted(ADAPTERS)}") from None
    return adapter(source_dir, out_dir, **options)
