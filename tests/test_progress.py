"""Progress reports (tfrrl/progress.py) and where the library uses them: the training callback
(tfrrl/training/callbacks.py ``TrainingProgress``) and the queries-scored hook of the exhaustive
top-N (tfrrl/evaluation/topn.py). A fake clock drives every time-dependent figure."""

from __future__ import annotations

import io
import time

import numpy as np

from tfrrl.progress import Heartbeat, Progress, Steps, format_duration, format_value


class FakeClock:
    def __init__(self, start: float = 100.0):
        self.now = start

    def __call__(self) -> float:
        return self.now


def _log_progress(total=300, interval=30.0, **kwargs):
    clock, out = FakeClock(), io.StringIO()
    progress = Progress("train", total, "steps", stream=out, terminal=False, interval=interval,
                        clock=clock, wall=lambda: "12:00:00", **kwargs)
    return progress, clock, out


def test_format_duration_and_value():
    assert format_duration(75) == "1:15"
    assert format_duration(3725) == "1:02:05"  # 1 h 2 min 5 s
    assert format_duration(0) == "0:00"
    assert format_duration(float("nan")) == "?" and format_duration(-1) == "?"
    assert format_value(7.48437) == "7.4844"
    assert format_value(0.0000123) == "1.230e-05"
    assert format_value(0) == "0.0000"


def test_log_file_gets_a_line_per_interval_with_rate_loss_and_eta():
    progress, clock, out = _log_progress()
    clock.now += 10
    progress.advance(40, loss=7.5)  # 10 s < 30 s: nothing yet
    assert out.getvalue() == ""
    clock.now += 20  # t = 30 s, 120 steps done
    progress.update(120, loss=7.25)
    # 120 steps in 30 s = 4.0 steps/s; 180 left → 45 s = 0:45.
    assert out.getvalue() == ("[tfrrl 12:00:00] train: 120/300 steps (40%), 4.0 steps/s, "
                              "loss 7.2500, ETA 0:45\n")
    clock.now += 29  # 29 s after the last line: still nothing
    progress.update(200)
    assert out.getvalue().count("\n") == 1
    clock.now += 1  # t = 60 s: the second line, 200 steps at 200/60 = 3.3 steps/s
    progress.update(210)
    # 210 / 60 = 3.5 steps/s; 90 left → 25.7 s → 0:26.
    assert out.getvalue().splitlines()[1].endswith("210/300 steps (70%), 3.5 steps/s, "
                                                   "loss 7.2500, ETA 0:26")
    clock.now += 30  # t = 90 s
    progress.update(300)
    progress.close()
    # The summary: 300 steps in 1:30 + a periodic line at t = 90 before it.
    assert out.getvalue().splitlines()[-1] == ("[tfrrl 12:00:00] train: done, 300 steps in 1:30 "
                                               "(3.3 steps/s), loss 7.2500")
    assert progress.lines_written == 4


def test_a_resumed_count_measures_its_rate_from_its_own_start():
    progress, clock, out = _log_progress(total=1000, start=400)
    clock.now += 30
    progress.update(460)
    # 60 steps in 30 s since the resume = 2.0 steps/s; 540 left → 270 s = 4:30.
    assert "460/1,000 steps (46%), 2.0 steps/s, ETA 4:30" in out.getvalue()


def test_slow_units_show_the_time_each_takes():
    clock, out = FakeClock(), io.StringIO()
    runs = Progress("runs", 24, "runs", stream=out, terminal=False, interval=0.0, clock=clock,
                    wall=lambda: "09:00:00", prefix="quality")
    clock.now += 930
    runs.advance(3)
    # 3 runs in 930 s = 310 s each = 5:10; 21 left → 6510 s = 1:48:30.
    assert out.getvalue() == "[quality 09:00:00] runs: 3/24 runs (12%), 5:10 each, ETA 1:48:30\n"


def test_terminal_bar_is_redrawn_in_place_and_ends_with_a_newline():
    clock, out = FakeClock(), io.StringIO()
    progress = Progress("scoring", 10, "queries", stream=out, terminal=True, redraw=0.2,
                        clock=clock)
    clock.now += 1
    progress.update(5)
    first = out.getvalue()
    # 5 of 10 → 10 of the 20 bar cells; 5 queries/s; 5 left → 0:01.
    assert first.startswith("\rscoring [##########··········] 5/10 queries 50% · 5.0 queries/s")
    assert first.endswith("ETA 0:01") and "\n" not in first
    clock.now += 0.1  # within the redraw period: no redraw
    progress.update(6)
    assert out.getvalue() == first
    clock.now += 1
    progress.update(10)
    progress.close()
    text = out.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n")  # two redraws + the final state
    assert text.splitlines()[-1].startswith("scoring: done, 10 queries in 0:02")


