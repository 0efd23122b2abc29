"""Synthetic raw logs with planted multi-domain, multi-entity structure (the embedded default).

``generate(SyntheticConfig(...), out_dir)`` writes the layout of
:meth:`tfrrl.data.link_spec.DatasetSpec.synthetic_default` (CSV with header lines, UTF-8)::

    impressions/part-00000.csv …   user_id,entity_id,entity_type,domain,timestamp,click
    catalogs/item.csv               entity_id,category,brand,shop,price
    catalogs/shop.csv               entity_id,main_category,shop_level
    catalogs/video.csv              entity_id,linked_item,author,duration
    catalogs/live.csv               entity_id,linked_item,host,start_time
    users.csv                       user_id,age_bucket,gender,city_tier
    link_spec.yaml                  DatasetSpec.synthetic_default().to_yaml()
    oracle/params.npz, meta.json    the TRUE generating parameters (see tfrrl.data.oracle)

Generative model
----------------
Notation: d = ``latent_dim``, K = ``num_domains``, T = ``temperature``, N(0, s²/d·I) a
d-dimensional Gaussian of norm ≈ s, "zipf(α)" the weights ``(1 + rank)^-α`` over a random
permutation.

Entities (types item ≫ shop, video > live, like the RRL paper's Table II)::

    μ_c   = unit random vector                         category centre, c = 1..C
    ω_c   ~ zipf(0.7)                                  category sizes
    μ_b   = μ_{c(b)} + N(0, 0.6²/d)                    brand centre, every brand in one category
    x_i   = μ_{b(i)} + N(0, 0.4²/d)                    item i, c(i) ~ ω, b(i) ~ U(brands of c(i))
    x_s   = μ_{c(s)} + N(0, 0.5²/d)                    shop s (main category c(s) ~ ω)
    x_v   = x_{item(v)} + N(0, 0.3²/d)                 video / live stream, linked to an item
    pop_e ~ zipf(popularity_exponent) within its type, Σ_{e of type t} pop_e = 1

An item's shop is a shop of the item's category (85 %) or any shop; shop_level follows the
shop's popularity; price depends on category and brand.

Users and domains::

    u     = mean_{c ∈ fav(u)} μ_c + 0.35·(g_age + g_gender) + N(0, 0.4²/d)   shared interest
    v_uk  = u + γ·A_k u + γ·μ_{θ_k} + N(0, σ_η²/d)        user vector in domain k
            (A_k ∈ R^{d×d}, entries N(0, 1/d): domain-specific linear shift; θ_k: the domain's
            theme category; γ = ``domain_shift``; σ_η = ``domain_noise``, per user and domain)
    w_k   ∝ (k+1)^-domain_size_exponent                domain sizes
    active(u) ∋ k with prob. 0.3 + 0.65·w_k / max w    (at least one domain per user)
    a_u   ~ LogNormal(0, user_activity_sigma²)         user activity
    π_uk  ∝ w_k · LogNormal(0, 0.5²) on active(u)      the user's domain preference
    m_k   ∝ type_mix · J_k,  J_kt ~ LogNormal(0, type_mix_jitter²) for the non-item types,
            rescaled so that Σ_k w_k J_kt = 1 (J_k,item = 1): entity-type mix of domain k

Each impression draws (u, k) ∝ a_u·π_uk, a type t ~ m_k, then an entity of type t from a
NESTED softmax over the tree category → [brand →] entity of that type (brand level for items
only; a node's popularity is the sum of its leaves'; Δ = node vector − parent node vector)::

    P(node | parent, u, k) = softmax_{siblings}( <v_uk, Δ_node> / T + log pop_node )
    log P(e | u, k) = log m_k[t] + Σ_{levels} log P(node | parent, u, k)

Along a path the Δ's telescope, so the numerators sum to <v_uk, x_e>/T + log pop_e: a flat
softmax "<user, entity>/T + log popularity" with level-wise normalisers. That is exactly what
:class:`tfrrl.data.oracle.OracleScorer` computes; the tree makes exact sampling cost
O(C + brands per category + items per brand) per row instead of O(#entities).

Clicks: ``click ~ Bernoulli(sigmoid(b + β·<v_uk, x_e>/T))`` with β = click_scale / std of the
affinity and b calibrated on a pilot sample so that the click rate ≈ ``click_rate``.

Time: rows are generated in chunks of ``chunk_rows`` (each with its own RNG stream
``[seed, 1, chunk]``, so the content does not depend on ``shard_rows``). Chunk j covers the j-th
consecutive slice of ``[start_time, start_time + time_span)``; its timestamps are sorted uniform
draws in that slice (redrawn for a row that would exactly duplicate another row). Impressions are i.i.d. given the parameters (stationary), so every user's
impressions are spread over the whole span and a time split is meaningful. Shards cover
consecutive time ranges, timestamps are non-decreasing across the concatenation of the shards.

Memory: parameters are O((users·K + entities)·d); impressions are streamed chunk by chunk,
never held in full.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import sys
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from tfrrl.data import link_spec

logger = logging.getLogger(__name__)

ENTITY_TYPES: Tuple[str, ...] = ("item", "shop", "video", "live")
ID_PREFIX = {"item": "i", "shop": "s", "video": "v", "live": "l"}
IMPRESSION_HEADER = "user_id,entity_id,entity_type,domain,timestamp,click"
CATALOG_HEADERS = {
    "item": "entity_id,category,brand,shop,price",
    "shop": "entity_id,main_category,shop_level",
    "video": "entity_id,linked_item,author,duration",
    "live": "entity_id,linked_item,host,start_time",
}
USERS_HEADER = "user_id,age_bucket,gender,city_tier"
AGE_BUCKETS = ("18-24", "25-29", "30-34", "35-44", "45-54", "55+")
AGE_PROBS = (0.18, 0.22, 0.2, 0.2, 0.12, 0.08)
GENDERS = ("F", "M", "U")
GENDER_PROBS = (0.48, 0.47, 0.05)
CITY_TIERS = ("1", "2", "3", "4", "5")
CITY_PROBS = (0.15, 0.25, 0.25, 0.2, 0.15)
ORACLE_DIR = "oracle"
PARAMS_FILE = "params.npz"
META_FILE = "meta.json"
FORMAT_VERSION = 1
_DAY = 86_400


# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class SyntheticConfig:
    """Sizes and knobs of the generator. ``None`` fields are derived from ``impressions``."""

    impressions: int = 200_000
    users: Optional[int] = None  # default: max(200, impressions // 40)
    num_domains: int = 4
    latent_dim: int = 16
    # Entity counts; default: total = ``entities`` or max(1000, impressions // 40), split
    # 90 / 4 / 4 / 2 % (a type's own count overrides its share).
    entities: Optional[int] = None
    items: Optional[int] = None
    shops: Optional[int] = None
    videos: Optional[int] = None
    lives: Optional[int] = None
    categories: int = 50
    brands: Optional[int] = None  # default: max(2 * categories, items // 50)
    popularity_exponent: float = 0.8  # zipf exponent of entity popularity within a type
    domain_shift: float = 0.5  # γ: scale of the domain-specific shift of user vectors
    seed: int = 0
    start_time: int = 1_700_000_000  # unix seconds of the first impression
    time_span_days: float = 30.0
    click_rate: float = 0.05
    shard_rows: int = 1_000_000
    # -- finer knobs ----------------------------------------------------------------------------
    temperature: float = 0.2
    type_mix: Tuple[float, float, float, float] = (0.90, 0.04, 0.04, 0.02)  # item/shop/video/live
    type_mix_jitter: float = 0.5
    domain_size_exponent: float = 0.8
    domain_noise: float = 0.2  # σ_η: per-user-per-domain noise of user vectors
    user_activity_sigma: float = 1.0
    click_scale: float = 1.0
    chunk_rows: int = 50_000  # rows per generation chunk (bounded memory, own RNG stream)

    def resolved(self) -> "SyntheticConfig":
        """A copy with every derived field filled in (and validated)."""
        if self.impressions < 1:
            raise ValueError("impressions must be >= 1")
        if self.entities is not None and self.entities < 4:
            raise ValueError("entities must be >= 4 (one per entity type)")
        total = self.entities if self.entities is not None else max(1000, self.impressions // 40)
        items = self.items if self.items is not None else int(round(0.90 * total))
        shops = self.shops if self.shops is not None else max(10, int(round(0.04 * total)))
        videos = self.videos if self.videos is not None else max(10, int(round(0.04 * total)))
        lives = self.lives if self.lives is not None else max(5, int(round(0.02 * total)))
        cfg = dataclasses.replace(
            self,
            users=self.users if self.users is not None else max(200, self.impressions // 40),
            items=items, shops=shops, videos=videos, lives=lives,
            brands=(self.brands if self.brands is not None
                    else max(2 * self.categories, items // 50)),
            type_mix=tuple(float(x) for x in self.type_mix),
        )
        checks = {
            "users": cfg.users >= 1, "num_domains": cfg.num_domains >= 1,
            "latent_dim": cfg.latent_dim >= 1, "items": cfg.items >= 1, "shops": cfg.shops >= 1,
            "videos": cfg.videos >= 1, "lives": cfg.lives >= 1, "categories": cfg.categories >= 1,
            "brands": cfg.brands >= 1, "shard_rows": cfg.shard_rows >= 1,
            "chunk_rows": cfg.chunk_rows >= 1, "temperature": cfg.temperature > 0,
            "time_span_days": cfg.time_span_days > 0, "click_rate": 0 < cfg.click_rate < 1,
            "type_mix": len(cfg.type_mix) == 4 and min(cfg.type_mix) >= 0
            and sum(cfg.type_mix) > 0 and cfg.type_mix[0] > 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid SyntheticConfig fields: {bad}")
        return cfg

    @property
    def time_span_seconds(self) -> int:
        return max(1, int(round(self.time_span_days * _DAY)))


# ---------------------------------------------------------------------------------------------
def _inverse_cdf(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per row of ``logits`` (modified in place)."""
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    np.cumsum(logits, axis=1, out=logits)
    u = rng.random(logits.shape[0]) * logits[:, -1]
    idx = (logits < u[:, None].astype(logits.dtype)).sum(axis=1)
    return np.minimum(idx, logits.shape[1] - 1)


