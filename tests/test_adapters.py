"""Adapters from the public datasets to the raw contract (beam_pipelines/adapters).

The datasets are read from ``../shared/data`` relative to the repository root (never copied into
the repo); a test skips when its dataset folder is absent. Each real dataset is converted once
per module (Ciao ≈ 2 s, MovieLens-100K < 1 s, Douban < 0.1 s).
"""

from __future__ import annotations

import csv
import glob
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from beam_pipelines import adapters
from beam_pipelines.adapters import common
from tfrrl.data import link_spec
from tfrrl.data.link_spec import DatasetSpec

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SOURCES = {"ciao": "ciao", "ml100k": "ml-100k", "douban": "douban-sample"}


def source_dir(name: str) -> str:
    path = DATA / SOURCES[name]
    if not path.is_dir():
        pytest.skip(f"dataset folder {path} absent (the adapter tests read the real datasets "
                    "from ../shared/data relative to the repository root)")
    return str(path)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """``converted(name)`` → (out_dir, summary); each dataset is converted once per module."""
    cache = {}

    def get(name: str):
        if name not in cache:
            src = source_dir(name)
            out = str(tmp_path_factory.mktemp(name) / "raw")
            cache[name] = (out, adapters.convert(name, src, out))
        return cache[name]

    return get


def read_csv(path: str):
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def check_raw_folder(out_dir: str) -> dict:
    """Checks a raw folder against its own link_spec.yaml; returns the parsed tables."""
    with open(os.path.join(out_dir, link_spec.SPEC_FILENAME), encoding="utf-8") as f:
        spec = DatasetSpec.from_yaml(f.read())  # validates
    assert spec.validate() is spec

    # Every physical line is one CSV record (the pipeline reads the files line by line).
    for path in glob.glob(os.path.join(out_dir, "**", "*.csv"), recursive=True):
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8").split("\n")
        assert lines[-1] == "", path
        width = len(next(csv.reader([lines[0]])))
        assert all(len(next(csv.reader([line]))) == width for line in lines[:-1]), path

    imp = spec.impressions
    paths = sorted(glob.glob(link_spec.resolve_path(out_dir, imp.path)))
    assert paths, imp.path
    header, impressions = None, []
    for path in paths:
        h, rows = read_csv(path)
        header = header or h
        assert h == header
        impressions += [dict(zip(h, r)) for r in rows]
    mapped = [c for c in imp.columns.values() if c]
    assert header == mapped == [c for c in common.impression_header()
                                if imp.column(c)]
    for row in impressions:
        for name in ("user_id", "entity_id", "entity_type", "domain"):
            assert row[imp.column(name)], (name, row)
        assert row[imp.column("entity_type")] in spec.entity_types
        if imp.column("timestamp"):
            int(row[imp.column("timestamp")])
        if imp.column("click"):
            assert row[imp.column("click")] in ("0", "1")

    catalogs = {}
    for type_name, et in spec.entity_types.items():
        if et.path is None:
            continue
        h, rows = read_csv(link_spec.resolve_path(out_dir, et.path))
        assert et.id_column in h and set(et.fields.values()) <= set(h), (type_name, h)
        ids = [r[h.index(et.id_column)] for r in rows]
        assert len(ids) == len(set(ids)), f"duplicate ids in the {type_name} catalog"
        catalogs[type_name] = {r[h.index(et.id_column)]: dict(zip(h, r)) for r in rows}
    for row in impressions:  # every impression's entity is in its catalog
        cat = catalogs.get(row[imp.column("entity_type")])
        if cat is not None:
            assert row[imp.column("entity_id")] in cat, row

    users = None
    if spec.users is not None:
        h, rows = read_csv(link_spec.resolve_path(out_dir, spec.users.path))
        assert spec.users.id_column in h and set(spec.users.fields.values()) <= set(h)
        users = {r[h.index(spec.users.id_column)]: dict(zip(h, r)) for r in rows}
        assert len(users) == len(rows), "duplicate user ids"
        assert {row[imp.column("user_id")] for row in impressions} <= set(users)
    return {"spec": spec, "impressions": impressions, "catalogs": catalogs, "users": users}


# --------------------------------------------------------------------------------------------
# Every adapter.

