"""Throughput of the Beam link against a single-process baseline of THE SAME transform.

    python -m benchmarks.pipeline_throughput [--impressions 1000000] [--repeats 1]
                                             [--beam-workers N] [--user-shards N [N ...]]
                                             [--beam-arg=--FLAG=V ...] [--reference TREE]
                                             [--skip-baseline]

1. generates ``--impressions`` synthetic impressions (``tfrrl.data.synthetic``, seed 0) in a
   temporary folder (removed at the end unless ``--keep``);
2. runs ``beam_pipelines.run.run`` with its defaults (the local runner in one process, one
   Beam worker) and ``benchmarks.link_baseline.run`` (pyarrow + numpy in one process, one
   core) on it, each in a FRESH Python process (so memory is attributable and neither warms the
   other's caches), alternating the order when repeated; (``--beam-workers N`` adds
   ``--direct_num_workers=N``, which the link runs as N one-worker user-shard pipelines at a
   time; the cores reported for Beam are ``beam_pipelines.runner.local_parallelism`` of its
   flags; ``--beam-arg`` adds any other Beam flag);
3. prints rows/s of each, the cores each used, the ratio
   ``(Beam rows/s ÷ Beam cores) ÷ baseline rows/s`` against the target (≥ 0.5) with PASS/MISS,
   and the peak resident memory of each.

``--reference TREE`` also runs the Beam link of another source tree (e.g. ``git worktree add
/tmp/before <commit>``: today's link) with that tree's defaults, in its own fresh process like
the others, and prints the absolute speed-up of this tree's link against it.

``--user-shards 1 4`` runs the Beam link once per value of ``PrepareConfig.user_shards`` (the
sharded mode of ``beam_pipelines/sharded.py``), each in its own fresh process like the
others, and ends with a side-by-side table of their seconds and peak RSS (the ratio above uses
the first value). ``--skip-baseline`` leaves the baseline out.

Timing: wall-clock of the ``run(...)`` call inside the worker process (module imports excluded
for both; TensorFlow, which the encoder needs, is imported inside ``run`` by the baseline and by
each Beam worker process, so both pay for it). Both encode every record with the same
``schema.encode_example`` / ``schema.encode_entity``: the comparison measures the engine.
``tests/test_link_baseline.py`` checks that both produce the same records.

Memory: the parent samples the worker's whole process tree (the worker and, for Beam, its SDK
worker subprocesses) with psutil every ``--sample-interval`` seconds and reports the peak of the
SUM of their RSS (a sampled peak: a spike shorter than the interval can be missed; RSS counts
shared pages once per process, so the sum slightly over-counts shared libraries). It also
reports ``ru_maxrss`` of the worker's main process (exact) and of its largest waited-for child.
CPU: user+system seconds of the tree (getrusage of the finished worker, which includes children
it waited for; or the sampled per-process CPU when larger), divided by wall time = the cores
actually kept busy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_RATIO = 0.5
ENGINES = ("beam", "baseline")


REFERENCE = "reference"  # the Beam link of another source tree (--reference)


def _run_name(engine: str, user_shards: int = 1) -> str:
    """``beam`` (one pass), ``beam-u4`` (user_shards = 4), ``baseline`` or ``reference``."""
    return (engine if engine in ("baseline", REFERENCE) or user_shards == 1
            else f"{engine}-u{user_shards}")


def _parse_run_name(name: str):
    """``beam-u4`` → ("beam", 4); the inverse of :func:`_run_name`."""
    engine, _, shards = name.partition("-u")
    return engine, int(shards or 1)


# --------------------------------------------------------------------------------------------
# Worker: one engine, one run, in its own process.

def _worker(engine: str, raw: str, out: str, result_path: str, beam_args: List[str],
            user_shards: int = 1) -> None:
    import psutil  # pylint: disable=import-outside-toplevel

    from beam_pipelines import run as link  # pylint: disable=import-outside-toplevel
    from benchmarks import link_baseline  # pylint: disable=import-outside-toplevel
    from tfrrl.artifacts import prepared  # pylint: disable=import-outside-toplevel

    cfg = link.PrepareConfig(user_shards=user_shards)
    rss_before = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    error = None
    try:
        if engine == "beam":
            result = link.run(raw, out, cfg, beam_args=beam_args)
        else:
            result = link_baseline.run(raw, out, cfg)
    except RuntimeError as e:  # run() checks the accounting AFTER the pipeline finished
        if "does not balance" not in str(e):
            raise
        error = str(e)
        result = {
            "accounting": json.loads(open(os.path.join(out, prepared.ACCOUNTING_FILE),
                                          encoding="utf-8").read()),
            "stats": json.loads(open(os.path.join(out, prepared.STATS_FILE),
                                     encoding="utf-8").read()),
            "seconds": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    self_ru = resource.getrusage(resource.RUSAGE_SELF)
    child_ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    imp = result["accounting"]["impressions"]
    stats = result["stats"]
    summary = {
        "engine": engine,
        "user_shards": user_shards,
        "wall_seconds": wall,
        "engine_seconds": result["seconds"],
        "rss_before_run": rss_before,
        "ru_maxrss_self": self_ru.ru_maxrss * 1024,  # Linux: KiB
        "ru_maxrss_children": child_ru.ru_maxrss * 1024,
        "rows_read": imp["rows_read"],
        "train": imp["train"],
        "eval": imp["eval"],
        "dead_letter": imp["dead_letter"],
        "balanced": imp["balanced"],
        "corpus_size": stats["corpus_size"],
        "cutoff": stats["split"].get("cutoff_timestamp"),
        "vocabulary_sizes": stats["vocabulary_sizes"],
    }
    if error is not None:
        # Counters or rows lost? Count what was actually written.
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        summary["error"] = error
        summary["records_written"] = {
            split: sum(1 for path in tf.io.gfile.glob(os.path.join(out, split, "*.tfrecord"))
                       for _ in tf.data.TFRecordDataset(path))
            for split in (prepared.TRAIN_DIR, prepared.EVAL_DIR)}
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump(summary, f)


# --------------------------------------------------------------------------------------------
# Parent: process-tree sampling.

class _TreeSampler(threading.Thread):
    """Peak summed RSS and per-process CPU of a process and its descendants."""

    def __init__(self, pid: int, interval: float):
        super().__init__(daemon=True)
        import psutil  # pylint: disable=import-outside-toplevel

        self._psutil = psutil
        self._root = psutil.Process(pid)
        self._interval = interval
        self._halt = threading.Event()
        self.peak_rss = 0
        self.peak_processes = 0
        self.cpu: Dict[int, float] = {}

    def run(self) -> None:
        ps = self._psutil
        while not self._halt.is_set():
            try:
                procs = [self._root] + self._root.children(recursive=True)
            except ps.Error:
                break
            total = 0
            alive = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                    t = p.cpu_times()
                    self.cpu[p.pid] = max(self.cpu.get(p.pid, 0.0), t.user + t.system)
                    alive += 1
                except ps.Error:
                    pass
            self.peak_rss = max(self.peak_rss, total)
            self.peak_processes = max(self.peak_processes, alive)
            self._halt.wait(self._interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def _run_engine(name: str, raw: str, work: str, interval: float,
                beam_args: List[str], reference: Optional[str] = None) -> Dict[str, Any]:
    """One run (``name``: see :func:`_run_name`) in a fresh worker process, its process tree
    sampled for memory and CPU. ``reference``: the source tree of the ``reference`` run (its
    own Beam link, its own defaults)."""
    engine, user_shards = _parse_run_name(name)
    tree = REPO
    if engine == REFERENCE:
        engine, tree, beam_args = "beam", os.path.abspath(reference), []
    out = os.path.join(work, f"out_{name}")
    result_path = os.path.join(work, f"result_{name}.json")
    log_path = os.path.join(work, f"log_{name}.txt")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([tree] + [p for p in [os.environ.get("PYTHONPATH")]
                                                    if p]))
    import psutil  # pylint: disable=import-outside-toplevel

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_before = _machine_busy_seconds(psutil)
    t_start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.pipeline_throughput", "--_worker", engine,
             "--raw", raw, "--_out", out, "--_result", result_path,
             f"--_user_shards={user_shards}"]
            + [f"--_beam_arg={a}" for a in beam_args],
            cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT)
        sampler = _TreeSampler(proc.pid, interval)
        sampler.start()
        rc = proc.wait()
        sampler.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    machine_busy = _machine_busy_seconds(psutil) - busy_before
    elapsed = time.perf_counter() - t_start
    if rc != 0:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            tail = f.read()[-4000:]
        raise RuntimeError(f"{name} worker failed (exit {rc}):\n{tail}")
    with open(result_path, encoding="utf-8") as f:
        res = json.load(f)
    shutil.rmtree(out, ignore_errors=True)
    cpu_rusage = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cpu_sampled = sum(sampler.cpu.values())
    res.update(peak_tree_rss=sampler.peak_rss, peak_processes=sampler.peak_processes,
               cpu_seconds=max(cpu_rusage, cpu_sampled),
               cpu_source="getrusage" if cpu_rusage >= cpu_sampled else "sampled")
    # Contention: CPU the rest of the machine used meanwhile (other processes), in cores.
    res["other_cores"] = max(0.0, machine_busy - res["cpu_seconds"]) / max(elapsed, 1e-9)
    return res


def _machine_busy_seconds(psutil) -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) \
        - getattr(t, "guest_nice", 0.0)


def _mib(n: float) -> str:
    return f"{n / 2 ** 20:,.0f} MiB"


def _beam_cores(beam_args: List[str]) -> int:
    """The one-worker pipelines the link runs at once with ``beam_args``
    (``runner.local_parallelism``): the cores it may keep busy."""
    from beam_pipelines import runner  # pylint: disable=import-outside-toplevel

    return runner.local_parallelism(beam_args)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--impressions", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--raw", help="use this raw folder instead of generating one")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--sample-interval", type=float, default=0.1,
                    help="seconds between memory samples of the process trees")
    ap.add_argument("--beam-workers", type=int,
                    help="pass --direct_num_workers=N to the Beam link (default: no Beam flag "
                         "at all, i.e. the link's own defaults)")
    ap.add_argument("--user-shards", type=int, nargs="+", default=[1], metavar="N",
                    help="run the Beam link once per value of PrepareConfig.user_shards "
                         "(e.g. 1 4: one pass vs 4 user shards, side by side)")
    ap.add_argument("--beam-arg", action="append", default=[], metavar="--FLAG=VALUE",
                    help="another Beam flag for this tree's link runs (repeatable)")
    ap.add_argument("--reference", metavar="TREE",
                    help="also run the Beam link of this source tree (its defaults), e.g. a "
                         "worktree of the commit before a change: prints the speed-up")
    ap.add_argument("--skip-baseline", action="store_true",
                    help="run only the Beam link (no ratio against the baseline)")
    ap.add_argument("--_worker", choices=ENGINES, help=argparse.SUPPRESS)
    ap.add_argument("--_user_shards", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--_beam_arg", action="append", default=[], help=argparse.SUPPRESS)
    ap.add_argument("--_out", help=argparse.SUPPRESS)
    ap.add_argument("--_result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._worker:  # pylint: disable=protected-access
        _worker(args._worker, args.raw, args._out, args._result,  # pylint: disable=W0212
                args._beam_arg, args._user_shards)  # pylint: disable=W0212
        return 0

    work = tempfile.mkdtemp(prefix="tfrrl_throughput_")
    try:
        raw = args.raw
        n = args.impressions
        if raw is None:
            from tfrrl.data.synthetic import SyntheticConfig, generate  # pylint: disable=C0415

            raw = os.path.join(work, "raw")
            t0 = time.time()
            generate(SyntheticConfig(impressions=n, seed=args.seed), raw, verbose=False)
            print(f"generated {n:,} synthetic impressions (seed {args.seed}) in "
                  f"{time.time() - t0:.1f}s", flush=True)
        beam_args = ([f"--direct_num_workers={args.beam_workers}"]
                     if args.beam_workers is not None else []) + list(args.beam_arg)
        cores = {"beam": _beam_cores(beam_args), "baseline": 1, REFERENCE: 1}
        print(f"Beam link: beam_pipelines.run.run(..., beam_args={beam_args}) → "
              f"{cores['beam']} one-worker pipeline(s) at a time (os.cpu_count() = "
              f"{os.cpu_count()})", flush=True)
        names = [_run_name("beam", k) for k in dict.fromkeys(args.user_shards)]
        names += [] if args.skip_baseline else ["baseline"]
        names += [REFERENCE] if args.reference else []
        runs: Dict[str, List[Dict[str, Any]]] = {name: [] for name in names}
        for r in range(args.repeats):
            order = names if r % 2 == 0 else list(reversed(names))
            for name in order:
                res = _run_engine(name, raw, work, args.sample_interval, beam_args,
                                  args.reference)
                n = res["rows_read"]
                runs[name].append(res)
                print(f"  repeat {r + 1}/{args.repeats} {name:8s}: {res['wall_seconds']:8.1f}s"
                      f"  {n / res['wall_seconds']:10,.0f} rows/s  peak RSS "
                      f"{_mib(res['peak_tree_rss'])}  (other processes used "
                      f"{res['other_cores']:.2f} cores meanwhile)", flush=True)
        _report(runs, cores, os.cpu_count() or 1)
        return 0
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _report(runs: Dict[str, List[Dict[str, Any]]], cores: Dict[str, int], machine: int) -> None:
    rps = {}
    names = list(runs)
    print()
    print(f"machine: {machine} cores; impressions read: {runs[names[0]][0]['rows_read']:,}")
    for name in names:
        engine, user_shards = _parse_run_name(name)
        rs = runs[name]
        wall = statistics.median(r["wall_seconds"] for r in rs)
        rps[name] = rs[0]["rows_read"] / wall
        cpu = statistics.median(r["cpu_seconds"] / r["wall_seconds"] for r in rs)
        peak = max(r["peak_tree_rss"] for r in rs)
        label = {"beam": f"Beam link (this tree, user_shards={user_shards})",
                 "baseline": "baseline (pyarrow + numpy, 1 process)",
                 REFERENCE: "reference: the Beam link of --reference (its defaults)"}[engine]
        print(f"{label}:")
        print(f"  rows/s           : {rps[name]:,.0f}  (median wall {wall:.1f}s over "
              f"{len(rs)} run(s))")
        print(f"  cores            : {cores[engine]}"
              + (" (one-worker pipelines at a time)" if engine == "beam" else "")
              + f"; measured CPU busy {cpu:.2f} cores ({rs[0]['cpu_source']}); other "
              f"processes on the machine meanwhile: "
              f"{statistics.median(r['other_cores'] for r in rs):.2f} cores")
        print(f"  peak RSS         : {_mib(peak)} summed over the process tree "
              f"(≤{max(r['peak_processes'] for r in rs)} processes, sampled); main process "
              f"ru_maxrss {_mib(max(r['ru_maxrss_self'] for r in rs))}"
              + (f", largest child ru_maxrss {_mib(max(r['ru_maxrss_children'] for r in rs))}"
                 if engine == "beam" else "")
              + f"; {_mib(rs[0]['rss_before_run'])} before run()")
        r0 = rs[0]
        for r in rs:
            if "error" in r:
                print(f"  !! run() raised: {r['error'].splitlines()[0]} "
                      f"{r['error'].splitlines()[1]}")
                print(f"  !! records actually written: {r['records_written']}")
        print(f"  output           : train {r0['train']:,}, eval {r0['eval']:,}, corpus "
              f"{r0['corpus_size']:,}, dead-letter {sum(r0['dead_letter'].values()):,}, "
              f"cutoff {r0['cutoff']}, accounting "
              f"{'balanced' if r0['balanced'] else 'NOT BALANCED'}")
    beams = [n for n in names if n not in ("baseline", REFERENCE)]
    if REFERENCE in runs and beams:
        print(f"speed-up of this tree's link ({beams[0]}) over the reference: "
              f"{rps[beams[0]] / rps[REFERENCE]:.2f}x rows/s "
              f"({rps[REFERENCE]:,.0f} → {rps[beams[0]]:,.0f})")
    if len(beams) > 1:
        _report_user_shards({n: runs[n] for n in beams})
    if beams and "baseline" in runs:
        _report_ratio(runs[beams[0]], runs["baseline"], rps[beams[0]], rps["baseline"],
                      cores["beam"])


def _report_user_shards(runs: Dict[str, List[Dict[str, Any]]]) -> None:
    """The Beam runs side by side: seconds and peak RSS per user_shards, and whether they
    wrote the same dataset (counts, cutoff, corpus, vocabularies)."""
    print("Beam link by user_shards (same input, one after another in this run):")
    print(f"  {'user_shards':>11s} {'seconds':>9s} {'rows/s':>9s} {'peak RSS':>12s}")
    for name, rs in runs.items():
        wall = statistics.median(r["wall_seconds"] for r in rs)
        print(f"  {rs[0]['user_shards']:>11d} {wall:>9.1f} {rs[0]['rows_read'] / wall:>9,.0f} "
              f"{_mib(max(r['peak_tree_rss'] for r in rs)):>12s}")
    keys = ("train", "eval", "cutoff", "corpus_size", "vocabulary_sizes", "dead_letter")
    outputs = {name: tuple(json.dumps(rs[0][k], sort_keys=True) for k in keys)
               for name, rs in runs.items()}
    same = len(set(outputs.values())) == 1
    print(f"  same output (train, eval, cutoff, corpus, vocabulary sizes, dead letters): "
          f"{'yes' if same else 'NO'}")


def _report_ratio(beam: List[Dict[str, Any]], base: List[Dict[str, Any]], beam_rps: float,
                  base_rps: float, beam_cores: int) -> None:
    per_core = beam_rps / beam_cores
    ratio = per_core / base_rps
    print(f"Beam rows/s per core: {per_core:,.0f}")
    print(f"ratio (Beam rows/s per core ÷ baseline rows/s) = {ratio:.3f}   target ≥ "
          f"{TARGET_RATIO}   {'PASS' if ratio >= TARGET_RATIO else 'MISS'}")
    # Contention-robust cross-check: rows per CPU-second of each process tree. It ignores
    # cores left idle, so it is an upper bound of the Beam per-core figure above.
    cpu_rate = {e: rs[0]["rows_read"] / statistics.median(r["cpu_seconds"] for r in rs)
                for e, rs in (("beam", beam), ("baseline", base))}
    print(f"cross-check on CPU time: Beam {cpu_rate['beam']:,.0f} rows per CPU-second, baseline "
          f"{cpu_rate['baseline']:,.0f} → ratio {cpu_rate['beam'] / cpu_rate['baseline']:.3f} "
          f"(upper bound: idle cores not charged)")
    b, s = beam[0], base[0]
    if b["train"] + b["eval"] != s["train"] + s["eval"]:
        print(f"WARNING: Beam wrote {b['train'] + b['eval']:,} examples, the baseline "
              f"{s['train'] + s['eval']:,}: the two runs did NOT do the same work")
    elif (b["train"], b["eval"]) != (s["train"], s["eval"]):
        print(f"note: train/eval differ by the cutoff only (Beam approximate quantile "
              f"{b['cutoff']} vs exact {s['cutoff']})")


if __name__ == "__main__":
    sys.exit(main())
