"""The pipeline's user-feature snapshot (beam_pipelines/transforms.py ``assemble_user``) and the
matching service's SQLite store built from it (tfrrl_serving/user_store.py)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading

import pytest

from tfrrl_serving import user_store
from tests.conftest import run_concurrently
from tfrrl.artifacts import prepared
from tfrrl.data import schema


def snapshot_rows(data_dir):
    """Every snapshot row of a prepared dataset, by user id (read without the store)."""
    rows = {}
    for path in sorted((data_dir / prepared.USER_SNAPSHOT_DIR).glob("*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            rows[row["user_id"]] = row
    return rows


def test_snapshot_is_each_users_profile_and_last_exposures(hand_built_prepared):
    # Hand-built rows (tests/conftest.py), L = 3. u2: i2@150, i1@250, i3@260 → all three, in
    # time order; u3: i1@120, l2@130 (linked to a missing product: category <none>), i2@500.
    # u1 has 5 impressions; the last three are one of {l1, s1} (both @200), v1@300, i1@400.
    # The snapshot is the state at the END of the log: eval impressions (>= cutoff 400) count.
    rows = snapshot_rows(hand_built_prepared["out"])
    assert sorted(rows) == ["u1", "u2", "u3"]
    assert hand_built_prepared["result"]["accounting"]["user_snapshot"] == 3
    u2, u3, u1 = rows["u2"], rows["u3"], rows["u1"]
    assert u2["seq_entity_id"] == ["item:i2", "item:i1", "item:i3"]
    assert u2["seq_category"] == ["c2", "c1", "c3"] and u2["seq_length"] == 3
    assert u3["seq_entity_id"] == ["item:i1", "live:l2", "item:i2"]
    assert u3["seq_entity_type"] == ["item", "live", "item"]
    assert u3["seq_category"] == ["c1", schema.DEFAULT_TOKEN, "c2"]
    assert u1["seq_entity_id"][1:] == ["video:v1", "item:i1"]
    assert u1["seq_entity_id"][0] in ("live:l1", "shop:s1")
    assert u1["seq_category"][1:] == ["c2", "c1"]  # the video inherits its item's category
    # Profiles (users.csv: city_tier → city; no occupation column → the schema default).
    profiles = {uid: {f: row[schema.user_feature_name(f)] for f in schema.USER_FIELDS}
                for uid, row in rows.items()}
    none = schema.DEFAULT_TOKEN
    assert profiles == {
        "u1": {"age_bucket": "18-24", "gender": "F", "city": "1", "occupation": none},
        "u2": {"age_bucket": "25-34", "gender": "M", "city": "2", "occupation": none},
        "u3": {"age_bucket": "35+", "gender": "F", "city": "1", "occupation": none}}


def test_snapshot_pads_a_short_history_to_L(tmp_path):
    """A user with fewer than L exposures: the sequence is padded on the right, like the
    trainer's (schema.pad_sequence); rows are the schema's names only."""
    from beam_pipelines.run import PrepareConfig, run
    from tests.conftest import IN_MEMORY, write_hand_built_raw

    rows = [["u1", "i1", "item", "d0", "100", "1"], ["u1", "i2", "item", "d0", "110", "1"],
            ["u2", "i1", "item", "d0", "120", "1"], ["u2", "v1", "video", "d1", "90", "1"]]
    write_hand_built_raw(tmp_path / "raw", rows)
    run(str(tmp_path / "raw"), str(tmp_path / "data"),
        PrepareConfig(sequence_length=4, min_frequency=1, cutoff_timestamp=115),
        beam_args=IN_MEMORY)
    snap = snapshot_rows(tmp_path / "data")
    assert snap["u1"]["seq_entity_id"] == ["item:i1", "item:i2", "", ""]
    assert snap["u2"]["seq_entity_id"] == ["video:v1", "item:i1", "", ""]  # time order
    assert snap["u2"]["seq_entity_type"] == ["video", "item", "", ""]
    assert snap["u2"]["seq_length"] == 2
    names = {f.name for f in schema.example_features(4)}
    assert set(snap["u1"]) <= names


def test_user_store_round_trip_and_reuse(small_synthetic_prepared, tmp_path):
    path = str(tmp_path / "users.sqlite")
    store = user_store.open_user_store(str(small_synthetic_prepared), path)
    rows = snapshot_rows(small_synthetic_prepared)
    assert len(store) == len(rows) > 100
    assert store.meta["sequence_length"] == 10  # the fixture's PrepareConfig
    for uid in sorted(rows)[:5] + sorted(rows)[-5:]:
        assert store.get(uid) == rows[uid]
    assert store.get("no-such-user") is None
    assert os.listdir(tmp_path) == ["users.sqlite"]  # no temporary file left
    mtime = os.path.getmtime(path)
    again = user_store.open_user_store(str(small_synthetic_prepared), path)
    assert os.path.getmtime(path) == mtime and len(again) == len(store)  # reused, not rebuilt


def _copy_snapshot(src, dst):
    shutil.copytree(src / prepared.USER_SNAPSHOT_DIR, dst / prepared.USER_SNAPSHOT_DIR)
    return sorted((dst / prepared.USER_SNAPSHOT_DIR).glob("*.jsonl"))[0]


def test_store_is_rebuilt_when_the_snapshot_changes_and_a_bad_snapshot_keeps_the_old_one(
        small_synthetic_prepared, tmp_path):
    data = tmp_path / "data"
    shard = _copy_snapshot(small_synthetic_prepared, data)
    path = str(tmp_path / "users.sqlite")
    before = user_store.open_user_store(str(data), path)
    n = len(before)
    new_row = dict(json.loads(shard.read_text().splitlines()[0]), user_id="u-new")
    with open(shard, "a", encoding="utf-8") as f:
        f.write(json.dumps(new_row) + "\n")
    after = user_store.open_user_store(str(data), path)
    assert len(after) == n + 1 and after.get("u-new") == new_row

    # A snapshot row without its exposure sequence fails the build, naming file and line;
    # the store in place is untouched and no temporary file is left behind.
    lines = shard.read_text().splitlines()
    broken = {k: v for k, v in json.loads(lines[0]).items() if k != "seq_category"}
    shard.write_text("\n".join(lines + [json.dumps(broken)]) + "\n")
    with pytest.raises(ValueError, match=rf"{shard.name}:{len(lines) + 1}: .*seq_category"):
        user_store.open_user_store(str(data), path)
    shard.write_text("\n".join(lines + ["{not json"]) + "\n")
    with pytest.raises(ValueError, match="not JSON"):
        user_store.build_user_store(str(data), path)
    assert sorted(os.listdir(tmp_path)) == ["data", "users.sqlite"]
    assert len(user_store.UserStore(path)) == n + 1


def test_missing_snapshot_says_to_prepare_again(tmp_path):
    with pytest.raises(FileNotFoundError, match="no user snapshot"):
        user_store.open_user_store(str(tmp_path), str(tmp_path / "users.sqlite"))
    assert not (tmp_path / "users.sqlite").exists()


def test_one_store_is_shared_by_many_threads(small_synthetic_prepared, tmp_path):
    """The server's thread pool shares one UserStore (a connection per thread): every thread
    reads every user it asks for correctly while the others do the same."""
    store = user_store.open_user_store(str(small_synthetic_prepared),
                                       str(tmp_path / "users.sqlite"))
    rows = snapshot_rows(small_synthetic_prepared)
    uids = sorted(rows)[:200]
    errors, barrier = [], threading.Barrier(8)

    def reader(offset):
        barrier.wait()
        for i in range(len(uids)):
            uid = uids[(i + offset * 25) % len(uids)]
            if store.get(uid) != rows[uid]:
                errors.append(uid)

    run_concurrently(reader, 8, timeout=60)
    assert not errors


def test_a_store_path_with_uri_characters_opens_read_only(small_synthetic_prepared, tmp_path):
    """``#``, ``?`` and ``%`` in the ``--user-store`` path are escaped in the read-only SQLite URI
    (unescaped, ``#`` started the URI's fragment: SQLite opened a truncated path read-write,
    creating a stray empty file, and found no table)."""
    folder = tmp_path / "stores #1 ?a=b %20"
    path = str(folder / "users.sqlite")
    store = user_store.open_user_store(str(small_synthetic_prepared), path)
    uid = store.sample_user_ids(1)[0]
    assert store.get(uid)["user_id"] == uid
    assert sorted(os.listdir(tmp_path)) == ["stores #1 ?a=b %20"]  # no stray file beside it
    assert os.listdir(folder) == ["users.sqlite"]
    assert user_store.read_only_uri(path) == (
        f"file:{tmp_path}/stores%20%231%20%3Fa%3Db%20%2520/users.sqlite?mode=ro")
    with pytest.raises(sqlite3.OperationalError, match="readonly"):  # still read-only
        store._connection().execute("DELETE FROM users")  # pylint: disable=protected-access