def test_registry():
    assert set(adapters.ADAPTERS) == {"ciao", "ml100k", "douban"}
    with pytest.raises(ValueError, match="unknown dataset adapter 'nope'"):
        adapters.convert("nope", "/nowhere", "/nowhere")


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_raw_folder_matches_its_spec(name, converted):
    out, summary = converted(name)
    raw = check_raw_folder(out)
    spec = raw["spec"]
    assert link_spec.load(out) == spec  # what the pipeline will read
    assert summary["impressions"] == len(raw["impressions"])
    assert summary["label"] == spec.label
    assert summary["eval_fraction"] == 0.1
    for type_name, n in summary["entities"].items():
        if type_name in raw["catalogs"]:
            assert len(raw["catalogs"][type_name]) == n
    click = spec.impressions.column("click")
    clicks = sum(int(r[click]) for r in raw["impressions"]) if click else len(raw["impressions"])
    assert summary["positives"] == clicks
    assert sum(summary["domains"].values()) == summary["impressions"]
    assert Counter(r["domain"] for r in raw["impressions"]) == summary["domains"]


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_refuses_a_non_empty_output_unless_overwrite(name, tmp_path):
    src = source_dir(name) if name != "ciao" else None
    if src is None:  # the real Ciao run is covered elsewhere; use a tiny synthetic source
        src = str(_tiny_ciao(tmp_path / "src"))
    out = tmp_path / "raw"
    (out / "impressions").mkdir(parents=True)
    (out / "impressions" / "part-99999.csv").write_text("stale\n")
    with pytest.raises(FileExistsError):
        adapters.convert(name, src, str(out))
    options = {"min_count": 1} if name == "ciao" else {}
    adapters.convert(name, src, str(out), overwrite=True, **options)
    assert not (out / "impressions" / "part-99999.csv").exists()
    check_raw_folder(str(out))


def test_missing_source_files_are_reported(tmp_path):
    for name in SOURCES:
        with pytest.raises(FileNotFoundError, match="missing source file"):
            adapters.convert(name, str(tmp_path), str(tmp_path / "out"))


# --------------------------------------------------------------------------------------------
# Ciao: README benchmark protocol, steps 1-2.

def test_ciao_protocol_counts(converted):
    out, summary = converted("ciao")
    raw = check_raw_folder(out)
    spec, imps = raw["spec"], raw["impressions"]
    assert len(imps) == summary["impressions"] == 67_230
    assert len({r["user_id"] for r in imps}) == summary["users"] == 3_593
    assert len({r["entity_id"] for r in imps}) == len(raw["catalogs"]["item"]) == 4_822
    with open(DATA / "ciao" / "domains.tsv", encoding="utf-8") as f:
        names = {r["domain_id"]: r["domain_name"] for r in csv.DictReader(f, delimiter="\t")}
    assert set(summary["domains"]) == {names[d] for d in ("1", "10", "3", "2", "5")}
    assert summary["domain_ids"] == {names[d]: d for d in ("1", "10", "3", "2", "5")}
    assert {r["domain"] for r in imps} == set(summary["domains"])
    assert list(spec.entity_types) == ["item"] and spec.users is None
    assert spec.label == "impression" and {r["click"] for r in imps} == {"1"}
    assert spec.entity_types["item"].fields == {"category": "category"}
    # category = the item's domain (majority domain for the 4 items seen in two categories)
    item_domains = {}
    for r in imps:
        item_domains.setdefault(r["entity_id"], Counter())[r["domain"]] += 1
    assert summary["items_in_several_domains"] == sum(len(c) > 1 for c in item_domains.values())
    for item, counts in item_domains.items():
        assert raw["catalogs"]["item"][item]["category"] == counts.most_common(1)[0][0]
    # k-core holds, and the rows keep the source's time order
    assert min(Counter(r["user_id"] for r in imps).values()) >= 5
    assert min(Counter(r["entity_id"] for r in imps).values()) >= 5
    ts = [int(r["timestamp"]) for r in imps]
    assert ts == sorted(ts)
    assert summary["split"]["kind"] == "time"


