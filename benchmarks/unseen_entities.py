"""What the entities without TRAIN rows are worth on a protocol whose corpus was built from every
row (docs/evaluation.md, "The corpus of the entities with TRAIN rows").

A ranker that knew which entities will be interacted with could lift them; on a corpus built
from TRAIN and eval rows together, "no TRAIN row" says exactly that. This script measures the
size of that leak for a trained run, and is NOT a method of the package: it reads the TEST
split, chooses nothing and feeds nothing back.

(a) For every warm query it scores the whole corpus with the run's model, then replaces the
score of each entity of the query's domain without TRAIN rows by the p-th percentile of the
scores of the domain's entities with TRAIN rows (p = 50 gives them a typical score, p = 99
puts them near the top), and prints macro Recall-all@N for each p beside the model as it is,
plus the share of the warm ground truth held by such entities.

(b) The same k-core leaks through the entities WITH TRAIN rows: one with c < k TRAIN rows has
at least k − c eval rows. On the corpus of the entities with TRAIN rows
(tfrrl/evaluation/seen_corpus.py) it prints recent popularity in domain (window ``--window``)
beside the same ranking with the domain's entities of 1 … k − 1 TRAIN rows moved first (order
kept), and the share of the warm ground truth (seen corpus) such entities hold.

    python -m benchmarks.unseen_entities --run RUN [--data DATA] [--percentiles 50,90,99]
        [--core 5] [--window 0.2]
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

NS = (50, 100, 200)


def entity_domains(rows, corpus_size: int) -> np.ndarray:
    """object [corpus]: the domain of each entity's first TRAIN row (None without rows)."""
    domain = np.full(corpus_size, None, dtype=object)
    first = np.unique(rows.entity, return_index=True)[1]
    domain[rows.entity[first]] = rows.domain[first]
    return domain


def impute(scores: np.ndarray, query_domains: np.ndarray, entity_domain: np.ndarray,
           seen: np.ndarray, category: np.ndarray, percentile: float) -> np.ndarray:
    """``scores`` [Q, corpus] with each unseen entity of a query's domain scored at the
    ``percentile`` of that query's scores of the domain's seen entities. An unseen entity's
    domain is the one of the seen entities sharing its ``category`` (the corpus feature that
    names the domain on Ciao)."""
    out = scores.copy()
    category_domain = {c: d for c, d in zip(category[seen], entity_domain[seen])}
    unseen_domain = np.asarray([category_domain.get(c) for c in category], dtype=object)
    for d in np.unique(query_domains):
        rows = np.flatnonzero(query_domains == d)
        members = np.flatnonzero(seen & (entity_domain == d))
        lifted = np.flatnonzero(~seen & (unseen_domain == d))
        if not len(members) or not len(lifted):
            continue
        value = np.percentile(scores[np.ix_(rows, members)], percentile, axis=1)
        out[np.ix_(rows, lifted)] = value[:, None]
    return out


