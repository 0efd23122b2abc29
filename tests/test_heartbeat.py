"""Progress lines while the link runs (beam_pipelines/heartbeat.py) and the live tally of the
link's counters they read (beam_pipelines/counters.py ``live_tally``)."""

from __future__ import annotations

import threading

import pytest

from beam_pipelines import counters, heartbeat, runner
from tests.conftest import IN_MEMORY, write_hand_built_raw

TALLY = {"impressions/rows_read": 400_000, "catalog:item/rows_read": 900_000,
         "catalog:shop/rows_read": 100_000, "impressions/dead/bad_timestamp": 7,
         "catalog:item/dead/missing_id": 5, "impressions/written/train": 0}


def test_rows_read_by_source_sums_the_catalogs_and_keeps_the_order():
    read = heartbeat.rows_read_by_source(
        {"catalog:live/rows_read": 2, "users/rows_read": 3, "catalog:item/rows_read": 10,
         "impressions/rows_read": 4, "impressions/written/train": 99, "users/dead/x": 1})
    assert list(read.items()) == [("impressions", 4), ("users", 3), ("catalog", 12)]


def test_the_line_of_the_worked_example():
    # 400,000 + 900,000 + 100,000 = 1,400,000 rows in 240 s: 5,833.3 rows/s; dead 7 + 5 = 12.
    assert heartbeat.heartbeat_line(240.0, TALLY) == (
        "prepare: running 4:00; rows read 1,400,000 (impressions 400,000, catalog 1,000,000; "
        "5,833 rows/s); examples written 0; dead-lettered 12")


def test_examples_written_sum_over_the_splits():
    line = heartbeat.heartbeat_line(10.0, {"impressions/rows_read": 30,
                                           "impressions/written/train": 20,
                                           "impressions/written/eval": 5})
    assert line.endswith("rows read 30 (impressions 30; 3 rows/s); examples written 25; "
                         "dead-lettered 0")


@pytest.mark.parametrize("tally, ending", [
    (None, "the rows are counted by the runner's workers: counts come at the end"),
    ({}, "no row read yet"),
    ({"impressions/written/train": 3}, "no row read yet"),
])
def test_the_line_without_rows(tally, ending):
    assert heartbeat.heartbeat_line(75.0, tally) == f"prepare: running 1:15; {ending}"


def test_tally_since_keeps_only_what_changed():
    assert heartbeat.tally_since({"a": 2, "b": 5}, {"a": 2, "b": 9, "c": 1}) == {"b": 4, "c": 1}


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_the_prepare_heartbeat_counts_the_rows_of_its_own_run_only():
    clock, tally = _Clock(), {"impressions/rows_read": 50}  # 50 rows of an earlier run
    lines, wrote = [], threading.Event()

    def say(line):
        lines.append(line)
        wrote.set()

    with heartbeat.prepare_heartbeat(say, interval=0.05, clock=clock,
                                     tally=lambda: dict(tally)) as beat:
        clock.now += 120.0
        tally["impressions/rows_read"] = 650
        assert beat.current_line() == (
            "prepare: running 2:00; rows read 600 (impressions 600; 5 rows/s); "
            "examples written 0; dead-lettered 0")
        assert wrote.wait(5.0)
    assert lines and lines[-1] == beat.current_line() and beat.lines == len(lines)


def test_without_visible_counts_the_line_gives_the_time_only():
    clock = _Clock()
    beat = heartbeat.prepare_heartbeat(print, clock=clock, counts_visible=False,
                                       tally=lambda: {"impressions/rows_read": 9})
    clock.now += 61.0
    assert beat.current_line() == ("prepare: running 1:01; the rows are counted by the "
                                   "runner's workers: counts come at the end")


def test_counter_increments_reach_the_live_tally():
    before = counters.live_tally().get("test/heartbeat", 0)
    c = counters.counter("test/heartbeat")
    c.inc()
    c.inc(4)
    assert counters.live_tally()["test/heartbeat"] - before == 5


@pytest.mark.parametrize("beam_args, visible", [
    ([], True), (IN_MEMORY, True),
    (["--direct_running_mode=multi_processing"], False),
    (["--direct_num_workers=2"], False),
    (["--runner=DataflowRunner"], False),
])
def test_workers_in_this_process(beam_args, visible):
    assert runner.workers_in_this_process(beam_args) is visible


def test_prepare_writes_heartbeats_that_count_the_rows_beam_counts(tmp_path, capsys):
    """A real run of the link with a heartbeat every 0.2 s: the live tally over the run equals
    Beam's own counters (the accounting), and each line counts at most the rows read in all."""
    from beam_pipelines.run import run_prepare

    rows = [["u1", "i1", "item", "d0", "100", "1"], ["u2", "i2", "item", "d1", "150", "1"],
            ["u1", "i3", "item", "d0", "250", "1"], ["u3", "bad", "item", "d0", "x", "1"]]
    raw = write_hand_built_raw(tmp_path / "raw", rows)
    before = counters.live_tally()
    result = run_prepare(str(raw), str(tmp_path / "out"), beam_args=IN_MEMORY,
                         heartbeat_interval=0.2)
    during = heartbeat.tally_since(before, counters.live_tally())
    acc = result["accounting"]
    assert during["impressions/rows_read"] == acc["impressions"]["rows_read"] == 4
    assert during["users/rows_read"] == 3
    assert heartbeat.rows_read_by_source(during)["catalog"] == 3 + 2 + 1 + 2  # item shop video live
    lines = [line for line in capsys.readouterr().out.splitlines() if "prepare: running" in line]
    assert lines, "a run of several seconds writes heartbeats every 0.2 s"
    for line in lines:
        if "rows read" in line:
            read = int(line.split("rows read ")[1].split(" ")[0].replace(",", ""))
            assert 0 < read <= 4 + 3 + 8
