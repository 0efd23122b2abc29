"""MovieLens-100K (RecBole atomic files) → raw contract.

Source: ``ml-100k.inter`` (user_id, item_id, rating, timestamp), ``ml-100k.item`` (item_id,
movie_title, release_year, class = space-separated genres), ``ml-100k.user`` (user_id, age,
gender, occupation, zip_code); tab-separated with typed headers (``user_id:token``).

* Domains: the user's age group ``1-24`` / ``25-34`` / ``35+`` (the public multi-domain
  convention); the domain of an impression is its user's group.
* One entity type ``item``; catalog ``catalogs/item.csv`` = ``item_id,genre,year`` mapped to the
  unified fields category ← ``genre`` (the FIRST listed genre: one categorical value per entity,
  as the unified schema wants) and brand ← ``year`` (release year: the closest thing to a
  "producer" attribute that partitions movies usefully; an empty year becomes the default).
* Users ``users.csv`` = ``user_id,age_group,gender,occupation,zip_prefix`` mapped to age_bucket,
  gender, occupation and city ← ``zip_prefix`` (first ``zip_prefix_len`` = 3 characters of the
  zip, upper-cased: a US ZIP3 area; Canadian postal codes give their forward sortation area).
* Labels: ALL 100,000 ratings are written with ``click`` = 1 if rating >= ``min_rating`` (4),
  else 0, and ``label: click``: the pipeline drops the rest by its counted rule ``not_clicked``
  while keeping them as exposures in later sequences. ``write_negatives=False`` writes only the
  positives, with ``label: impression``.
* Timestamps: unix seconds; the pipeline's time split (``eval_fraction`` 0.1) applies.
"""

from __future__ import annotations

import csv
from collections import Counter
from typing import Dict

from beam_pipelines.adapters import common
from tfrrl.data.link_spec import DatasetSpec, EntityTypeSpec, UsersSpec

INTER, ITEMS, USERS = "ml-100k.inter", "ml-100k.item", "ml-100k.user"
ENTITY_TYPE = "item"
# The original GroupLens files are Latin-1; RecBole's are UTF-8.
ENCODINGS = ("utf-8", "latin-1")
AGE_GROUPS = ("1-24", "25-34", "35+")


def age_group(age: str) -> str:
    """'1-24' (age <= 24), '25-34', '35+'; '' when the age is unknown."""
    try:
        years = float(age)
    except ValueError:
        return ""
    return AGE_GROUPS[0] if years <= 24 else AGE_GROUPS[1] if years <= 34 else AGE_GROUPS[2]


def _read(path: str, stats: common.DecodeStats):
    # Atomic files are tab-separated and never quoted: a '"' in a title is a character.
    return common.read_table(path, delimiter="\t", encodings=ENCODINGS, stats=stats,
                             quoting=csv.QUOTE_NONE, header_names=common.atomic_name)


def convert(source_dir: str, out_dir: str, *, min_rating: float = 4,
            write_negatives: bool = True, zip_prefix_len: int = 3,
            overwrite: bool = False) -> Dict[str, object]:
    """Writes the MovieLens-100K raw folder into ``out_dir``; returns the summary."""
    timer = common.Timer()
    inter_path, item_path, user_path = common.require_files(source_dir, INTER, ITEMS, USERS)
    stats = common.DecodeStats()
    skipped = Counter()
    common.prepare_out_dir(out_dir, overwrite)

    # Users (943 rows): profiles, and the age group that is also the domain.
    domain_of: Dict[str, str] = {}
    with common.CsvSink(out_dir, common.USERS_FILE,
                        ("user_id", "age_group", "gender", "occupation", "zip_prefix")) as users:
        for row in _read(user_path, stats):
            user = row.get("user_id", "")
            if not user or user in domain_of:
                skipped["users/" + ("duplicate_user" if user else "missing_value")] += 1
                continue
            group = age_group(row.get("age", ""))
            domain_of[user] = group
            zip_prefix = row.get("zip_code", "")[:zip_prefix_len].upper()
            users.write((user, group, row.get("gender", ""), row.get("occupation", ""),
                         zip_prefix))

    # Catalog (1,682 rows).
    with common.CsvSink(out_dir, common.catalog_file(ENTITY_TYPE),
                        ("item_id", "genre", "year")) as catalog:
        seen = set()
        for row in _read(item_path, stats):
            item = row.get("item_id", "")
            if not item or item in seen:
                skipped["items/" + ("duplicate_entity" if item else "missing_value")] += 1
                continue
            seen.add(item)
            genres = row.get("class", "").split()
            catalog.write((item, genres[0] if genres else "", row.get("release_year", "")))
        n_items = catalog.rows

    # Impressions (100,000 rows), streamed.
    domains, positives = Counter(), 0
    with common.CsvSink(out_dir, common.IMPRESSIONS_FILE, common.impression_header()) as sink:
        for row in _read(inter_path, stats):
            user, item = row.get("user_id", ""), row.get("item_id", "")
            domain = domain_of.get(user, "")
            if not (user and item):
                skipped["impressions/missing_value"] += 1
                continue
            if not domain:  # no profile or no age: no domain (the pipeline would drop it)
                skipped["impressions/no_domain"] += 1
                continue
            try:
                rating = float(row.get("rating", ""))
                ts = common.to_int(row.get("timestamp", ""))
            except ValueError:
                skipped["impressions/bad_number"] += 1
                continue
            click = int(rating >= min_rating)
            positives += click
            if not click and not write_negatives:
                continue
            domains[domain] += 1
            sink.write((user, item, ENTITY_TYPE, domain, ts, click))
        n_impressions = sink.rows

    spec = DatasetSpec(
        description=(
            "MovieLens-100K (GroupLens, via RecBole): domains = user age group 1-24 / 25-34 / "
            f"35+, one entity type 'item' (category = first genre, brand = release year), "
            f"positive = rating >= {min_rating:g}."
        ),
        impressions=common.impressions_spec(),
        entity_types={ENTITY_TYPE: EntityTypeSpec(
            path=common.catalog_file(ENTITY_TYPE), format="csv", id_column="item_id",
            fields={"category": "genre", "brand": "year"})},
        users=UsersSpec(path=common.USERS_FILE, format="csv", id_column="user_id",
                        fields={"age_bucket": "age_group", "gender": "gender",
                                "occupation": "occupation", "city": "zip_prefix"}),
        label="click" if write_negatives else "impression",
    )
    common.write_spec(out_dir, spec)
    return common.summary(
        "ml100k", out_dir, spec,
        impressions=n_impressions, positives=positives, users=len(domain_of),
        entities={ENTITY_TYPE: n_items}, domains=dict(domains),
        split={"kind": "time", "eval_fraction": common.DEFAULT_EVAL_FRACTION},
        timer=timer, decode=stats,
        min_rating=min_rating, write_negatives=write_negatives, skipped_rows=dict(skipped),
    )
