"""Shared fixtures: hand-built raw folders and small prepared datasets (built once per session)."""

from __future__ import annotations

import csv
import os
import pathlib
import threading
from typing import Callable, Dict, Iterable, List, Sequence

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
# In-process runner for small tests: the CLI tests exercise the default local runner.
IN_MEMORY = ["--direct_running_mode=in_memory"]


def write_csv(path: pathlib.Path, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


IMPRESSION_HEADER = ["user_id", "entity_id", "entity_type", "domain", "timestamp", "click"]


def write_hand_built_raw(root: pathlib.Path, impressions: List[List]) -> pathlib.Path:
    """A tiny raw folder in the synthetic layout (DatasetSpec.synthetic_default()).

    Catalogs: items i1 (c1, b1, shop s1, 10.5), i2 (c2, b2, s1, 3.0), i3 (c3, b3, s2, 7.0);
    shops s1 (c1, level 3), s2 (c2, level 1); video v1 → i2 (author a1); live l1 → i1 (host h1),
    l2 → i9 (a product missing from the item catalog). Users u1, u2, u3.
    """
    write_csv(root / "catalogs/item.csv", ["entity_id", "category", "brand", "shop", "price"],
              [["i1", "c1", "b1", "s1", "10.5"], ["i2", "c2", "b2", "s1", "3"],
               ["i3", "c3", "b3", "s2", "7.0"]])
    write_csv(root / "catalogs/shop.csv", ["entity_id", "main_category", "shop_level"],
              [["s1", "c1", "3"], ["s2", "c2", "1"]])
    write_csv(root / "catalogs/video.csv", ["entity_id", "linked_item", "author", "duration"],
              [["v1", "i2", "a1", "30"]])
    write_csv(root / "catalogs/live.csv", ["entity_id", "linked_item", "host", "start_time"],
              [["l1", "i1", "h1", "100"], ["l2", "i9", "h2", "100"]])
    write_csv(root / "users.csv", ["user_id", "age_bucket", "gender", "city_tier"],
              [["u1", "18-24", "F", "1"], ["u2", "25-34", "M", "2"], ["u3", "35+", "F", "1"]])
    write_csv(root / "impressions/part-0.csv", IMPRESSION_HEADER, impressions)
    return root


# Untimed rows in the hand-built layout (the timestamp column is present but unmapped): 3 users
# on distinct (entity, domain) pairs, so every row is one exposure.
UNTIMED_ROWS = [
    ["u1", "i1", "item", "d0", "0", "1"], ["u1", "i2", "item", "d0", "0", "1"],
    ["u1", "i3", "item", "d1", "0", "1"], ["u1", "l1", "live", "d1", "0", "1"],
    ["u1", "s1", "shop", "d0", "0", "1"], ["u1", "v1", "video", "d1", "0", "1"],
    ["u2", "i1", "item", "d1", "0", "1"], ["u2", "i2", "item", "d1", "0", "1"],
    ["u2", "i3", "item", "d0", "0", "1"], ["u2", "s2", "shop", "d0", "0", "1"],
    ["u3", "i1", "item", "d0", "0", "1"], ["u3", "i2", "item", "d0", "0", "1"],
    ["u3", "l2", "live", "d1", "0", "1"], ["u3", "s1", "shop", "d1", "0", "1"],
    ["u3", "v1", "video", "d0", "0", "1"],
]


def write_untimed_raw(root: pathlib.Path) -> pathlib.Path:
    """:data:`UNTIMED_ROWS` in the hand-built raw folder, with ``timestamp: null``."""
    from tfrrl.data import link_spec

    write_hand_built_raw(root, UNTIMED_ROWS)
    spec = link_spec.DatasetSpec.synthetic_default()
    spec.impressions.columns = dict(spec.impressions.columns, timestamp=None)
    (root / link_spec.SPEC_FILENAME).write_text(spec.validate().to_yaml(), encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def hand_built_prepared(tmp_path_factory) -> Dict:
    """The hand-built raw rows through the Beam link (in-memory runner), shared by tests."""
    from beam_pipelines.run import PrepareConfig, run

    root = tmp_path_factory.mktemp("hand_raw")
    rows = [
        ["u1", "i1", "item", "d0", "100", "1"],
        ["u1", "l1", "live", "d1", "200", "1"],
        ["u1", "s1", "shop", "d0", "200", "1"],   # same timestamp as l1: not in each other's seq
        ["u1", "v1", "video", "d1", "300", "1"],
        ["u1", "i1", "item", "d0", "400", "1"],
        ["u2", "i2", "item", "d0", "150", "1"],
        ["u2", "i1", "item", "d0", "250", "1"],
        ["u2", "i3", "item", "d1", "260", "1"],   # i3 occurs once: rare → OOV at min_frequency 2
        ["u3", "i1", "item", "d0", "120", "1"],
        ["u3", "l2", "live", "d0", "130", "1"],
        ["u3", "i2", "item", "d1", "500", "1"],
    ]
    write_hand_built_raw(root, rows)
    out = tmp_path_factory.mktemp("hand_prepared") / "data"
    cfg = PrepareConfig(sequence_length=3, min_frequency=2, cutoff_timestamp=400)
    result = run(str(root), str(out), cfg, beam_args=IN_MEMORY)
    return {"raw": root, "out": out, "result": result, "rows": rows}


def run_concurrently(worker: Callable[[int], None], count: int, timeout: float) -> None:
    """Runs ``worker(0) … worker(count - 1)`` in threads at once and joins each within
    ``timeout`` seconds; a worker reports its problems through lists the caller asserts on."""
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)


def read_records_of(path: pathlib.Path) -> List[Dict]:
    """Decodes the TFRecords of one file with the schema's decoder, in file order."""
    import tensorflow as tf

    from tfrrl.data import schema

    return [schema.decode(raw) for raw in tf.data.TFRecordDataset(str(path)).as_numpy_iterator()]


def read_records(folder: pathlib.Path) -> List[Dict]:
    """Decodes every TFRecord of a folder with the schema's decoder."""
    return [r for path in sorted(folder.glob("*.tfrecord")) for r in read_records_of(path)]


@pytest.fixture(scope="session")
def small_synthetic_prepared(tmp_path_factory) -> pathlib.Path:
    """20k synthetic impressions through the Beam link (in-memory runner), built once."""
    from beam_pipelines.run import PrepareConfig, run
    from tfrrl.data import synthetic

    root = tmp_path_factory.mktemp("small_synthetic")
    synthetic.generate(synthetic.SyntheticConfig(impressions=20_000, seed=0), str(root / "raw"),
                       verbose=False)
    run(str(root / "raw"), str(root / "data"), PrepareConfig(sequence_length=10),
        beam_args=IN_MEMORY)
    return root / "data"


# A model small enough to train in seconds on 2 cores.
TINY_MODEL = ["model.embedding_dim=8", "model.representation_dim=8",
              "model.ad_network_units=[16]", "model.transformer_ff_dim=16",
              "model.expert_units=[32,16]", "model.tower_units=[16]",
              "model.rrl.projection_dim=8", "model.rrl.dal_units=16",
              "model.rrl.critic_units=[16,8,1]", "train.batch_size=32",
              "train.num_negatives=32"]
RRL_ON = ["model.rrl.dal=true", "model.rrl.mvwdl=true", "model.rrl.orthogonality=true",
          "model.rrl.uwl=true"]


@pytest.fixture(scope="session")
def tiny_indexed_export(small_synthetic_prepared, tmp_path_factory) -> Dict:
    """A tiny Backbone model with spread-out random weights (no accidental score ties), exported
    (tfrrl/export/saved_model.py) and indexed (tfrrl_serving/indexing/) once per session, for serving tests.

    Returns ``{"data", "lookup", "model", "base", "version_dir", "data_dir"}``; ``base`` is the
    export dir (``<base>/tfrrl/1`` + ``<base>/tfrrl/index-1``)."""
    import numpy as np
    import tensorflow as tf

    from tfrrl import export

    from tfrrl_serving.indexing.build import build_indexes
    from tfrrl import config
    from tfrrl.data.reader import FeatureLookup, PreparedDataset
    from tfrrl.training import trainer

    data = PreparedDataset(str(small_synthetic_prepared))
    lookup = FeatureLookup.from_dataset(data)
    tf.keras.utils.set_random_seed(5)
    model = trainer.build_model(config.load_experiment(None, TINY_MODEL), data, lookup)
    rng = np.random.default_rng(0)
    for v in model.weights:
        if v.dtype == "float32":
            v.assign(rng.normal(0.0, 0.3, v.shape).astype("float32"))
    base = tmp_path_factory.mktemp("tiny_export")
    version_dir = export.export_backbone(model, lookup, str(base))
    build_indexes(str(base), str(small_synthetic_prepared), M=8, ef_construction=64,
                  num_threads=1)
    return {"data": data, "lookup": lookup, "model": model, "base": str(base),
            "version_dir": version_dir, "data_dir": str(small_synthetic_prepared)}


@pytest.fixture(scope="session")
def hand_built_evaluation(hand_built_prepared) -> Dict:
    """The hand-built prepared dataset, its evaluation queries and an untrained tiny model (built
    with seed 0), for the tests of tfrrl/evaluation/.

    Returns ``{"data", "lookup", "model", "queries"}``."""
    import tensorflow as tf

    from tfrrl import config
    from tfrrl.data.reader import FeatureLookup, PreparedDataset
    from tfrrl.evaluation.queries import build_queries
    from tfrrl.training import trainer

    data = PreparedDataset(str(hand_built_prepared["out"]))
    lookup = FeatureLookup.from_dataset(data)
    tf.keras.utils.set_random_seed(0)
    exp = config.load_experiment(None, ["model.expert_units=[16,8]", "model.tower_units=[8]",
                                        "train.batch_size=4", "train.num_negatives=4"])
    model = trainer.build_model(exp, data, lookup)
    return {"data": data, "lookup": lookup, "model": model,
            "queries": build_queries(data, lookup)}