def _tiny_ciao(path: Path) -> Path:
    """A hand-made Ciao-format folder: categories 7 (4 rows) > 8 (3 rows) > 9 (2 rows)."""
    path.mkdir(parents=True, exist_ok=True)
    rows = [  # user, item, domain, rating, helpfulness, timestamp
        ("u1", "a", "7", "5", "4", "100"), ("u2", "a", "7", "1", "4", "101"),
        ("u1", "b", "7", "4", "4", "102"), ("u2", "b", "7", "5", "4", "103"),
        ("u1", "c", "8", "5", "4", "104"), ("u3", "c", "8", "2", "4", "105"),
        ("u3", "d", "8", "5", "4", "106"), ("u1", "e", "9", "5", "4", "107"),
        ("u4", "e", "9", "5", "4", "108"),
    ]
    with open(path / "ciao_interactions.tsv", "w", encoding="utf-8") as f:
        f.write("user_id\titem_id\tdomain_id\trating\thelpfulness\ttimestamp\n")
        f.writelines("\t".join(r) + "\n" for r in rows)
    # cp1252 bytes (decoded by the fallback encoding); category 9 has no name
    (path / "domains.tsv").write_bytes(
        "domain_id\tdomain_name\n7\tFood & Drink\n8\tCaf\xe9\n".encode("cp1252"))
    return path


def test_ciao_options_on_a_tiny_source(tmp_path):
    src = str(_tiny_ciao(tmp_path / "src"))
    s = adapters.convert("ciao", src, str(tmp_path / "a"), num_domains=2, min_count=2)
    # categories 7, 8 (7 rows); 2-core: d (1 row) goes, then u3 (1 row left), then c
    assert s["rows_in_top_domains"] == 7
    assert s["impressions"] == 4 and s["users"] == 2 and s["entities"] == {"item": 2}
    assert s["domains"] == {"Food & Drink": 4}
    s = adapters.convert("ciao", src, str(tmp_path / "b"), num_domains=3, min_count=1,
                         domain_names=False)
    assert s["domains"] == {"c7": 4, "c8": 3, "c9": 2}
    s = adapters.convert("ciao", src, str(tmp_path / "c"), num_domains=3, min_count=1)
    assert s["domains"] == {"Food & Drink": 4, "Café": 3, "c9": 2}  # no name → c<id>
    assert s["decode_fallback_lines"] == 1
    s = adapters.convert("ciao", src, str(tmp_path / "d"), num_domains=3, min_count=1,
                         min_rating=3)
    assert s["impressions"] == 7 and s["skipped_rows"] == {"below_min_rating": 2}
    for d in "abcd":
        check_raw_folder(str(tmp_path / d))


def test_ciao_drop_timestamps_writes_the_same_rows_without_time(tmp_path):
    src = str(_tiny_ciao(tmp_path / "src"))
    timed = adapters.convert("ciao", src, str(tmp_path / "t"), num_domains=3, min_count=1)
    untimed = adapters.convert("ciao", src, str(tmp_path / "u"), num_domains=3, min_count=1,
                               drop_timestamps=True)
    check_raw_folder(str(tmp_path / "u"))  # header = the spec's mapped columns, no timestamp
    spec = link_spec.load(str(tmp_path / "u"))
    assert spec.impressions.column("timestamp") is None
    assert untimed["split"]["kind"] == "random" and untimed["drop_timestamps"] is True
    # The 9 rows of the tiny source, the same (user, item, domain) as the timed folder's.
    header, rows = read_csv(str(tmp_path / "u" / common.IMPRESSIONS_FILE))
    assert "timestamp" not in header and len(rows) == untimed["impressions"] == 9
    _, timed_rows = read_csv(str(tmp_path / "t" / common.IMPRESSIONS_FILE))
    assert ([r[:4] for r in rows] == [r[:4] for r in timed_rows]
            and timed["impressions"] == 9)
    assert untimed["duplicate_rows"] == 0