def test_message_and_pause_do_not_break_the_bar():
    clock, out = FakeClock(), io.StringIO()
    progress = Progress("train", 4, "steps", stream=out, terminal=True, clock=clock)
    clock.now += 1
    progress.update(2)
    drawn = len(out.getvalue()) - 1  # without the leading \r
    progress.message("epoch 1/2: loss 1.0")
    # The bar is wiped (\r, spaces, \r), then the message on its own line.
    assert out.getvalue().endswith("\r" + " " * drawn + "\repoch 1/2: loss 1.0\n")
    clock.now += 1
    progress.update(3)
    progress.pause()
    assert out.getvalue().endswith("\n")
    progress.pause()  # nothing drawn since: no second newline
    assert not out.getvalue().endswith("\n\n")


def test_an_error_inside_the_context_claims_no_done():
    progress, clock, out = _log_progress()
    try:
        with progress:
            clock.now += 5
            progress.update(10)
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert "done" not in out.getvalue()


def test_activity_and_heartbeat_keep_a_log_alive_while_no_unit_ends():
    out = io.StringIO()
    progress = Progress("train", 10, "steps", stream=out, terminal=False, interval=0.05,
                        heartbeat=True, wall=lambda: "10:00:00")
    progress.set_activity("first step (tracing the model)")
    time.sleep(0.5)  # no update at all: the heartbeat writes the lines (every 0.05 s)
    progress.close(summary=False)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 2
    assert lines[0] == ("[tfrrl 10:00:00] train: 0/10 steps (0%), ? steps/s, first step "
                        "(tracing the model)")
    written = len(out.getvalue())
    time.sleep(0.2)
    assert len(out.getvalue()) == written  # closed: the heartbeat has stopped
    assert progress._heartbeat is not None and not progress._heartbeat.is_alive()


def test_steps_number_each_step_with_the_elapsed_time():
    clock, said = FakeClock(), []
    steps = Steps("export", 3, said.append, clock=clock)
    steps("rebuilding the model")
    clock.now += 8
    steps("tracing")
    clock.now += 65
    steps("writing")
    assert said == ["export [1/3] rebuilding the model", "export [2/3] tracing (0:08 elapsed)",
                    "export [3/3] writing (1:13 elapsed)"]
    Steps("export", 1, None)("silent")  # no reporter: nothing happens


def test_training_progress_counts_steps_over_epochs_and_prints_each_epoch():
    from tfrrl.training.callbacks import TrainingProgress

    clock, out = FakeClock(), io.StringIO()
    callback = TrainingProgress(total_steps=6, epochs=2, stream=out, terminal=False,
                                interval=30.0, heartbeat=False, clock=clock,
                                wall=lambda: "10:00:00")
    assert callback.progress.activity == TrainingProgress.STARTING
    callback.on_epoch_begin(0)
    for batch in range(3):
        clock.now += 10
        callback.on_train_batch_end(batch, {"loss": 2.0 - batch * 0.5})
    callback.on_test_begin()
    callback.on_test_batch_end(0)
    assert callback.progress.activity == "validating: 1 batches"
    callback.on_test_end()
    callback.on_epoch_end(0, {"loss": 1.5, "ce_loss": 1.25, "val_loss": 1.75,
                              "uwl_weight_dal_shared": 0.5})
    callback.on_epoch_begin(1)
    for batch in range(3):
        clock.now += 10
        callback.on_train_batch_end(batch, {"loss": 1.0})
    callback.on_epoch_end(1, {"loss": 1.0})
    callback.close()
    lines = out.getvalue().splitlines()
    # t = 30 s: 3 steps, 0.1 steps/s → 10 s each; 3 left → 0:30; the last loss 1.0.
    assert lines[0] == ("[tfrrl 10:00:00] train: 3/6 steps (50%), 10.0 s each, loss 1.0000, "
                        "ETA 0:30")
    # Epoch 1 took 30 s; only the configured losses and their val_ twins are listed.
    assert lines[1] == ("[tfrrl 10:00:00] epoch 1/2 (0:30): loss 1.5000, ce_loss 1.2500, "
                        "val_loss 1.7500")
    # The epoch line at t = 30 s restarted the interval: the next periodic line is at t = 60 s
    # (step 6), not at t = 40 s.
    assert lines[2] == ("[tfrrl 10:00:00] train: 6/6 steps (100%), 10.0 s each, loss 1.0000, "
                        "ETA 0:00")
    assert lines[3] == "[tfrrl 10:00:00] epoch 2/2 (0:30): loss 1.0000"
    assert lines[4] == "[tfrrl 10:00:00] train: done, 6 steps in 1:00 (10.0 s each), loss 1.0000"
    assert len(lines) == 5


