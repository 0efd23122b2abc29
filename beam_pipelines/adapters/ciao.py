"""Ciao product reviews → raw contract (README "Ciao benchmark protocol", steps 1–2).

Source (``ciao_interactions.tsv``: user_id, item_id, domain_id, rating, helpfulness, timestamp;
``domains.tsv``: domain_id, domain_name).

* Domains: the ``num_domains`` largest categories by rows (default 5 → ids 1, 10, 3, 2, 5). The
  domain of an impression is the category of its row, written as the category's name from
  ``domains.tsv`` verbatim (e.g. ``DVDs``, ``Ciao Caf?`` — the source lost the "é"), or
  ``c<id>`` with ``domain_names=False`` (also used when an id has no name or names collide).
* Iterative ``min_count``-core (default 5) on users and items within those categories; every row
  counts, duplicates included, as in the protocol → 67,230 rows, 3,593 users, 4,822 items.
* One entity type ``item``; catalog ``catalogs/item.csv`` = ``item_id,category`` with category =
  the item's domain label (unified field ``category``). 4 items of the core occur in two
  categories: their catalog category is their majority category (ties: larger category first);
  their impressions keep the category of each row.
* Every row is a positive: ``click`` = 1, ``label: impression`` (the paper treats every
  impression as a positive; ratings are not labels). ``min_rating`` (default None) drops rows
  rated below it *before* the category ranking and the core (this changes the protocol's counts).
* No users file (``users: null``): the folder has no profile data, so every user gets the default
  profile; a field-less users file would only add an ``unknown_user`` check that cannot fail.
* Timestamps are the unix timestamps (day resolution). The split is the pipeline's: the protocol
  trains on rows before the 90th percentile of timestamps → ``eval_fraction: 0.1`` (summary).
  120 rows of the core are exact duplicates (user, item, category, day) that the pipeline counts
  as ``duplicate_row`` (reported as ``duplicate_rows``).
* ``core_scope="train"`` (default ``"all"``, the protocol) runs the k-core on the TRAIN rows
  only. The protocol's core runs over TRAIN and eval together, so an item with c < k TRAIN
  rows is sure to have at least k − c eval rows, and an item without TRAIN rows at least k:
  "few or no TRAIN rows" tells a ranker what the eval period will hold (measured in
  benchmarks/RESULTS.md). Here the cut is the protocol's own (the 90th percentile of the
  protocol core's timestamps, :func:`protocol_cutoff`; recommended to the pipeline as its
  ``cutoff_timestamp``); TRAIN = the top categories' rows before it, reduced to their k-core;
  eval = the rows at or after it of the users and items that core kept. Every user and item
  then has at least k TRAIN rows and nothing about eval decides who is kept.
* ``drop_timestamps=True`` writes the same rows without their time (``timestamp: null``): the
  check of data without time on a real dataset. The pipeline then splits at random (seeded,
  ``eval_fraction`` 0.1) and each example's sequence is the user's other TRAIN exposures
  (``transforms.untimed_history``). Rows that differed only by their day become exact duplicates
  (``duplicate_row``): the summary's ``duplicate_rows`` counts them on (user, item, category).
"""

from __future__ import annotations

from collections import Counter
from typing import Dict, List, Optional

import numpy as np

from beam_pipelines.adapters import common
from tfrrl.data.link_spec import DatasetSpec, EntityTypeSpec

INTERACTIONS = "ciao_interactions.tsv"
DOMAINS = "domains.tsv"
ENTITY_TYPE = "item"
ENCODINGS = ("utf-8", "cp1252")
CORE_SCOPES = ("all", "train")


def protocol_cutoff(timestamps: np.ndarray, eval_fraction: float) -> int:
    """The first eval timestamp of the protocol's time split: the (1 − ``eval_fraction``)
    quantile of ``timestamps``, an element of them (numpy's ``lower`` method); rows at or after
    it are eval. Worked example: [1, 2, …, 10], 0.1 → the 0.9 quantile of 10 values sits at
    position 8.1 → lower → 9."""
    return int(np.quantile(np.asarray(timestamps), 1.0 - eval_fraction, method="lower"))


