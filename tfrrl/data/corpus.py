"""The entity corpus of a prepared dataset: its ``corpus`` split (one record per entity, with the
sampling probability Q(a) of Eq. 2) loaded into NumPy arrays.

The trainer samples negatives from it, the evaluation scores every entity of it (Recall-all@N,
Eq. 26) and the indexer builds its indexes over it: all three read it through
:func:`load_corpus`, so corpus index i means the same entity everywhere.
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np

from tfrrl.data.reader import CORPUS, FeatureLookup, PreparedDataset

# The corpus column holding each entity's raw key (``<type>:<id>``, bytes).
ENTITY_KEY = "entity_key"


def load_corpus(data: PreparedDataset, lookup: FeatureLookup,
                batch_size: int = 65_536) -> Dict[str, np.ndarray]:
    """Every corpus entity with vocabulary ids, ``sampling_prob``, ``entity_hash`` and the raw
    ``entity_key`` strings, as NumPy arrays in file order."""
    parts: Dict[str, List[np.ndarray]] = {}
    for raw in data.raw_dataset(CORPUS, batch_size):
        ids = lookup(raw)
        for k, v in ids.items():
            parts.setdefault(k, []).append(v.numpy())
        parts.setdefault(ENTITY_KEY, []).append(raw["entity_id"].numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}