def test_ciao_protocol_cutoff_and_the_train_scope_core():
    from beam_pipelines.adapters.ciao import protocol_cutoff, train_scope_core

    assert protocol_cutoff(np.arange(1, 11), 0.1) == 9  # position 8.1 of 10 → lower → 9
    # Cutoff 6: TRAIN = rows 0-5. Their 2-core: user 2 (row 4) goes, then item 3 (row 5, one
    # TRAIN row) → rows 0-3 kept; users {0, 1}, items {0, 1}. Eval: row 6 (u0, i0) stays,
    # row 7 (item 2), row 8 (item 3), row 9 (user 3) go.
    users = np.array([0, 0, 1, 1, 2, 0, 0, 1, 1, 3])
    items = np.array([0, 1, 0, 1, 1, 3, 0, 2, 3, 1])
    times = np.array([1, 2, 3, 4, 5, 5, 6, 7, 9, 8])
    keep = train_scope_core(users, items, times, 6, 2)
    assert keep.tolist() == [True, True, True, True, False, False, True, False, False, False]
    # The protocol's core over every row keeps item 3: one TRAIN row, one eval row (row 8).
    everything = common.iterative_k_core(users, items, 2)
    assert everything.tolist() == [True, True, True, True, False, True, True, False, True,
                                   False]


def test_ciao_core_on_train_rows_on_a_tiny_source(tmp_path):
    """The 9 rows (timestamps 100-108), 1-core: the protocol cutoff is 107 (position 7.2 →
    lower). TRAIN = the 7 rows before it; the 2 eval rows are of item e, which has no TRAIN
    row: both go."""
    src = str(_tiny_ciao(tmp_path / "src"))
    s = adapters.convert("ciao", src, str(tmp_path / "t"), num_domains=3, min_count=1,
                         core_scope="train")
    assert s["cutoff_timestamp"] == 107 and s["split"]["cutoff_timestamp"] == 107
    assert s["impressions"] == 7 and s["core_scope"] == "train"
    _, rows = read_csv(str(tmp_path / "t" / common.IMPRESSIONS_FILE))
    assert max(int(r[4]) for r in rows) == 106
    check_raw_folder(str(tmp_path / "t"))
    with pytest.raises(ValueError, match="core_scope must be one of"):
        adapters.convert("ciao", src, str(tmp_path / "x"), core_scope="eval")
    with pytest.raises(ValueError, match="needs the timestamps"):
        adapters.convert("ciao", src, str(tmp_path / "y"), core_scope="train",
                         drop_timestamps=True)


def test_iterative_k_core():
    users = np.array([0, 0, 1, 1, 2, 0, 3])
    items = np.array([0, 1, 0, 1, 1, 2, 2])
    keep = common.iterative_k_core(users, items, 2)
    # user 2 (1 row) goes, then item 2 rows of users 0 and 3 → user 3 goes, item 2 goes
    assert keep.tolist() == [True, True, True, True, False, False, False]
    assert common.iterative_k_core(users, items, 1).all()
    assert not common.iterative_k_core(users, items, 3).any()


# --------------------------------------------------------------------------------------------
# MovieLens-100K.

def _age_group(age: int) -> str:
    return "1-24" if age <= 24 else "25-34" if age <= 34 else "35+"


def test_ml100k_domains_labels_and_catalog(converted):
    out, summary = converted("ml100k")
    raw = check_raw_folder(out)
    spec, imps = raw["spec"], raw["impressions"]
    src = DATA / "ml-100k"
    # Independent direct counts on the source.
    with open(src / "ml-100k.inter") as f:
        ratings = [float(line.split("\t")[2]) for line in list(f)[1:] if line.strip()]
    with open(src / "ml-100k.user") as f:
        ages = {line.split("\t")[0]: int(line.split("\t")[1]) for line in list(f)[1:]}
    assert len(imps) == len(ratings) == 100_000
    positives = sum(r >= 4 for r in ratings)
    assert positives == 55_375
    assert summary["positives"] == sum(r["click"] == "1" for r in imps) == positives
    assert spec.label == "click"
    assert set(summary["domains"]) == {"1-24", "25-34", "35+"}
    assert all(r["domain"] == _age_group(ages[r["user_id"]]) for r in imps)
    assert len(raw["users"]) == 943 and len(raw["catalogs"]["item"]) == 1_682
    assert spec.entity_types["item"].fields == {"category": "genre", "brand": "year"}
    assert raw["catalogs"]["item"]["1"] == {"item_id": "1", "genre": "Animation", "year": "1995"}
    assert spec.users.fields == {"age_bucket": "age_group", "gender": "gender",
                                 "occupation": "occupation", "city": "zip_prefix"}
    assert raw["users"]["1"] == {"user_id": "1", "age_group": "1-24", "gender": "M",
                                 "occupation": "technician", "zip_prefix": "857"}
    assert {u["age_group"] for u in raw["users"].values()} == {"1-24", "25-34", "35+"}


