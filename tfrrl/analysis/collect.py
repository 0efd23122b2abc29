"""Pulls embedding tables and expert outputs out of a trained :class:`MatchingModel`.

* :func:`embedding_tables` — every ``keras.layers.Embedding`` of the model: the shared input
  tables (named by vocabulary, e.g. ``entity_id``) and any other table a backbone owns (e.g. the
  extra tables of a multi-embedding backbone, named by layer path).
* :func:`collect_expert_outputs` — the expert representations O_k^(p) of eval examples, read
  from the backbone's output dict while the model scores each example's own (user, entity)
  pair through its ordinary ``call``:

  1. ``expert_outputs`` [B, C, M, d] (multi-embedding / STEM / Crocodile / ADI backbones); the
     backbone may name them (``expert_names``) and map each domain to its specific expert
     (``domain_expert_index``, −1 = none) for DI^SF;
  2. else ``e_s`` and ``e_d`` (the RRL hybrid-expert backbone, §III-C): the shared expert plus
     EVERY domain's specific expert on every sample (the backbone is re-run with the routing
     forced to each domain k — the specific expert's output does not depend on the gate), so
     the experts are [shared, specific_0 … specific_{K−1}];
  3. else the input of the domain towers (``towers`` / ``tower`` sub-layers): the layer before
     the towers, one representation per sample (tower k's input for samples of domain k);
  4. else :class:`NoExpertOutputs` with a clear message.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfrrl.data.reader import EVAL, TRAIN, FeatureLookup, PreparedDataset
from tfrrl.data.schema import FIRST_DOMAIN_ID
from tfrrl.model.scorer import scorer_of

Progress = Callable[[str], None]


class NoExpertOutputs(RuntimeError):
    """The backbone exposes no expert representation the analysis could read."""


@dataclasses.dataclass
class ExpertOutputs:
    """Expert representations of ``n`` eval examples."""

    source: str  # "expert_outputs" | "e_s/e_d" | "tower_input"
    names: List[str]  # M expert names
    outputs: np.ndarray  # [n, M, d] float32
    domains: np.ndarray  # [n] domain (expert-routing) index k ∈ [0, K)
    users: np.ndarray  # [n] user_id vocabulary ids
    entities: np.ndarray  # [n] entity_id vocabulary ids
    categories: np.ndarray  # [n] entity_category vocabulary ids
    domain_expert: Optional[List[int]] = None  # expert index specific to each domain (SF)


# -- embedding tables --------------------------------------------------------------------------
def embedding_tables(model: keras.Model, names: Optional[Sequence[str]] = None
                     ) -> Dict[str, np.ndarray]:
    """``{name: table [rows, dim]}`` of every embedding table; ``names`` keeps only those (an
    unknown name raises, listing the known ones)."""
    tables: Dict[str, np.ndarray] = {}
    seen = set()
    for vocab, layer in sorted(scorer_of(model).embeddings.tables.items()):
        tables[vocab] = np.asarray(layer.embeddings.numpy())
        seen.add(id(layer))
    others = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):  # noqa: SLF001
        if isinstance(layer, keras.layers.Embedding) and id(layer) not in seen:
            seen.add(id(layer))
            others[getattr(layer, "path", layer.name)] = np.asarray(layer.embeddings.numpy())
    tables.update(sorted(others.items()))
    if names:
        unknown = [n for n in names if n not in tables]
        if unknown:
            raise KeyError(f"no embedding table named {unknown}; tables: {sorted(tables)}")
        tables = {n: tables[n] for n in names}
    return tables


def entity_id_tables(tables: Dict[str, np.ndarray], model: keras.Model
                     ) -> Dict[str, np.ndarray]:
    """The tables of ``tables`` indexed by the entity_id vocabulary: the shared ``entity_id``
    table and any other ``…entity_id`` table with as many rows (e.g. the per-set copies of a
    multi-embedding backbone)."""
    shared = scorer_of(model).embeddings.tables.get("entity_id")
    if shared is None:
        return {}
    rows = int(shared.input_dim)
    return {name: t for name, t in tables.items()
            if (name == "entity_id" or name.endswith("entity_id")) and t.shape[0] == rows}


def entity_frequency_rows(data: PreparedDataset, lookup: Optional[FeatureLookup] = None
                          ) -> tuple:
    """(entity_id table rows, training counts) from ``entity_frequency.tsv``; entities that map
    to the OOV row (below the vocabulary's min_frequency) are left out."""
    path = f"{data.data_dir}/entity_frequency.tsv"
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path} not found: re-run `tfrrl prepare` on this dataset")
    keys, counts = [], []
    with tf.io.gfile.GFile(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        key_col, count_col = header.index("entity_id"), header.index("train_count")
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) > max(key_col, count_col):
                keys.append(parts[key_col])
                counts.append(int(float(parts[count_col])))
    lookup = lookup or FeatureLookup.from_dataset(data)
    rows = lookup.lookups["entity_id"](tf.constant(keys, tf.string)).numpy().astype(np.int64)
    counts = np.asarray(counts, np.int64)
    keep = rows > 1  # 0 padding, 1 OOV
    return rows[keep], counts[keep]


