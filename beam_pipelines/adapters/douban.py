"""Douban sample (Scenario-Wise-Rec) → raw contract, with THREE entity types.

Source ``douban_sample.csv``: user_id, item_id, rating, domain (book / music / movie),
living_place, join_time, time_bin; 3,000 rows, UTF-8 with Chinese place names.

* Entity types: the source ``domain`` column — ``book``, ``music`` and ``movie`` are different
  kinds of entities (the multi-entity case of the paper), so the column becomes ``entity_type``.
* Domain: one domain, ``douban`` (default, ``domains="single"``): the entity type already says
  which section an entity belongs to, and a domain equal to the type would make the domain
  indicator redundant. ``domains="type"`` reproduces the Scenario-Wise-Rec benchmark setting
  (domain = section = entity type).
* Catalogs: the sample has no item attributes, so each type gets an ids-only catalog
  ``catalogs/<type>.csv`` (column ``entity_id``, no mapped fields: every unified field takes its
  default). Writing them (default) lets the pipeline check every impression's entity against a
  catalog; ``catalogs=False`` writes none and sets ``path: null`` (entities taken from the
  impressions) — the pipeline result is the same.
* Users ``users.csv`` = ``user_id,city,join_date,join_month`` with city ← ``living_place``
  (Chinese text kept as UTF-8; empty → the default token); join_date / join_month are unmapped
  (no unified field) and kept for reference.
* Time: the sample has NO per-interaction time. ``time_bin`` is the month of the USER's
  ``join_time`` (1 = 2005-05, checked on every row: time_bin = months since 2005-04), a constant
  per user, so it cannot order a user's interactions: the impressions have no timestamp column
  (``timestamp: null``) and the pipeline uses its seeded random split (eval_fraction 0.1); each
  example's sequence is the user's other TRAIN exposures (``transforms.untimed_history``).
* Labels: rating is 0/1 (both occur): ``click`` = 1 if rating > 0, ``label: click``.
"""

from __future__ import annotations

from collections import Counter
from typing import Dict, List

from beam_pipelines.adapters import common
from tfrrl.data.link_spec import DatasetSpec, EntityTypeSpec, UsersSpec

SAMPLE = "douban_sample.csv"
SINGLE_DOMAIN = "douban"
# Chinese text: UTF-8, else the GB family (GBK / GB2312 are subsets of GB18030).
ENCODINGS = ("utf-8", "gb18030")
DOMAIN_MODES = ("single", "type")


def convert(source_dir: str, out_dir: str, *, domains: str = "single", catalogs: bool = True,
            overwrite: bool = False) -> Dict[str, object]:
    """Writes the Douban raw folder into ``out_dir``; returns the summary."""
    timer = common.Timer()
    if domains not in DOMAIN_MODES:
        raise ValueError(f"domains must be one of {DOMAIN_MODES}, got {domains!r}")
    (sample_path,) = common.require_files(source_dir, SAMPLE)
    stats = common.DecodeStats()
    skipped = Counter()
    common.prepare_out_dir(out_dir, overwrite)

    entities: Dict[str, Dict[str, None]] = {}  # type → ids in first-seen order
    profiles: Dict[str, tuple] = {}
    per_domain, per_type = Counter(), Counter()
    positives, conflicting_profiles = 0, 0
    with common.CsvSink(out_dir, common.IMPRESSIONS_FILE,
                        common.impression_header(timestamp=False)) as sink:
        for row in common.read_table(sample_path, encodings=ENCODINGS, stats=stats):
            user, item = row.get("user_id", ""), row.get("item_id", "")
            entity_type = row.get("domain", "").lower()
            if not (user and item and entity_type):
                skipped["missing_value"] += 1
                continue
            if ":" in entity_type:  # not a valid entity type name in the contract
                skipped["bad_entity_type"] += 1
                continue
            try:
                click = int(float(row.get("rating", "")) > 0)
            except ValueError:
                skipped["bad_number"] += 1
                continue
            profile = (row.get("living_place", ""), row.get("join_time", ""),
                       row.get("time_bin", ""))
            if user not in profiles:
                profiles[user] = profile
            elif profiles[user] != profile:
                conflicting_profiles += 1  # keep the first profile seen
            domain = SINGLE_DOMAIN if domains == "single" else entity_type
            entities.setdefault(entity_type, {})[item] = None
            sink.write((user, item, entity_type, domain, click))
            per_domain[domain] += 1
            per_type[entity_type] += 1
            positives += click
        n_impressions = sink.rows
    if not entities:
        raise ValueError(f"{sample_path}: no usable rows")

    with common.CsvSink(out_dir, common.USERS_FILE,
                        ("user_id", "city", "join_date", "join_month")) as users:
        for user, (place, join_time, time_bin) in profiles.items():
            users.write((user, place, join_time, time_bin))

    types: List[str] = sorted(entities)
    entity_specs = {}
    for entity_type in types:
        if catalogs:
            with common.CsvSink(out_dir, common.catalog_file(entity_type),
                                ("entity_id",)) as catalog:
                for item in entities[entity_type]:
                    catalog.write((item,))
            entity_specs[entity_type] = EntityTypeSpec(
                path=common.catalog_file(entity_type), format="csv", id_column="entity_id")
        else:
            entity_specs[entity_type] = EntityTypeSpec(path=None)

    spec = DatasetSpec(
        description=(
            "Douban sample (Scenario-Wise-Rec): entity types book / music / movie, "
            + ("one domain 'douban'" if domains == "single" else "domain = entity type")
            + ", positive = rating > 0, no per-interaction time (random split)."
        ),
        impressions=common.impressions_spec(timestamp=False),
        entity_types=entity_specs,
        users=UsersSpec(path=common.USERS_FILE, format="csv", id_column="user_id",
                        fields={"city": "city"}),
        label="click",
    )
    common.write_spec(out_dir, spec)
    return common.summary(
        "douban", out_dir, spec,
        impressions=n_impressions, positives=positives, users=len(profiles),
        entities={t: len(entities[t]) for t in types}, domains=dict(per_domain),
        split={"kind": "random", "eval_fraction": common.DEFAULT_EVAL_FRACTION,
               "reason": "no per-interaction timestamp (time_bin = the user's join month)"},
        timer=timer, decode=stats,
        impressions_per_type={t: per_type[t] for t in types},
        skipped_rows=dict(skipped), conflicting_profiles=conflicting_profiles,
        catalogs_written=catalogs, domain_mode=domains,
    )