def train_scope_core(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray,
                     cutoff: int, k: int) -> np.ndarray:
    """Boolean mask: the TRAIN rows (timestamp < ``cutoff``) of their own iterative k-core, and
    the eval rows (≥ ``cutoff``) whose user and item that core kept."""
    train = timestamps < cutoff
    kept_train = np.zeros(len(users), bool)
    kept_train[np.flatnonzero(train)] = common.iterative_k_core(users[train], items[train], k)
    kept_users = np.zeros(users.max(initial=-1) + 1, bool)
    kept_items = np.zeros(items.max(initial=-1) + 1, bool)
    kept_users[users[kept_train]] = True
    kept_items[items[kept_train]] = True
    return kept_train | (~train & kept_users[users] & kept_items[items])


def _domain_labels(path: str, ids: List[str], use_names: bool,
                   stats: common.DecodeStats) -> Dict[str, str]:
    names = {}
    for row in common.read_table(path, delimiter="\t", encodings=ENCODINGS, stats=stats):
        names[row.get("domain_id", "")] = row.get("domain_name", "")
    labels = {d: (names.get(d) or f"c{d}") if use_names else f"c{d}" for d in ids}
    if len(set(labels.values())) != len(labels):  # two categories with one name: use ids
        labels = {d: f"c{d}" for d in ids}
    return labels