class EntityTree:
    """Nested softmax over the entities of one type (shared by the generator and the oracle).

    Level j has M_j nodes; ``offsets[j]`` (M_{j-1} + 1 values, M_{-1} = 1 for the root) gives
    the contiguous children range of every parent, ``parent[j]`` the parent of every node,
    ``delta[j]`` the node's vector minus its parent's, ``logpop[j]`` the log of the summed
    popularity of its leaves. The last level holds the leaves; ``leaf_entity`` maps a leaf to
    the entity's index in its catalog.
    """

    def __init__(self, delta: List[np.ndarray], logpop: List[np.ndarray],
                 offsets: List[np.ndarray], parent: List[np.ndarray], leaf_entity: np.ndarray):
        self.delta = [np.ascontiguousarray(x, dtype=np.float32) for x in delta]
        self.logpop = [np.asarray(x, dtype=np.float32) for x in logpop]
        self.offsets = [np.asarray(x, dtype=np.int64) for x in offsets]
        self.parent = [np.asarray(x, dtype=np.int64) for x in parent]
        self.leaf_entity = np.asarray(leaf_entity, dtype=np.int64)
        self.num_entities = int(self.leaf_entity.shape[0])

    @classmethod
    def build(cls, level_ids: Sequence[np.ndarray], node_vectors: Sequence[np.ndarray],
              leaf_vectors: np.ndarray, popularity: np.ndarray) -> "EntityTree":
        """``level_ids[j][e]``: id (row of ``node_vectors[j]``) of entity e's level-j node."""
        n = len(popularity)
        keys = [np.asarray(k, dtype=np.int64) for k in level_ids]
        order = np.lexsort(tuple([np.arange(n)] + keys[::-1])) if keys else np.arange(n)
        pop = np.asarray(popularity, dtype=np.float64)[order]
        sorted_keys = [k[order] for k in keys]
        delta, logpop, offsets, parent = [], [], [], []
        prev_node_of_leaf = np.zeros(n, dtype=np.int64)  # root
        prev_vec = np.zeros((1, leaf_vectors.shape[1]), dtype=np.float64)
        n_prev = 1
        changed = np.zeros(max(n - 1, 0), dtype=bool)
        for j in range(len(keys) + 1):
            if j < len(keys):
                changed |= sorted_keys[j][1:] != sorted_keys[j][:-1]
                starts = np.concatenate([[0], np.flatnonzero(changed) + 1]).astype(np.int64)
                node_of_leaf = np.cumsum(np.concatenate([[False], changed])).astype(np.int64)
                vec = np.asarray(node_vectors[j], dtype=np.float64)[sorted_keys[j][starts]]
            else:
                starts = np.arange(n, dtype=np.int64)
                node_of_leaf = starts
                vec = np.asarray(leaf_vectors, dtype=np.float64)[order]
            par = prev_node_of_leaf[starts]
            delta.append(vec - prev_vec[par])
            logpop.append(np.log(np.add.reduceat(pop, starts)))
            offsets.append(np.searchsorted(par, np.arange(n_prev + 1)).astype(np.int64))
            parent.append(par)
            prev_node_of_leaf, prev_vec, n_prev = node_of_leaf, vec, len(starts)
        return cls(delta, logpop, offsets, parent, order)

    # -- (de)serialisation ---------------------------------------------------------------------
    def to_arrays(self, prefix: str) -> Dict[str, np.ndarray]:
        out = {f"{prefix}leaf_entity": self.leaf_entity,
               f"{prefix}levels": np.asarray(len(self.delta), dtype=np.int64)}
        for j in range(len(self.delta)):
            out[f"{prefix}l{j}_delta"] = self.delta[j]
            out[f"{prefix}l{j}_logpop"] = self.logpop[j]
            out[f"{prefix}l{j}_offsets"] = self.offsets[j]
            out[f"{prefix}l{j}_parent"] = self.parent[j]
        return out

    @classmethod
    def from_arrays(cls, arrays, prefix: str) -> "EntityTree":
        levels = int(arrays[f"{prefix}levels"])
        get = lambda name: [arrays[f"{prefix}l{j}_{name}"] for j in range(levels)]  # noqa: E731
        return cls(get("delta"), get("logpop"), get("offsets"), get("parent"),
                   arrays[f"{prefix}leaf_entity"])

    # -- sampling and scoring ------------------------------------------------------------------
    def sample(self, V: np.ndarray, rng: np.random.Generator, temperature: float) -> np.ndarray:
        """One entity index (catalog order) per row of user vectors ``V`` [n, d]."""
        n = V.shape[0]
        V = np.asarray(V, dtype=np.float32) / np.float32(temperature)
        node = np.zeros(n, dtype=np.int64)
        for j in range(len(self.delta)):
            offsets, delta, logpop = self.offsets[j], self.delta[j], self.logpop[j]
            if len(offsets) == 2:  # one parent (the root): a single group
                groups: Iterator = iter([(0, slice(None))])
            else:
                order = np.argsort(node, kind="stable")
                sorted_node = node[order]
                cuts = np.flatnonzero(sorted_node[1:] != sorted_node[:-1]) + 1
                bounds = np.concatenate([[0], cuts, [n]])
                groups = ((int(sorted_node[a]), order[a:b])
                          for a, b in zip(bounds[:-1], bounds[1:]))
            child = np.empty(n, dtype=np.int64)
            for p, rows in groups:
                s, e = int(offsets[p]), int(offsets[p + 1])
                if e - s == 1:
                    child[rows] = s
                    continue
                logits = V[rows] @ delta[s:e].T
                logits += logpop[s:e]
                child[rows] = s + _inverse_cdf(logits, rng)
            node = child
        return self.leaf_entity[node]

    def log_prob(self, V: np.ndarray, temperature: float) -> np.ndarray:
        """log P(entity | user vector) [n, num_entities] (catalog order), rows sum to 1 in prob."""
        V = np.asarray(V, dtype=np.float32) / np.float32(temperature)
        acc = np.zeros((V.shape[0], 1), dtype=np.float32)
        for j in range(len(self.delta)):
            logits = V @ self.delta[j].T
            logits += self.logpop[j]
            par, starts = self.parent[j], self.offsets[j][:-1]
            mx = np.maximum.reduceat(logits, starts, axis=1)
            z = np.exp(logits - mx[:, par])
            lse = np.log(np.add.reduceat(z, starts, axis=1)) + mx
            acc = logits - lse[:, par] + acc[:, par]
        out = np.empty_like(acc)
        out[:, self.leaf_entity] = acc
        return out