# -- expert outputs ----------------------------------------------------------------------------
@contextlib.contextmanager
def _recording(layer: keras.layers.Layer, sink: list, record_output: bool = True
               ) -> Iterator[Callable]:
    """While active, every call of ``layer`` appends (args, kwargs, output) to ``sink``;
    yields the original ``call``."""
    original = layer.call
    patched = "call" in vars(layer)  # already an instance attribute (another wrapper)

    def wrapper(*args, **kwargs):
        out = original(*args, **kwargs)
        sink.append((args, kwargs, out if record_output else None))
        return out

    layer.call = wrapper
    try:
        yield original
    finally:
        if patched:
            layer.call = original
        else:
            del layer.call


def _towers(backbone) -> List[keras.layers.Layer]:
    towers = getattr(backbone, "towers", None)
    if towers:
        return list(towers)
    tower = getattr(backbone, "tower", None)
    return [tower] if tower is not None else []


def _from_backbone_dict(out: dict, original, args, kwargs, num_domains: int):
    """(source, names, [B, M, d]) from one recorded backbone call, or None."""
    if "expert_outputs" in out:
        eo = tf.convert_to_tensor(out["expert_outputs"])
        if eo.shape.rank != 4:
            raise ValueError(f"expert_outputs must be [B, C, M, d], got {eo.shape}")
        return "expert_outputs", eo[:, 0].numpy()
    if "e_s" in out and "e_d" in out:
        r, domain_index = args[0], args[1]
        parts = [out["e_s"][:, 0]]
        for k in range(num_domains):  # every domain's specific expert on every sample
            forced = tf.fill(tf.shape(domain_index), tf.constant(k, domain_index.dtype))
            parts.append(original(r, forced, *args[2:], **kwargs)["e_d"][:, 0])
        return "e_s/e_d", tf.stack(parts, axis=1).numpy()
    return None


def _tower_inputs(records: List[list], domains: np.ndarray) -> Optional[np.ndarray]:
    """[B, 1, d] from the towers' recorded inputs (tower k ↔ samples of domain k)."""
    b = len(domains)
    rows_out: Optional[np.ndarray] = None
    for k, calls in enumerate(records):
        if not calls:
            continue
        x = np.asarray(calls[-1][0][0])
        x = x[:, 0] if x.ndim == 3 else x  # [n, C, d] → own pair
        rows = np.flatnonzero(domains == k) if len(records) > 1 else np.arange(b)
        if x.shape[0] == b:
            x = x[rows]
        elif x.shape[0] != len(rows):
            return None
        if rows_out is None:
            rows_out = np.zeros([b, x.shape[-1]], np.float32)
        rows_out[rows] = x
    return None if rows_out is None else rows_out[:, None, :]