def test_ml100k_positives_only(tmp_path, converted):
    _, full = converted("ml100k")
    s = adapters.convert("ml100k", source_dir("ml100k"), str(tmp_path / "raw"),
                         write_negatives=False, zip_prefix_len=2)
    raw = check_raw_folder(str(tmp_path / "raw"))
    assert raw["spec"].label == "impression"
    assert s["impressions"] == len(raw["impressions"]) == full["positives"]
    assert {r["click"] for r in raw["impressions"]} == {"1"}
    assert max(len(u["zip_prefix"]) for u in raw["users"].values()) == 2


# --------------------------------------------------------------------------------------------
# Douban sample: three entity types.

def _douban_source():
    with open(DATA / "douban-sample" / "douban_sample.csv", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_douban_entity_types(converted):
    out, summary = converted("douban")
    raw = check_raw_folder(out)
    spec, imps = raw["spec"], raw["impressions"]
    source = _douban_source()
    per_type = Counter(r["domain"] for r in source)
    assert set(spec.entity_types) == set(per_type) == {"book", "music", "movie"}
    assert Counter(r["entity_type"] for r in imps) == per_type == summary["impressions_per_type"]
    for type_name in per_type:
        ids = {r["item_id"] for r in source if r["domain"] == type_name}
        assert set(raw["catalogs"][type_name]) == ids
        assert summary["entities"][type_name] == len(ids)
        assert spec.entity_types[type_name].fields == {}
    assert spec.impressions.column("timestamp") is None and "timestamp" not in imps[0]
    assert summary["split"]["kind"] == "random"
    assert spec.label == "click"
    assert sum(r["click"] == "1" for r in imps) == sum(r["rating"] != "0" for r in source)
    assert {r["domain"] for r in imps} == {"douban"}
    expected_city = {r["user_id"]: r["living_place"] for r in source}
    assert {u: p["city"] for u, p in raw["users"].items()} == expected_city
    assert raw["users"]["1691"]["city"] == "北京"


def test_douban_options(tmp_path):
    src = source_dir("douban")
    adapters.convert("douban", src, str(tmp_path / "raw"), domains="type", catalogs=False)
    raw = check_raw_folder(str(tmp_path / "raw"))
    assert all(et.path is None for et in raw["spec"].entity_types.values())
    assert not (tmp_path / "raw" / "catalogs").exists()
    assert all(r["domain"] == r["entity_type"] for r in raw["impressions"])
    with pytest.raises(ValueError, match="domains must be one of"):
        adapters.convert("douban", src, str(tmp_path / "x"), domains="bogus")


def test_douban_odd_bytes(tmp_path):
    """GBK text, a BOM, an undecodable byte, a quoted newline and a blank line."""
    src = tmp_path / "src"
    src.mkdir()
    lines = [
        "\ufeffuser_id,item_id,rating,domain,living_place,join_time,time_bin\n".encode("utf-8"),
        "1,10,1,book,北京,2007-07-10,27\n".encode("utf-8"),
        "2,20,0,Movie,浙江杭州,2008-01-03,33\n".encode("gbk"),  # GBK line in a UTF-8 file
        b"3,30,1,music,\xff\xfe\xfa,2009-05-04,49\n",  # undecodable → replacement chars
        b"\n",
        '4,40,1,music,"香港\nKowloon",2009-05-04,49\n'.encode("utf-8"),
    ]
    (src / "douban_sample.csv").write_bytes(b"".join(lines))
    s = adapters.convert("douban", str(src), str(tmp_path / "raw"))
    raw = check_raw_folder(str(tmp_path / "raw"))
    assert s["impressions"] == 4 and s["positives"] == 3
    assert s["decode_fallback_lines"] == 1 and s["decode_replaced_lines"] == 1
    users = raw["users"]
    assert users["1"]["city"] == "北京" and users["2"]["city"] == "浙江杭州"
    assert users["4"]["city"] == "香港 Kowloon"  # one line per record
    assert "\ufffd" in users["3"]["city"]
    assert s["impressions_per_type"] == {"book": 1, "movie": 1, "music": 2}
