"""The synthetic raw-log generator (tfrrl.data.synthetic) and its oracle (tfrrl.data.oracle)."""

from __future__ import annotations

import collections
import csv
import dataclasses
import pathlib
import re
import subprocess
import sys
import textwrap
from typing import Dict, List

import numpy as np
import pytest

from tfrrl.data import link_spec, synthetic
from tfrrl.data.oracle import OracleScorer, recall_at_n

N = 10_000
CFG = synthetic.SyntheticConfig(impressions=N, seed=0)
RES = CFG.resolved()

HEADERS = {
    "catalogs/item.csv": ["entity_id", "category", "brand", "shop", "price"],
    "catalogs/shop.csv": ["entity_id", "main_category", "shop_level"],
    "catalogs/video.csv": ["entity_id", "linked_item", "author", "duration"],
    "catalogs/live.csv": ["entity_id", "linked_item", "host", "start_time"],
    "users.csv": ["user_id", "age_bucket", "gender", "city_tier"],
}
IMPRESSION_HEADER = ["user_id", "entity_id", "entity_type", "domain", "timestamp", "click"]


def _read(path: pathlib.Path) -> List[List[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def _files(root: pathlib.Path) -> Dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic") / "raw"
    summary = synthetic.generate(CFG, str(root), verbose=False)
    tables = {name: _read(root / name) for name in HEADERS}
    imp = _read(root / "impressions" / "part-00000.csv")
    return {"root": root, "summary": summary, "tables": tables, "impressions": imp}


def _rows(raw, name):
    return raw["tables"][name][1:]


def _impressions(raw):
    return raw["impressions"][1:]


# ---------------------------------------------------------------------------------------------
def test_layout_and_headers(raw):
    root = raw["root"]
    files = set(_files(root))
    assert files == {"impressions/part-00000.csv", "link_spec.yaml", "oracle/params.npz",
                     "oracle/meta.json", *HEADERS}
    for name, header in HEADERS.items():
        assert raw["tables"][name][0] == header, name
        assert (root / name).read_bytes().startswith((",".join(header) + "\n").encode())
    assert raw["impressions"][0] == IMPRESSION_HEADER
    text = (root / "link_spec.yaml").read_text(encoding="utf-8")
    assert text == link_spec.DatasetSpec.synthetic_default().to_yaml()
    assert link_spec.load(str(root)) == link_spec.DatasetSpec.synthetic_default()


def test_row_counts(raw):
    assert len(_impressions(raw)) == N
    assert raw["summary"]["impressions"] == N
    assert len(_rows(raw, "catalogs/item.csv")) == RES.items
    assert len(_rows(raw, "catalogs/shop.csv")) == RES.shops
    assert len(_rows(raw, "catalogs/video.csv")) == RES.videos
    assert len(_rows(raw, "catalogs/live.csv")) == RES.lives
    assert len(_rows(raw, "users.csv")) == RES.users
    # Defaults: item catalog dominates, the other types are scarce.
    total = RES.items + RES.shops + RES.videos + RES.lives
    assert RES.items / total > 0.85 and RES.lives < RES.shops


def test_value_formats(raw):
    for user, entity, etype, domain, ts, click in _impressions(raw):
        assert re.fullmatch(r"u\d+", user)
        assert re.fullmatch(synthetic.ID_PREFIX[etype] + r"\d+", entity)
        assert re.fullmatch(r"d[0-3]", domain)
        assert RES.start_time <= int(ts) < RES.start_time + RES.time_span_seconds
        assert click in ("0", "1")
    for eid, cat, brand, shop, price in _rows(raw, "catalogs/item.csv"):
        assert re.fullmatch(r"c\d+", cat) and re.fullmatch(r"b\d+", brand)
        assert re.fullmatch(r"\d+\.\d\d", price) and float(price) > 0
    for eid, cat, level in _rows(raw, "catalogs/shop.csv"):
        assert re.fullmatch(r"c\d+", cat) and level in {"1", "2", "3", "4", "5"}
    for eid, item, author, duration in _rows(raw, "catalogs/video.csv"):
        assert re.fullmatch(r"a\d+", author) and float(duration) > 0
    for eid, item, host, start in _rows(raw, "catalogs/live.csv"):
        assert re.fullmatch(r"h\d+", host) and int(start) > 0
    levels = {r[2] for r in _rows(raw, "catalogs/shop.csv")}
    assert len(levels) == 5
    for name in HEADERS:  # ids unique within their table
        ids = [r[0] for r in _rows(raw, name)]
        assert len(set(ids)) == len(ids), name


def test_referential_integrity(raw):
    items = {r[0] for r in _rows(raw, "catalogs/item.csv")}
    shops = {r[0] for r in _rows(raw, "catalogs/shop.csv")}
    catalogs = {
        "item": items, "shop": shops,
        "video": {r[0] for r in _rows(raw, "catalogs/video.csv")},
        "live": {r[0] for r in _rows(raw, "catalogs/live.csv")},
    }
    users = {r[0] for r in _rows(raw, "users.csv")}
    assert all(r[3] in shops for r in _rows(raw, "catalogs/item.csv"))
    assert all(r[1] in items for r in _rows(raw, "catalogs/video.csv"))
    assert all(r[1] in items for r in _rows(raw, "catalogs/live.csv"))
    for user, entity, etype, *_ in _impressions(raw):
        assert entity in catalogs[etype]
        assert user in users


def test_entity_type_shares_are_skewed(raw):
    counts = collections.Counter(r[2] for r in _impressions(raw))
    assert set(counts) == {"item", "shop", "video", "live"}
    assert counts["item"] / N > 0.70
    for t in ("shop", "video", "live"):
        assert 0 < counts[t] / N < 0.15, (t, counts)
    assert raw["summary"]["impressions_by_type"] == dict(counts)


def test_users_in_several_domains_and_domain_sizes_differ(raw):
    domains = collections.defaultdict(set)
    for user, _, _, domain, *_ in _impressions(raw):
        domains[user].add(domain)
    assert np.mean([len(d) for d in domains.values()]) >= 2.0
    sizes = collections.Counter(r[3] for r in _impressions(raw))
    assert len(sizes) == RES.num_domains
    assert max(sizes.values()) >= 1.5 * min(sizes.values())


def test_popularity_skew(raw):
    counts = collections.Counter(r[1] for r in _impressions(raw) if r[2] == "item")
    top = max(1, RES.items // 100)
    share = sum(sorted(counts.values(), reverse=True)[:top]) / sum(counts.values())
    assert share > 0.05, share  # top 1 % of the items get more than 5× their fair share


def test_time_order_and_user_spread(raw):
    ts = np.array([int(r[4]) for r in _impressions(raw)])
    assert np.all(np.diff(ts) >= 0)
    span = RES.time_span_seconds
    assert ts[0] - RES.start_time < 0.01 * span and RES.start_time + span - ts[-1] < 0.01 * span
    by_user = collections.defaultdict(list)
    for r in _impressions(raw):
        by_user[r[0]].append(int(r[4]))
    spreads = [max(t) - min(t) for t in by_user.values() if len(t) >= 20]
    assert spreads and np.median(spreads) > 0.7 * span


def test_no_duplicated_rows(raw):
    rows = [tuple(r) for r in _impressions(raw)]
    assert len(set(rows)) == len(rows)
    # Even when the time window is crowded, equal rows get distinct timestamps.
    rng = np.random.default_rng(0)
    same = np.zeros(60, dtype=np.int64)
    ts, order = synthetic._timestamps(  # pylint: disable=protected-access
        rng, 1000, 1100, same, same, same, same.astype(np.int8), 10, 4)
    assert len(set(ts.tolist())) == 60 and np.all(np.diff(ts) >= 0)
    assert sorted(order.tolist()) == list(range(60))


def test_clicks_follow_affinity(raw):
    oracle = OracleScorer.load(str(raw["root"]))
    with np.load(raw["root"] / "oracle" / "params.npz") as npz:
        vectors = {t: npz[f"{t}__vectors"] for t in synthetic.ENTITY_TYPES}
    aff, click = [], []
    for user, entity, etype, domain, _, c in _impressions(raw):
        v = oracle.user_vectors([user], domain)[0]
        aff.append(float(v @ vectors[etype][int(entity[1:])]))
        click.append(c == "1")
    aff, click = np.array(aff), np.array(click)
    assert 0.02 < click.mean() < 0.1
    assert aff[click].mean() > aff[~click].mean() + 0.2 * aff.std()


# ---------------------------------------------------------------------------------------------
def test_deterministic_given_seed(raw, tmp_path):
    again = tmp_path / "again"
    synthetic.generate(CFG, str(again), verbose=False)
    assert _files(again) == _files(raw["root"])
    other = tmp_path / "other"
    synthetic.generate(dataclasses.replace(CFG, seed=CFG.seed + 1), str(other), verbose=False)
    a, b = _files(other), _files(raw["root"])
    assert a.keys() == b.keys()
    for name in ("impressions/part-00000.csv", "catalogs/item.csv", "users.csv",
                 "oracle/params.npz"):
        assert a[name] != b[name], name


def test_shards(raw, tmp_path):
    out = tmp_path / "sharded"
    summary = synthetic.generate(dataclasses.replace(CFG, shard_rows=3_000), str(out),
                                 verbose=False)
    shards = sorted((out / "impressions").glob("*.csv"))
    assert [p.name for p in shards] == [f"part-{i:05d}.csv" for i in range(4)]
    rows = []
    for p in shards:
        table = _read(p)
        assert table[0] == IMPRESSION_HEADER
        rows += table[1:]
    assert [len(_read(p)) - 1 for p in shards] == [3000, 3000, 3000, 1000]
    assert summary["rows_per_shard"] == [3000, 3000, 3000, 1000]
    assert len(rows) == N
    ts = [int(r[4]) for r in rows]
    assert all(a <= b for a, b in zip(ts, ts[1:]))
    # Chunks carry their own RNG streams: the content does not depend on the sharding.
    assert rows == _impressions(raw)


def test_config_defaults_and_validation():
    cfg = synthetic.SyntheticConfig().resolved()
    assert cfg.users == 5_000 and cfg.items > 20 * cfg.lives
    assert synthetic.SyntheticConfig(impressions=100).resolved().users == 200
    with pytest.raises(ValueError):
        synthetic.SyntheticConfig(impressions=0).resolved()
    with pytest.raises(ValueError):
        synthetic.SyntheticConfig(shard_rows=0).resolved()


def test_entities_sets_the_catalog_size():
    # 1,000,000 entities split 90 / 4 / 4 / 2 %: 900,000 items, 40,000 shops and videos,
    # 20,000 live streams, independent of the impressions (default would be 1000 here).
    cfg = synthetic.SyntheticConfig(impressions=5_000, entities=1_000_000).resolved()
    assert (cfg.items, cfg.shops, cfg.videos, cfg.lives) == (900_000, 40_000, 40_000, 20_000)
    with pytest.raises(ValueError):
        synthetic.SyntheticConfig(entities=3).resolved()


# ---------------------------------------------------------------------------------------------
def test_oracle_scores_are_log_probabilities(raw):
    oracle = OracleScorer.load(str(raw["root"]))
    keys = oracle.entity_keys()
    expected = []
    for t in synthetic.ENTITY_TYPES:
        expected += [link_spec.entity_key(t, r[0]) for r in _rows(raw, f"catalogs/{t}.csv")]
    assert keys == expected
    users = ["u0", "u1", f"u{RES.users - 1}"]
    for domain in ("d0", "d3"):
        s = oracle.scores(users, domain)
        assert s.shape == (3, len(keys)) and s.dtype == np.float32
        np.testing.assert_allclose(np.exp(s.astype(np.float64)).sum(axis=1), 1.0, rtol=1e-4)
    assert not np.allclose(oracle.scores(users, "d0"), oracle.scores(users, "d1"))
    with pytest.raises(KeyError):
        oracle.scores(["nobody"], "d0")


def test_sampler_draws_from_the_oracle_distribution():
    """The tree sampler is exact: its histogram is as close to exp(log_prob) as an exact
    multinomial draw of the same size."""
    cfg = RES
    model = synthetic._build_model(cfg)  # pylint: disable=protected-access
    V = model.user_domain_vectors[[3], 1]
    n = 100_000
    for t, tree in enumerate(model.trees):
        p = np.exp(tree.log_prob(V, cfg.temperature)[0].astype(np.float64))
        p /= p.sum()
        draws = tree.sample(np.repeat(V, n, axis=0), np.random.default_rng(7), cfg.temperature)
        tv = 0.5 * np.abs(np.bincount(draws, minlength=len(p)) / n - p).sum()
        ref = 0.5 * np.abs(np.random.default_rng(8).multinomial(n, p) / n - p).sum()
        assert tv < 1.5 * ref + 0.003, (synthetic.ENTITY_TYPES[t], tv, ref)


def test_oracle_recall_beats_random(raw):
    rows = _impressions(raw)
    cut = np.quantile([int(r[4]) for r in rows], 0.9)
    truth = collections.defaultdict(set)
    for user, entity, etype, domain, ts, _ in rows:
        if int(ts) >= cut:
            truth[(user, domain)].add(link_spec.entity_key(etype, entity))
    oracle = OracleScorer.load(str(raw["root"]))
    best = oracle.recall_at_n(truth, 50)
    rng = np.random.default_rng(0)
    rand = recall_at_n(lambda users, d: rng.random((len(users), oracle.num_entities)),
                       oracle.entity_keys(), truth, 50)
    assert abs(rand - 50 / oracle.num_entities) < 0.03, rand
    assert best > 0.4 and best > 5 * rand, (best, rand)
    by_domain = oracle.recall_at_n_by_domain(truth, 50)
    assert set(by_domain) == {"d0", "d1", "d2", "d3"}
    assert all(v > 3 * rand for v in by_domain.values())
    assert oracle.recall_at_n(truth, oracle.num_entities) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
_PEAK_RSS = textwrap.dedent("""
    import sys, tempfile
    from tfrrl.data import synthetic
    cfg = synthetic.SyntheticConfig(impressions=int(sys.argv[1]), users=20_000, items=20_000,
                                    shops=1_000, videos=1_000, lives=500, shard_rows=500_000)
    with tempfile.TemporaryDirectory() as d:
        synthetic.generate(cfg, d, verbose=False)
    # VmHWM belongs to this process image; ru_maxrss would keep the high-water mark of the
    # (large, TensorFlow-loaded) pytest parent across fork + exec.
    print(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")))  # KiB
""")


@pytest.mark.slow
def test_memory_is_bounded_in_the_number_of_impressions():
    """Same users / catalogs, 10× the impressions: the peak RSS barely moves (streaming)."""
    repo = pathlib.Path(__file__).resolve().parents[1]

    def peak_mib(n: int) -> float:
        out = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(n)], cwd=repo, check=True,
                             capture_output=True, text=True).stdout
        return int(out.split()[-1]) / 1024

    small, big = peak_mib(200_000), peak_mib(2_000_000)
    assert big < small + 64, (small, big)
    assert big < 400, big