# ---------------------------------------------------------------------------------------------
def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _noise(rng: np.random.Generator, n: int, d: int, scale: float) -> np.ndarray:
    return rng.standard_normal((n, d)) * (scale / math.sqrt(d))


def _zipf_weights(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    w = (1.0 + rng.permutation(n)) ** (-exponent)
    return w / w.sum()


def _pick_within(rng: np.random.Generator, group: np.ndarray, members_group: np.ndarray,
                 n_groups: int) -> np.ndarray:
    """For each value g of ``group``, a uniform member index among those with members_group == g
    (-1 where the group has no member)."""
    order = np.argsort(members_group, kind="stable")
    counts = np.bincount(members_group, minlength=n_groups)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    c = counts[group]
    r = np.floor(rng.random(len(group)) * np.maximum(c, 1)).astype(np.int64)
    out = np.where(c > 0, order[np.minimum(first[group] + r, len(order) - 1)], -1)
    return out


@dataclasses.dataclass
class _Model:
    """Every parameter of the generative process (see the module docstring)."""

    cfg: SyntheticConfig
    arrays: Dict[str, np.ndarray]  # everything stored in oracle/params.npz
    trees: List[EntityTree]
    type_vectors: List[np.ndarray]  # x_e per type, catalog order (float32)
    user_domain_vectors: np.ndarray  # [U, K, d] float32
    pair_user: np.ndarray
    pair_domain: np.ndarray
    pair_cdf: np.ndarray
    mix_cdf: np.ndarray  # [K, 4]
    catalog_rows: Dict[str, List[str]]
    user_rows: List[str]
    click_bias: float = 0.0
    click_slope: float = 0.0


def _build_model(cfg: SyntheticConfig) -> _Model:
    rng = np.random.default_rng([cfg.seed, 0])
    d, C, K = cfg.latent_dim, cfg.categories, cfg.num_domains
    n_items, n_shops, n_videos, n_lives = cfg.items, cfg.shops, cfg.videos, cfg.lives
    B, U = cfg.brands, cfg.users

    # Categories and brands.
    cat_centers = _unit(rng, C, d)
    cat_weights = _zipf_weights(rng, C, 0.7)
    brand_cat = np.concatenate([np.arange(min(B, C)),
                                rng.choice(C, size=max(B - C, 0), p=cat_weights)]).astype(np.int64)
    brand_centers = cat_centers[brand_cat] + _noise(rng, B, d, 0.6)
    cat_price = np.exp(rng.normal(math.log(30.0), 0.8, C))
    brand_price = np.exp(rng.normal(0.0, 0.3, B))

    # Items.
    item_cat = rng.choice(C, size=n_items, p=cat_weights).astype(np.int64)
    item_brand = _pick_within(rng, item_cat, brand_cat, C)
    orphan = item_brand < 0  # category without brands (only when brands < categories)
    if orphan.any():
        item_brand[orphan] = rng.integers(0, B, int(orphan.sum()))
        item_cat[orphan] = brand_cat[item_brand[orphan]]
    item_vec = brand_centers[item_brand] + _noise(rng, n_items, d, 0.4)
    item_pop = _zipf_weights(rng, n_items, cfg.popularity_exponent)
    price = np.maximum(0.01, np.round(
        cat_price[item_cat] * brand_price[item_brand] * np.exp(rng.normal(0, 0.4, n_items)), 2))

    # Shops.
    shop_cat = rng.choice(C, size=n_shops, p=cat_weights).astype(np.int64)
    shop_vec = cat_centers[shop_cat] + _noise(rng, n_shops, d, 0.5)
    shop_pop = _zipf_weights(rng, n_shops, cfg.popularity_exponent)
    level_score = np.log(shop_pop) + rng.normal(0, 0.5, n_shops)
    quintiles = np.quantile(level_score, [0.2, 0.4, 0.6, 0.8])
    shop_level = 1 + np.searchsorted(quintiles, level_score, side="right")
    item_shop = _pick_within(rng, item_cat, shop_cat, C)
    anywhere = (item_shop < 0) | (rng.random(n_items) >= 0.85)
    item_shop[anywhere] = rng.integers(0, n_shops, int(anywhere.sum()))

    # Videos and live streams (linked to items, popular items more often).
    link_p = np.sqrt(item_pop) / np.sqrt(item_pop).sum()
    video_item = rng.choice(n_items, size=n_videos, p=link_p)
    video_vec = item_vec[video_item] + _noise(rng, n_videos, d, 0.3)
    video_pop = _zipf_weights(rng, n_videos, cfg.popularity_exponent)
    video_author = rng.integers(0, max(1, n_videos // 3), n_videos)
    video_duration = np.round(np.exp(rng.normal(math.log(30.0), 0.6, n_videos)), 1)
    live_item = rng.choice(n_items, size=n_lives, p=link_p)
    live_vec = item_vec[live_item] + _noise(rng, n_lives, d, 0.3)
    live_pop = _zipf_weights(rng, n_lives, cfg.popularity_exponent)
    live_host = rng.integers(0, max(1, n_lives // 2), n_lives)
    live_start = (cfg.start_time - 7 * _DAY
                  + rng.integers(0, cfg.time_span_seconds + 7 * _DAY, n_lives)).astype(np.int64)

    # Users.
    age = rng.choice(len(AGE_BUCKETS), size=U, p=AGE_PROBS)
    gender = rng.choice(len(GENDERS), size=U, p=GENDER_PROBS)
    city = rng.choice(len(CITY_TIERS), size=U, p=CITY_PROBS)
    age_vec = _noise(rng, len(AGE_BUCKETS), d, 1.0)
    gender_vec = _noise(rng, len(GENDERS), d, 1.0)
    n_fav = 1 + np.minimum(2, rng.poisson(0.8, U))
    favs = rng.choice(C, size=(U, 3), p=cat_weights)
    fav_mask = np.arange(3)[None, :] < n_fav[:, None]
    interest = (cat_centers[favs] * fav_mask[:, :, None]).sum(1) / n_fav[:, None]
    user_base = interest + 0.35 * (age_vec[age] + gender_vec[gender]) + _noise(rng, U, d, 0.4)
    activity = np.exp(rng.normal(0.0, cfg.user_activity_sigma, U))

    # Domains.
    dom_w = (1.0 + np.arange(K)) ** (-cfg.domain_size_exponent)
    dom_w /= dom_w.sum()
    member_p = 0.3 + 0.65 * dom_w / dom_w.max()
    active = rng.random((U, K)) < member_p[None, :]
    none = ~active.any(axis=1)
    active[np.flatnonzero(none), rng.choice(K, size=int(none.sum()), p=dom_w)] = True
    pref = dom_w[None, :] * np.exp(rng.normal(0.0, 0.5, (U, K))) * active
    pref /= pref.sum(axis=1, keepdims=True)
    shift_mat = rng.standard_normal((K, d, d)) / math.sqrt(d)
    theme = rng.choice(C, size=K, p=cat_weights)
    shift_vec = cfg.domain_shift * cat_centers[theme]
    udv = np.empty((U, K, d), dtype=np.float32)
    for k in range(K):
        udv[:, k] = (user_base + cfg.domain_shift * (user_base @ shift_mat[k].T) + shift_vec[k]
                     + _noise(rng, U, d, cfg.domain_noise))
    base_mix = np.asarray(cfg.type_mix, dtype=np.float64)
    jitter = np.exp(rng.normal(0.0, cfg.type_mix_jitter, (K, 4)))
    jitter[:, 0] = 1.0
    jitter[:, 1:] /= dom_w @ jitter[:, 1:]  # overall type shares stay close to type_mix
    mix = base_mix[None, :] * jitter
    mix /= mix.sum(axis=1, keepdims=True)

    joint = activity[:, None] * pref
    pair_user, pair_domain = np.nonzero(joint > 0)
    pair_cdf = np.cumsum(joint[pair_user, pair_domain])

    # Trees (category → brand → item; category → entity for the other types).
    video_cat, live_cat = item_cat[video_item], item_cat[live_item]
    trees = [
        EntityTree.build([item_cat, item_brand], [cat_centers, brand_centers], item_vec, item_pop),
        EntityTree.build([shop_cat], [cat_centers], shop_vec, shop_pop),
        EntityTree.build([video_cat], [cat_centers], video_vec, video_pop),
        EntityTree.build([live_cat], [cat_centers], live_vec, live_pop),
    ]

    def ids(prefix: str, n: int) -> np.ndarray:
        return np.array([f"{prefix}{i}" for i in range(n)])

    item_ids, shop_ids = ids("i", n_items), ids("s", n_shops)
    video_ids, live_ids, user_ids = ids("v", n_videos), ids("l", n_lives), ids("u", U)
    arrays: Dict[str, np.ndarray] = {
        "user_ids": user_ids,
        "user_base": user_base.astype(np.float32),
        "user_domain_vectors": udv,
        "user_activity": activity,
        "user_active_domains": active,
        "user_domain_pref": pref,
        "user_age": age, "user_gender": gender, "user_city": city,
        "domain_names": np.array([f"d{k}" for k in range(K)]),
        "domain_weights": dom_w,
        "domain_shift_matrices": shift_mat,
        "domain_shift_vectors": shift_vec,
        "domain_theme_category": theme,
        "domain_type_mix": mix,
        "entity_types": np.array(ENTITY_TYPES),
        "category_centers": cat_centers,
        "category_weights": cat_weights,
        "brand_centers": brand_centers,
        "brand_category": brand_cat,
    }
    per_type = {
        "item": (item_ids, item_vec, item_pop, item_cat),
        "shop": (shop_ids, shop_vec, shop_pop, shop_cat),
        "video": (video_ids, video_vec, video_pop, video_cat),
        "live": (live_ids, live_vec, live_pop, live_cat),
    }
    for (t, (tid, vec, pop, cat)), tree in zip(per_type.items(), trees):
        arrays[f"{t}__ids"] = tid
        arrays[f"{t}__vectors"] = vec.astype(np.float32)
        arrays[f"{t}__popularity"] = pop
        arrays[f"{t}__category"] = cat
        arrays.update(tree.to_arrays(f"{t}__tree__"))
    arrays["item__brand"] = item_brand
    arrays["item__shop"] = item_shop
    arrays["video__linked_item"] = video_item
    arrays["live__linked_item"] = live_item

    catalog_rows = {
        "item": [f"i{i},c{c},b{b},s{s},{p:.2f}" for i, (c, b, s, p) in
                 enumerate(zip(item_cat.tolist(), item_brand.tolist(), item_shop.tolist(),
                               price.tolist()))],
        "shop": [f"s{i},c{c},{lv}" for i, (c, lv) in
                 enumerate(zip(shop_cat.tolist(), shop_level.tolist()))],
        "video": [f"v{i},i{it},a{a},{du:.1f}" for i, (it, a, du) in
                  enumerate(zip(video_item.tolist(), video_author.tolist(),
                                video_duration.tolist()))],
        "live": [f"l{i},i{it},h{h},{st}" for i, (it, h, st) in
                 enumerate(zip(live_item.tolist(), live_host.tolist(), live_start.tolist()))],
    }
    user_rows = [f"u{i},{AGE_BUCKETS[a]},{GENDERS[g]},{CITY_TIERS[c]}" for i, (a, g, c) in
                 enumerate(zip(age.tolist(), gender.tolist(), city.tolist()))]

    model = _Model(
        cfg=cfg, arrays=arrays, trees=trees,
        type_vectors=[v.astype(np.float32) for v in (item_vec, shop_vec, video_vec, live_vec)],
        user_domain_vectors=udv,
        pair_user=pair_user.astype(np.int64), pair_domain=pair_domain.astype(np.int64),
        pair_cdf=pair_cdf, mix_cdf=np.cumsum(mix, axis=1),
        catalog_rows=catalog_rows, user_rows=user_rows,
    )
    _calibrate_clicks(model)
    return model


def _sample_rows(model: _Model, n: int, rng: np.random.Generator):
    """(user, domain, type, entity index within type, affinity) for n i.i.d. impressions."""
    pair = np.searchsorted(model.pair_cdf, rng.random(n) * model.pair_cdf[-1], side="right")
    pair = np.minimum(pair, len(model.pair_cdf) - 1)
    user, domain = model.pair_user[pair], model.pair_domain[pair]
    etype = (rng.random(n)[:, None] >= model.mix_cdf[domain][:, :-1]).sum(axis=1)
    V = model.user_domain_vectors[user, domain]
    entity = np.zeros(n, dtype=np.int64)
    affinity = np.zeros(n, dtype=np.float32)
    T = model.cfg.temperature
    for t, tree in enumerate(model.trees):
        sel = np.flatnonzero(etype == t)
        if sel.size == 0:
            continue
        ent = tree.sample(V[sel], rng, T)
        entity[sel] = ent
        affinity[sel] = np.einsum("nd,nd->n", V[sel], model.type_vectors[t][ent]) / T
    return user, domain, etype, entity, affinity


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _calibrate_clicks(model: _Model) -> None:
    """β = click_scale / std(affinity); b such that the pilot's mean click prob = click_rate."""
    cfg = model.cfg
    *_, aff = _sample_rows(model, 20_000, np.random.default_rng([cfg.seed, 2]))
    aff = aff.astype(np.float64)
    slope = cfg.click_scale / max(float(aff.std()), 1e-6)
    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _sigmoid(mid + slope * aff).mean() < cfg.click_rate:
            lo = mid
        else:
            hi = mid
    model.click_bias, model.click_slope = 0.5 * (lo + hi), slope


# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _open_write(path: str):
    """Binary writer for a local path or any Beam filesystem (gs://…)."""
    if "://" in path:
        # pylint: disable-next=import-outside-toplevel
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.create(path) as f:
            yield f
    else:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "wb") as f:
            yield f


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/")] + list(parts))


def _write_lines(path: str, header: str, rows: Sequence[str]) -> None:
    with _open_write(path) as f:
        f.write((header + "\n").encode("utf-8"))
        step = 100_000
        for a in range(0, len(rows), step):
            f.write(("\n".join(rows[a:a + step]) + "\n").encode("utf-8"))


def _progress(message: str, verbose: bool) -> None:
    if logger.isEnabledFor(logging.INFO):
        logger.info(message)
    elif verbose:
        print(f"[tfrrl.synthetic {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr,
              flush=True)


def generate(config: Optional[SyntheticConfig] = None, out_dir: str = "raw", *,
             verbose: bool = True) -> Dict[str, Any]:
    """Writes the synthetic raw dataset into ``out_dir`` (see the module docstring).

    Returns a summary (sizes, rows per shard / type / domain, click rate, timings).
    """
    import pyarrow as pa  # pylint: disable=import-outside-toplevel
    import pyarrow.csv as pa_csv  # pylint: disable=import-outside-toplevel

    t0 = time.time()
    cfg = (config or SyntheticConfig()).resolved()
    model = _build_model(cfg)
    t_setup = time.time() - t0
    _progress(f"parameters built in {t_setup:.1f}s: {cfg.users:,} users, {cfg.items:,} items, "
              f"{cfg.shops:,} shops, {cfg.videos:,} videos, {cfg.lives:,} lives, "
              f"{cfg.num_domains} domains", verbose)

    # Catalogs, users, spec, oracle.
    for t in ENTITY_TYPES:
        _write_lines(_join(out_dir, "catalogs", f"{t}.csv"), CATALOG_HEADERS[t],
                     model.catalog_rows[t])
    _write_lines(_join(out_dir, "users.csv"), USERS_HEADER, model.user_rows)
    with _open_write(_join(out_dir, link_spec.SPEC_FILENAME)) as f:
        f.write(link_spec.DatasetSpec.synthetic_default().to_yaml().encode("utf-8"))
    meta = {
        "format_version": FORMAT_VERSION,
        "config": dataclasses.asdict(cfg),
        "temperature": cfg.temperature,
        "entity_types": list(ENTITY_TYPES),
        "domains": [f"d{k}" for k in range(cfg.num_domains)],
        "counts": {"users": cfg.users, "item": cfg.items, "shop": cfg.shops,
                   "video": cfg.videos, "live": cfg.lives},
        "click_bias": model.click_bias,
        "click_slope": model.click_slope,
        "log_prob": "log m_k[t] + sum over tree levels of log softmax_siblings("
                    "<v_uk, delta_node>/T + log pop_node)",
    }
    with _open_write(_join(out_dir, ORACLE_DIR, PARAMS_FILE)) as f:
        np.savez(f, **model.arrays)
    model.catalog_rows.clear()
    model.user_rows.clear()
    with _open_write(_join(out_dir, ORACLE_DIR, META_FILE)) as f:
        f.write(json.dumps(meta, indent=2).encode("utf-8"))

    # Impressions, streamed chunk by chunk into consecutive shards.
    N, S, CH = cfg.impressions, cfg.shard_rows, cfg.chunk_rows
    start, span = cfg.start_time, cfg.time_span_seconds
    user_ids = pa.array(model.arrays["user_ids"].tolist(), type=pa.string())
    entity_ids = pa.array(np.concatenate([model.arrays[f"{t}__ids"] for t in ENTITY_TYPES])
                          .tolist(), type=pa.string())
    type_offset = np.cumsum([0] + [len(model.arrays[f"{t}__ids"]) for t in ENTITY_TYPES])[:-1]
    n_entities = len(entity_ids)
    type_names = pa.array(list(ENTITY_TYPES), type=pa.string())
    domain_names = pa.array(meta["domains"], type=pa.string())
    write_opts = pa_csv.WriteOptions(include_header=False, quoting_style="none")

    n_shards = (N + S - 1) // S
    rows_by_type = np.zeros(len(ENTITY_TYPES), dtype=np.int64)
    rows_by_domain = np.zeros(cfg.num_domains, dtype=np.int64)
    clicks = 0
    shard_rows: List[int] = []
    shard_time: List[Tuple[int, int]] = []
    shard_file = None
    shard_ctx = None
    shard_index = -1

    def open_shard(i: int):
        ctx = _open_write(_join(out_dir, "impressions", f"part-{i:05d}.csv"))
        f = ctx.__enter__()
        f.write((IMPRESSION_HEADER + "\n").encode("utf-8"))
        return ctx, f

    try:
        for c, a in enumerate(range(0, N, CH)):
            b = min(N, a + CH)
            n = b - a
            rng = np.random.default_rng([cfg.seed, 1, c])
            user, domain, etype, entity, aff = _sample_rows(model, n, rng)
            click = (rng.random(n) < _sigmoid(model.click_bias + model.click_slope * aff)
                     ).astype(np.int8)
            lo = start + (span * a) // N
            hi = max(lo + 1, start + (span * b) // N)
            gid = type_offset[etype] + entity
            ts, order = _timestamps(rng, lo, hi, user, gid, domain, click, n_entities,
                                    cfg.num_domains)
            user, domain, etype, gid, click = (x[order] for x in (user, domain, etype, gid,
                                                                  click))
            rows_by_type += np.bincount(etype, minlength=len(ENTITY_TYPES))
            rows_by_domain += np.bincount(domain, minlength=cfg.num_domains)
            clicks += int(click.sum())
            table = pa.table({
                "user_id": user_ids.take(pa.array(user)),
                "entity_id": entity_ids.take(pa.array(gid)),
                "entity_type": type_names.take(pa.array(etype)),
                "domain": domain_names.take(pa.array(domain)),
                "timestamp": pa.array(ts),
                "click": pa.array(click),
            })
            pos = a
            while pos < b:  # split the chunk at shard boundaries
                shard = pos // S
                if shard != shard_index:
                    if shard_ctx is not None:
                        shard_ctx.__exit__(None, None, None)
                        _log_shard(shard_index, n_shards, shard_rows, pos, N, t0, verbose)
                    shard_ctx, shard_file = open_shard(shard)
                    shard_index = shard
                    shard_rows.append(0)
                    shard_time.append((int(ts[pos - a]), int(ts[pos - a])))
                end = min(b, (shard + 1) * S)
                part = table.slice(pos - a, end - pos)
                pa_csv.write_csv(part, shard_file, write_opts)
                shard_rows[-1] += end - pos
                shard_time[-1] = (shard_time[-1][0], int(ts[end - a - 1]))
                pos = end
        if shard_ctx is not None:
            shard_ctx.__exit__(None, None, None)
            shard_ctx = None
            _log_shard(shard_index, n_shards, shard_rows, N, N, t0, verbose)
    finally:
        if shard_ctx is not None:
            shard_ctx.__exit__(*sys.exc_info())

    elapsed = time.time() - t0
    _progress(f"{N:,} impressions in {n_shards} shard(s) written in {elapsed:.1f}s "
              f"({N / max(elapsed, 1e-9):,.0f} rows/s)", verbose)
    return {
        "out_dir": out_dir,
        "impressions": N,
        "shards": n_shards,
        "rows_per_shard": shard_rows,
        "shard_time_ranges": shard_time,
        "users": cfg.users,
        "entities": {t: int(len(model.arrays[f"{t}__ids"])) for t in ENTITY_TYPES},
        "impressions_by_type": {t: int(x) for t, x in zip(ENTITY_TYPES, rows_by_type)},
        "impressions_by_domain": {f"d{k}": int(x) for k, x in enumerate(rows_by_domain)},
        "click_rate": clicks / max(N, 1),
        "start_time": cfg.start_time,
        "end_time": cfg.start_time + cfg.time_span_seconds,
        "seed": cfg.seed,
        "setup_seconds": round(t_setup, 3),
        "seconds": round(elapsed, 3),
    }


def _timestamps(rng: np.random.Generator, lo: int, hi: int, user: np.ndarray, gid: np.ndarray,
                domain: np.ndarray, click: np.ndarray, n_entities: int, n_domains: int
                ) -> Tuple[np.ndarray, np.ndarray]:
    """Uniform timestamps in [lo, hi) for the rows of one chunk, and the row order that sorts
    them (ties broken by the row's content).

    Rows are i.i.d., so which row gets which timestamp is immaterial, but two rows equal in
    every column would be one impression logged twice (the link dead-letters such rows):
    a duplicate's timestamp is redrawn (a few rounds; only impossible when the window has
    fewer seconds than the duplicates need).
    """
    n = len(user)
    code = ((user * n_entities + gid) * n_domains + domain) * 2 + click
    ts = rng.integers(lo, hi, n, dtype=np.int64)
    for attempt in range(16):
        order = np.lexsort((code, ts))
        sts, scode = ts[order], code[order]
        dup = (sts[1:] == sts[:-1]) & (scode[1:] == scode[:-1])
        if attempt == 15 or not dup.any():
            break
        redo = order[1:][dup]
        ts[redo] = rng.integers(lo, hi, len(redo), dtype=np.int64)
    return sts, order


def _log_shard(index: int, n_shards: int, shard_rows: List[int], done: int, total: int,
               t0: float, verbose: bool) -> None:
    elapsed = time.time() - t0
    _progress(f"shard {index + 1}/{n_shards} written ({shard_rows[-1]:,} rows; "
              f"≈{min(done, total):,}/{total:,} impressions, {elapsed:.1f}s)", verbose)