def low_count_first(rankings: Dict[str, np.ndarray], train_count: np.ndarray, core: int,
                    in_domain: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Each domain's ranking with its entities of 1 … ``core`` − 1 TRAIN rows (all domains) and
    rows in the domain (``in_domain``: domain → per-entity counts) first, each part in its
    order. Worked example: ranking [3, 0, 2, 1], counts [9, 2, 1, 7], in-domain rows for all,
    core 5 → [2, 1, 3, 0]."""
    out = {}
    for d, order in rankings.items():
        low = (train_count >= 1) & (train_count < core) & (in_domain[d] > 0)
        flags = low[order]
        out[d] = np.concatenate([order[flags], order[~flags]])
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a finished training run folder")
    parser.add_argument("--data", help="its prepared data (default: the one it trained on)")
    parser.add_argument("--percentiles", default="50,90,95,99")
    parser.add_argument("--core", type=int, default=5,
                        help="the k of the dataset's k-core (Ciao's protocol: 5)")
    parser.add_argument("--window", type=float, default=0.2,
                        help="recent popularity's window, a fraction of the TRAIN period (the "
                             "one `tfrrl evaluate` chose on Ciao: 0.2)")
    parser.add_argument("--category", default="entity_category",
                        help="the corpus feature whose value names an entity's domain")
    args = parser.parse_args(argv)
    try:
        percentiles = [float(p) for p in args.percentiles.split(",") if p]
    except ValueError:
        parser.error(f"--percentiles takes numbers separated by commas, got {args.percentiles!r}")
    if args.core < 2:
        parser.error(f"--core must be at least 2, got {args.core}")
    if not os.path.isdir(args.run):
        parser.error(f"--run {args.run}: no such folder")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # pylint: disable=import-outside-toplevel
    from tfrrl.data.corpus import load_corpus
    from tfrrl.data.reader import FeatureLookup, PreparedDataset
    from tfrrl.evaluation.prior_shift import full_scores, has_rows, ranked
    from tfrrl.evaluation.queries import build_queries, subset_queries
    from tfrrl.evaluation.recall import recall_report
    from tfrrl.evaluation.references import (domain_counts, read_train_interactions,
                                             recent_popularity_ranking, topn_of_domains)
    from tfrrl.evaluation.seen_corpus import (entities_with_train_rows, needed_width,
                                              restrict_queries, restrict_topn)
    from tfrrl.training.trainer import load_run, run_data_dir

    data = PreparedDataset(run_data_dir(args.run, args.data))
    lookup = FeatureLookup.from_dataset(data)
    corpus = load_corpus(data, lookup)
    if args.category not in corpus:
        parser.error(f"--category {args.category}: the corpus has no such feature "
                     f"({', '.join(sorted(corpus))})")
    rows = read_train_interactions(data, corpus)
    queries = build_queries(data, lookup, corpus=corpus)
    queries = subset_queries(queries, has_rows(rows, queries.user_ids))
    seen = entities_with_train_rows(corpus)
    truth = np.concatenate(queries.ground_truth)
    print(f"{len(queries)} warm queries; {int((~seen).sum()):,} of {len(seen):,} entities have "
          f"no TRAIN row; they hold {np.mean(~seen[truth]):.1%} of the warm ground truth")
    scores = full_scores(load_run(args.run, args.data), queries)
    domain = entity_domains(rows, len(seen))
    category = np.asarray(corpus[args.category]).reshape(-1)

    def macro(s: np.ndarray) -> List[float]:
        report = recall_report(ranked(s, max(NS)), queries, NS)["macro"]
        return [report[f"recall@{n}"] for n in NS]

    table: Dict[str, List[float]] = {"the model as it is": macro(scores)}
    for p in percentiles:
        table[f"entities without TRAIN rows at the domain's p{p:g}"] = macro(
            impute(scores, queries.domains, domain, seen, category, p))
    print_table("(a) warm macro Recall-all@N", table)

    restricted = restrict_queries(queries, seen)
    counts = np.asarray(corpus["train_count"]).reshape(-1)
    seen_truth = np.concatenate(restricted.ground_truth)
    low = (counts >= 1) & (counts < args.core)
    print(f"\n(b) entities with 1 … {args.core - 1} TRAIN rows: {low.mean():.1%} of the corpus, "
          f"{low[seen_truth].mean():.1%} of the warm ground truth on the corpus of the "
          "entities with TRAIN rows")
    recent = recent_popularity_ranking(rows, args.window)
    in_domain = domain_counts(rows.entity, rows.domain, rows.corpus_size)
    width = needed_width(max(NS), seen)
    table = {}
    for name, rankings in ((f"recent popularity (w={args.window:g})", recent),
                           (f"the same, entities of 1 … {args.core - 1} TRAIN rows first",
                            low_count_first(recent, counts, args.core, in_domain))):
        top = restrict_topn(topn_of_domains(rankings, queries.domains, len(seen), width),
                            seen, max(NS))
        report = recall_report(top, restricted, NS)["macro"]
        table[name] = [report[f"recall@{n}"] for n in NS]
    print_table("(b) warm macro Recall-all@N, corpus of the entities with TRAIN rows", table)
    return 0


def print_table(title: str, table: Dict[str, List[float]]) -> None:
    width = max(len(title), max(len(k) for k in table)) + 2
    print(f"{title:<{width}}" + "".join(f"{'@' + str(n):>9}" for n in NS))
    for name, values in table.items():
        print(f"{name:<{width}}" + "".join(f"{v:>9.4f}" for v in values))


if __name__ == "__main__":
    sys.exit(main())