def convert(source_dir: str, out_dir: str, *, num_domains: int = 5, min_count: int = 5,
            min_rating: Optional[float] = None, domain_names: bool = True,
            drop_timestamps: bool = False, core_scope: str = "all",
            overwrite: bool = False) -> Dict[str, object]:
    """Writes the Ciao raw folder into ``out_dir``; returns the summary (row counts, timing)."""
    timer = common.Timer()
    if num_domains < 1:
        raise ValueError("num_domains must be >= 1")
    if core_scope not in CORE_SCOPES:
        raise ValueError(f"core_scope must be one of {CORE_SCOPES}, got {core_scope!r}")
    if core_scope == "train" and drop_timestamps:
        raise ValueError("core_scope=train needs the timestamps of the time split: drop "
                         "drop_timestamps=true or core_scope=train")
    inter_path, domains_path = common.require_files(source_dir, INTERACTIONS, DOMAINS)
    common.prepare_out_dir(out_dir, overwrite)
    stats = common.DecodeStats()
    malformed = Counter()

    def rows():
        """Valid source rows as (user, item, domain_id, timestamp); counts the others."""
        for row in common.read_table(inter_path, delimiter="\t", encodings=ENCODINGS,
                                     stats=stats):
            user, item, dom = (row.get(c, "") for c in ("user_id", "item_id", "domain_id"))
            if not (user and item and dom):
                malformed["missing_value"] += 1
                continue
            try:
                ts = common.to_int(row.get("timestamp", ""))
                rating = float(row["rating"]) if min_rating is not None else None
            except (ValueError, KeyError):
                malformed["bad_number"] += 1
                continue
            if rating is not None and rating < min_rating:
                malformed["below_min_rating"] += 1
                continue
            yield user, item, dom, ts

    # Pass 1: rows per category → the K largest (ties by id, numerically when possible).
    per_domain = Counter(dom for _, _, dom, _ in rows())
    source_rows = sum(per_domain.values()) + sum(malformed.values())
    key = lambda d: (-per_domain[d], int(d) if d.isdigit() else float("inf"), d)  # noqa: E731
    top = sorted(per_domain, key=key)[:num_domains]
    top_set = set(top)

    # Pass 2: the rows of those categories as dense ints (small memory), then the k-core.
    malformed.clear()  # pass 2 counts the same rows again
    stats.fallback_lines = stats.replaced_lines = 0
    users, items = common.Densifier(), common.Densifier()
    dom_index = {d: i for i, d in enumerate(top)}
    u_col, i_col, d_col, t_col = [], [], [], []
    for user, item, dom, ts in rows():
        if dom in top_set:
            u_col.append(users(user))
            i_col.append(items(item))
            d_col.append(dom_index[dom])
            t_col.append(ts)
    u_arr, i_arr = np.asarray(u_col, np.int64), np.asarray(i_col, np.int64)
    d_arr, t_arr = np.asarray(d_col, np.int64), np.asarray(t_col, np.int64)
    rows_in_top = len(u_arr)
    keep = common.iterative_k_core(u_arr, i_arr, min_count)
    cutoff = None
    if core_scope == "train":
        cutoff = protocol_cutoff(t_arr[keep], common.DEFAULT_EVAL_FRACTION)
        keep = train_scope_core(u_arr, i_arr, t_arr, cutoff, min_count)
    u_arr, i_arr, d_arr, t_arr = u_arr[keep], i_arr[keep], d_arr[keep], t_arr[keep]

    labels = _domain_labels(domains_path, top, domain_names, stats)
    domain_label = [labels[d] for d in top]
    user_ids = list(users.index)
    item_ids = list(items.index)

    timed = not drop_timestamps
    with common.CsvSink(out_dir, common.IMPRESSIONS_FILE,
                        common.impression_header(timestamp=timed)) as sink:
        for u, i, d, t in zip(u_arr.tolist(), i_arr.tolist(), d_arr.tolist(), t_arr.tolist()):
            row = (user_ids[u], item_ids[i], ENTITY_TYPE, domain_label[d]) + ((t,) if timed
                                                                             else ()) + (1,)
            sink.write(row)
        n_impressions = sink.rows

    # Catalog: one row per item of the core, category = its majority domain.
    item_domains: Dict[int, Counter] = {}
    for i, d in zip(i_arr.tolist(), d_arr.tolist()):
        item_domains.setdefault(i, Counter())[d] += 1
    with common.CsvSink(out_dir, common.catalog_file(ENTITY_TYPE),
                        ("item_id", "category")) as catalog:
        for i, counts in item_domains.items():
            catalog.write((item_ids[i], domain_label[common.majority(counts, range(len(top)))]))
        n_items = catalog.rows

    spec = DatasetSpec(
        description=(
            f"Ciao product reviews (Tang et al., WSDM'12 / KDD'12): top {num_domains} "
            f"categories as domains, iterative {min_count}-core on users and items"
            + (" of the TRAIN rows (eval rows of the users and items it kept)"
               if cutoff is not None else "")
            + ", one entity type 'item', every review a positive impression. "
            + ("Protocol split: rows at or after the 90th percentile of timestamps are eval "
               "(eval_fraction 0.1)." if timed else
               "Timestamps dropped: seeded random split (eval_fraction 0.1).")
        ),
        impressions=common.impressions_spec(timestamp=timed),
        entity_types={ENTITY_TYPE: EntityTypeSpec(
            path=common.catalog_file(ENTITY_TYPE), format="csv", id_column="item_id",
            fields={"category": "category"})},
        users=None,
        label="impression",
    )
    common.write_spec(out_dir, spec)

    dup_keys = Counter(zip(u_arr.tolist(), i_arr.tolist(), d_arr.tolist(),
                           t_arr.tolist() if timed else [None] * len(u_arr)))
    split = ({"kind": "time", "eval_fraction": common.DEFAULT_EVAL_FRACTION,
              "rule": "eval = timestamp >= 90th percentile of timestamps"} if timed else
             {"kind": "random", "eval_fraction": common.DEFAULT_EVAL_FRACTION,
              "rule": "timestamps dropped: seeded random split"})
    extra = {}
    if cutoff is not None:
        split["rule"] = ("eval = timestamp >= the 90th percentile of the protocol core's "
                         "timestamps (cutoff_timestamp)")
        split["cutoff_timestamp"] = extra["cutoff_timestamp"] = cutoff
    return common.summary(
        "ciao", out_dir, spec,
        impressions=n_impressions, positives=n_impressions,
        users=int(len(np.unique(u_arr))), entities={ENTITY_TYPE: n_items},
        domains={domain_label[d]: int(n) for d, n in enumerate(np.bincount(
            d_arr, minlength=len(top))) if n},  # a category the core emptied is gone
        split=split, timer=timer, decode=stats,
        source_rows=source_rows, rows_in_top_domains=rows_in_top,
        domain_ids={labels[d]: d for d in top},
        num_domains=num_domains, min_count=min_count, min_rating=min_rating,
        drop_timestamps=drop_timestamps, core_scope=core_scope,
        skipped_rows=dict(malformed),
        duplicate_rows=sum(n - 1 for n in dup_keys.values()),
        items_in_several_domains=sum(1 for c in item_domains.values() if len(c) > 1),
        **extra,
    )