def test_training_progress_says_when_early_stopping_will_end_the_run_and_counts_eta_to_it():
    import types

    from tfrrl.training.callbacks import RunEarlyStopping, TrainingProgress

    stopping = RunEarlyStopping("val_ce_loss", patience=2)
    stopping.set_model(types.SimpleNamespace(stop_training=False))
    clock, out = FakeClock(), io.StringIO()
    callback = TrainingProgress(total_steps=20, epochs=10, stream=out, terminal=False,
                                interval=1e9, heartbeat=False, clock=clock,
                                wall=lambda: "10:00:00", early_stopping=stopping)
    stopping.on_train_begin()
    callback.resume_from(0)
    for epoch, val in enumerate([3.0, 2.9, 2.95, 2.97]):
        callback.on_epoch_begin(epoch)
        for batch in range(2):  # 2 steps per epoch, 10 s each
            clock.now += 10
            callback.on_train_batch_end(batch, {"loss": 1.0})
        logs = {"loss": 1.0, "val_ce_loss": val}
        stopping.on_epoch_end(epoch, logs)  # before the progress, as in the trainer
        callback.on_epoch_end(epoch, logs)
        if epoch == 2:
            # Best 2.9 at epoch 2, patience 2 → the run ends after epoch 4 unless it improves:
            # 8 steps, 6 done at 0.1 steps/s → 20 s, not the 140 s to the 10-epoch cap.
            assert callback.progress.eta() == 20.0
            assert callback.progress.status_text().endswith(
                "ETA 0:20 to epoch 4 (early stopping)")
    lines = [line.split("] ", 1)[1] for line in out.getvalue().splitlines()]
    # Epoch 1: best 3.0 (epoch 1) → last epoch 1 + 2 = 3; epoch 2 improves → 4; epoch 3 does
    # not → still 4; epoch 4 is that last epoch: Keras stops, nothing more to announce.
    head = "epoch {}/10 (0:20): loss 1.0000, val_ce_loss {}; best val_ce_loss {} (epoch {})"
    until = ": stops after epoch {} unless it improves"
    assert lines == [head.format(1, "3.0000", "3.0000", 1) + until.format(3),
                     head.format(2, "2.9000", "2.9000", 2) + until.format(4),
                     head.format(3, "2.9500", "2.9000", 2) + until.format(4),
                     head.format(4, "2.9700", "2.9000", 2)]
    assert stopping.model.stop_training


def test_topn_reports_the_queries_scored_after_each_chunk():
    from tfrrl.evaluation.topn import topn_indices

    scores = np.arange(5 * 7, dtype=np.float32).reshape(5, 7)
    seen = []
    top = topn_indices(lambda q0, q1, c0, c1: scores[q0:q1, c0:c1], 5, 7, 2, query_chunk=2,
                       corpus_chunk=3, on_queries_scored=seen.append)
    assert seen == [2, 4, 5]  # chunks [0, 2), [2, 4), [4, 5)
    assert top.tolist() == [[6, 5]] * 5  # higher corpus index scores higher in every row


def test_a_heartbeat_writes_its_line_while_the_block_runs():
    clock, lines = FakeClock(), []
    beat = Heartbeat(lines.append, lambda elapsed: f"build: {format_duration(elapsed)} so far",
                     interval=0.02, clock=clock)
    with beat:
        clock.now += 90.0
        deadline = time.monotonic() + 5.0
        while not lines and time.monotonic() < deadline:
            time.sleep(0.01)
    assert lines and set(lines) == {"build: 1:30 so far"} and beat.lines == len(lines)
    count = len(lines)
    time.sleep(0.1)
    assert len(lines) == count  # nothing after the block


def test_a_block_shorter_than_the_interval_writes_nothing():
    lines = []
    with Heartbeat(lines.append, str, interval=60.0):
        time.sleep(0.05)
    assert lines == []


def test_a_heartbeat_needs_a_positive_interval():
    import pytest

    with pytest.raises(ValueError, match="interval must be > 0"):
        Heartbeat(print, str, interval=0)