def collect_expert_outputs(model: keras.Model, data: PreparedDataset, max_examples: int = 2000,
                           batch_size: int = 256, progress: Optional[Progress] = None
                           ) -> ExpertOutputs:
    """Expert representations of the first ``max_examples`` eval examples (file order, so the
    same examples for every checkpoint of a run); see the module docstring for the sources."""
    backbone = model.backbone
    num_domains = int(model.num_domains)
    towers = _towers(backbone)
    source, names = None, None
    parts: Dict[str, list] = {"outputs": [], "domains": [], "users": [], "entities": [],
                              "categories": []}
    n = 0
    for batch in data.dataset(EVAL, batch_size):
        if n >= max_examples:
            break
        take = min(batch_size, max_examples - n)
        batch = {k: v[:take] for k, v in batch.items()}
        domains = np.clip(batch["domain"].numpy().astype(np.int64) - FIRST_DOMAIN_ID, 0,
                          num_domains - 1)
        calls: list = []
        tower_calls: List[list] = [[] for _ in towers]
        with contextlib.ExitStack() as stack:
            original = stack.enter_context(_recording(backbone, calls))
            for t, sink in zip(towers, tower_calls):
                stack.enter_context(_recording(t, sink, record_output=False))
            model(batch, training=False)
        args, kwargs, out = calls[0]
        got = _from_backbone_dict(out, original, args, kwargs, num_domains)
        if got is not None:
            source, outputs = got
        else:
            outputs = _tower_inputs(tower_calls, domains)
            if outputs is None:
                raise NoExpertOutputs(
                    f"backbone {type(backbone).__name__} ({model.config.backbone}) exposes no "
                    f"expert output: its output dict has {sorted(out)} (no 'expert_outputs', "
                    f"no 'e_s'/'e_d') and no towers whose inputs could be read")
            source = "tower_input"
        parts["outputs"].append(outputs.astype(np.float32))
        parts["domains"].append(domains)
        parts["users"].append(batch["user_id"].numpy())
        parts["entities"].append(batch["entity_id"].numpy())
        parts["categories"].append(batch["entity_category"].numpy())
        n += take
        if progress and (n // batch_size) % 8 == 0:
            progress(f"expert outputs: {n:,} / {max_examples:,} eval examples")
    if n == 0:
        raise ValueError(f"no eval examples in {data.data_dir}")
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    m = arrays["outputs"].shape[1]
    domain_names = data.domains_in_vocabulary_order()[:num_domains]
    domain_expert = None
    if source == "expert_outputs":
        names = [str(x) for x in getattr(backbone, "expert_names", [])] or \
            [f"expert_{p}" for p in range(m)]
        mapping = getattr(backbone, "domain_expert_index", None)
        domain_expert = [int(x) for x in mapping] if mapping is not None else None
    elif source == "e_s/e_d":
        names = ["shared"] + [f"specific_{d}" for d in domain_names]
        domain_expert = list(range(1, num_domains + 1))
    else:
        names = ["tower_input"]
    if len(names) != m:
        raise ValueError(f"backbone names {len(names)} experts but outputs {m}")
    return ExpertOutputs(source=source, names=names, outputs=arrays["outputs"],
                         domains=arrays["domains"], users=arrays["users"],
                         entities=arrays["entities"], categories=arrays["categories"],
                         domain_expert=domain_expert)


def training_history(data: PreparedDataset, num_domains: int, batch_size: int = 8192,
                     progress: Optional[Progress] = None) -> Dict[str, np.ndarray]:
    """Every TRAIN example's user, domain index, entity and category ids (for D_con)."""
    parts: Dict[str, list] = {"users": [], "domains": [], "entities": [], "categories": []}
    n = 0
    for batch in data.dataset(TRAIN, batch_size):
        parts["users"].append(batch["user_id"].numpy())
        dom = batch["domain"].numpy().astype(np.int64) - FIRST_DOMAIN_ID
        parts["domains"].append(np.clip(dom, 0, num_domains - 1))
        parts["entities"].append(batch["entity_id"].numpy())
        parts["categories"].append(batch["entity_category"].numpy())
        n += len(dom)
        if progress and (n // batch_size) % 50 == 0:
            progress(f"training history: {n:,} examples read")
    return {k: np.concatenate(v).astype(np.int64) for k, v in parts.items()}
