"""Train-step cost of Backbone&RRL against the plain Backbone, the speed levers and thread pools of
issue 16 side by side, and a 2,000-step NaN/Inf soak.

    python -m benchmarks.train_step [--data DIR | --impressions 200000] [--steps 200]
    python -m benchmarks.train_step --soak-steps [2000] [--data DIR]
    python -m benchmarks.train_step --speed [--arch "Backbone&RRL"] [--data DIR]
    python -m benchmarks.train_step --threads default,1:2 [--arch Backbone] [--data DIR]
    python -m benchmarks.train_step --against HEAD~1 [--threads 1:2] [--arch Backbone] [--data DIR]

**Throughput mode** (default). Builds ``configs/synthetic/backbone.yaml`` and
``configs/synthetic/backbone_rrl.yaml`` with :func:`tfrrl.training.trainer.build_model` on the same
prepared dataset, and prints the examples/s of each and the ratio
``step_time(RRL) / step_time(Backbone)`` against the target (≤ 1.3) with PASS/MISS.

* Data: ``--data DIR`` (a prepared dataset) or, by default, ``--impressions`` synthetic impressions
  (``tfrrl.data.synthetic.generate``, seed 0) prepared by the Beam link
  (``beam_pipelines.run.run``, DirectRunner) into a temporary folder, removed at the end
  unless ``--keep`` (then pass it to ``--data`` next time and skip the 1–2 min prepare).
* What one step costs: ``model.train_function(iterator)``, the very ``tf.function`` (Keras'
  ``multi_step_on_iterator`` → ``train_step``) that ``model.fit`` calls once per step, on an
  iterator of the training ``tf.data`` pipeline; fit's callbacks/progress bar are left out.
  Input: by default (``--input cached``) the first ``--cache-batches`` batches of the real
  training pipeline (``PreparedDataset.dataset(TRAIN, shuffle=True, drop_remainder=True)``) are
  cached in memory and repeated, so both models see the same batches in the same order and the
  parse/lookup cost, identical for both, neither dilutes the ratio nor competes for the cores.
  ``--input live`` reads the full pipeline instead (closer to ``tfrrl train``: its parse/lookup
  threads then share the cores with the step; a cost common to both models can only pull the
  ratio towards 1, so the cached default is the stricter measure).
* Warm-up: ``--warmup`` steps per model first (the first one traces ``train_step`` and creates
  the optimizer slots; its time is printed but not counted).
* Timing: ``--steps`` per model, split into ``--rounds`` blocks; the blocks alternate between
  the models (A B, B A, A B, …) so that drift in the load of the shared machine hits both.
  examples/s of a block = block steps × batch / wall time; reported: the median over the blocks
  of each model (and min–max), the ratio of the median step times (the verdict), and, as noise
  checks, the median of the per-round paired ratios and the ratio of the median process CPU
  time per step (``time.process_time``: all threads of this process; it moves much less than
  wall time when other processes load the machine).
* ``--variant NAME=OVERRIDES`` adds more models on top of ``backbone.yaml`` (dotted overrides
  separated by spaces) to the same alternation, e.g. to price each RRL module alone::

      --variant "dal=model.rrl.dal=true" --variant "mvwdl=model.rrl.mvwdl=true" \
      --variant "ortho=model.rrl.orthogonality=true"

  or another config (a YAML path first), e.g. to price ADI self-training::

      --variant "ADI=configs/synthetic/adi.yaml" \
      --variant "ADI-ST=configs/synthetic/adi_self_training.yaml" \
      --variant "ADI-ST-p0.5=configs/synthetic/adi_self_training.yaml \
                 model.adi.self_training.initial_fraction=0.5"

**Speed mode** (``--speed [--arch A]``): Backbone, Backbone&RRL and DNN on the reference path
(``model.pair_blocks=false``, ``train.unique_candidates=false``, ``train.fused_adam=false``,
float32) and with each lever added in turn (``SPEED_LEVERS``: +blocks, +unique, +fused, +bf16),
alternating on the same cached batches; prints each path's step time and speed-up, the share of
the measured matmul peak, a roofline ceiling and what the live input pipeline costs.

**Threads mode** (``--threads default,1:2,…``): the reference and the fastest path of each
``--arch`` (default Backbone&RRL) in one child process per setting of TensorFlow's thread pools
(``INTRA[:INTER]`` → ``TF_NUM_INTRAOP_THREADS`` / ``TF_NUM_INTEROP_THREADS``; ``default``:
TensorFlow's own). The pools are fixed per process, so the children take turns: one round each,
in alternating order, while the others wait idle; every setting meets the same load.

**Against mode** (``--against REV``): the same two paths of each ``--arch`` in two children
taking turns the same way, one running this checkout's code and one a git worktree of REV
(a commit, branch or tag; created in a temporary folder and removed at the end), both with the
pools of ``--threads`` (one setting, default TensorFlow's own). Prints each model's ms/step
under both and the speed-up of this checkout over REV: what a code change without a switch
buys, measured side by side. REV must have ``--thread-child`` (the twelfth session's code on).

**Soak mode** (``--soak-steps [N]``, default 2,000): trains Backbone&RRL (``backbone_rrl.yaml``)
for N steps on the synthetic default, on ``trainer.make_datasets``' training dataset with
``train.steps_per_epoch`` set (so it is ``repeat()``-ed), with the same
``model.train_function`` as fit. The metrics are reset before every step, so each logged value
is that step's own loss (not a running mean, which would hide a transient spike). After every
step it checks that every logged value (each loss and each ``uwl_weight_*``) and every
trainable weight of the model (experts, towers, DAL, MVWDL projections and critics, UWL log
variances, …) is finite; it stops at the first NaN/Inf. Prints the min/max of each logged value
over the run and PASS/FAIL. Non-trainable weights (spectral-norm ``u`` vectors, GRL scale) are
checked too and reported separately.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from benchmarks import thread_children  # noqa: E402  (after the path fix-up above)

TARGET_RATIO = 1.3
BACKBONE_CONFIG = os.path.join(REPO, "configs", "synthetic", "backbone.yaml")
RRL_CONFIG = os.path.join(REPO, "configs", "synthetic", "backbone_rrl.yaml")
DNN_CONFIG = os.path.join(REPO, "configs", "synthetic", "dnn.yaml")
SPEED_TARGET = 4.0
# --speed: each architecture on the reference path and with each lever added (cumulative).
SPEED_MODELS = (("Backbone", BACKBONE_CONFIG), ("Backbone&RRL", RRL_CONFIG), ("DNN", DNN_CONFIG))
_REFERENCE_PATH = {"model.pair_blocks": "false", "train.unique_candidates": "false",
                   "train.fused_adam": "false", "model.compute_dtype": "float32"}
_LEVERS = (("+blocks", "model.pair_blocks", "true"),
           ("+unique", "train.unique_candidates", "true"),
           ("+fused", "train.fused_adam", "true"),
           ("+bf16", "model.compute_dtype", "bfloat16"))


def _cumulative_levers():
    """(name, overrides) of the reference path and of each lever added to the ones before."""
    path, name, levers = dict(_REFERENCE_PATH), "", [("reference", _REFERENCE_PATH)]
    for suffix, key, value in _LEVERS:
        path, name = {**path, key: value}, name + suffix
        levers.append((name, path))
    return tuple((n, [f"{k}={v}" for k, v in p.items()]) for n, p in levers)


SPEED_LEVERS = _cumulative_levers()


def shown_lever(lever: str, overrides: Sequence[str]) -> str:
    """A path's label as run: the levers that ``--set`` (applied after them) turns back off are
    dropped, e.g. ``+blocks+bf16`` with ``model.compute_dtype=float32`` → ``+blocks``."""
    values = dict(o.split("=", 1) for o in overrides if "=" in o)
    for suffix, key, value in _LEVERS:
        if key in values and values[key] != value:
            lever = lever.replace(suffix, "")
    return lever or "reference"


def _say(message: str) -> None:
    print(f"[train_step {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------------------------
# Data.

class _Heartbeat:
    """Prints ``label … Ns elapsed`` every ``every`` seconds while a long call runs."""

    def __init__(self, label: str, every: float = 15.0):
        self.label, self.every = label, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._start = time.time()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            _say(f"{self.label} … {time.time() - self._start:.0f}s elapsed")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def prepare_synthetic(impressions: int, workdir: str, seed: int = 0) -> str:
    """generate → Beam prepare into ``workdir``; returns the prepared folder."""
    from beam_pipelines.run import PrepareConfig, run  # pylint: disable=import-outside-toplevel
    from tfrrl.data import synthetic  # pylint: disable=import-outside-toplevel

    raw_dir, data_dir = os.path.join(workdir, "raw"), os.path.join(workdir, "data")
    _say(f"generating {impressions:,} synthetic impressions (seed {seed}) → {raw_dir}")
    t0 = time.time()
    synthetic.generate(synthetic.SyntheticConfig(impressions=impressions, seed=seed), raw_dir,
                       verbose=True)
    _say(f"generated in {time.time() - t0:.1f}s; preparing → {data_dir} "
         f"(Beam DirectRunner, takes ~1–2 min)")
    with _Heartbeat("Beam prepare"):
        result = run(raw_dir, data_dir, PrepareConfig())
    imp = result["accounting"]["impressions"]
    _say(f"prepared in {result['seconds']:.1f}s: {imp['train']:,} train / {imp['eval']:,} eval "
         f"examples, corpus {result['stats']['corpus_size']:,} entities")
    shutil.rmtree(raw_dir, ignore_errors=True)
    return data_dir


class _DataDir:
    """``--data`` as given, or a freshly prepared synthetic dataset in a temporary folder."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.tmp: Optional[str] = None

    def __enter__(self) -> str:
        if self.args.data:
            return self.args.data
        self.tmp = tempfile.mkdtemp(prefix="tfrrl-train-step-")
        return prepare_synthetic(self.args.impressions, self.tmp, self.args.seed)

    def __exit__(self, *exc):
        if self.tmp is None:
            return
        if self.args.keep:
            _say(f"kept the prepared dataset: --data {os.path.join(self.tmp, 'data')}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Models.

def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def load_variant(spec: str) -> Tuple[str, str, List[str]]:
    """``NAME=[CONFIG.yaml] [KEY=VALUE …]`` → (name, config path, overrides); the config is
    ``backbone.yaml`` unless the first word names a YAML file (relative to the repository)."""
    name, sep, rest = spec.partition("=")
    words = rest.split()
    if not sep or not name or not words:
        raise SystemExit(f"--variant expects NAME=[CONFIG.yaml] [KEY=VALUE …], got {spec!r}")
    path = BACKBONE_CONFIG
    if words[0].endswith((".yaml", ".yml")):
        path = words.pop(0)
        path = path if os.path.isabs(path) else os.path.join(REPO, path)
        if not os.path.isfile(path):
            raise SystemExit(f"--variant {name}: no config file {path}")
    return name, path, words


def build(path: str, overrides: Sequence[str], data):
    """(experiment, compiled model with its train_function made) built like ``tfrrl train``."""
    import keras  # pylint: disable=import-outside-toplevel

    from tfrrl import config  # pylint: disable=import-outside-toplevel
    from tfrrl.training import trainer  # pylint: disable=import-outside-toplevel

    exp = config.load_experiment(path, list(overrides))
    keras.utils.set_random_seed(exp.train.seed)
    model = trainer.build_model(exp, data)
    model.make_train_function()
    return exp, model


def _logs_to_floats(logs) -> Dict[str, float]:
    return {k: float(v) for k, v in logs.items()}


# --------------------------------------------------------------------------------------------
# Throughput mode.

def _input_dataset(data, batch_size: int, args: argparse.Namespace):
    from tfrrl.data.reader import TRAIN  # pylint: disable=import-outside-toplevel

    base = data.dataset(TRAIN, batch_size, shuffle=True, seed=args.seed, drop_remainder=True)
    if args.input == "live":
        return base.repeat()
    # Keep the first batches in memory; repeat() reuses the cache filled by the pass below.
    once = base.take(args.cache_batches).cache()
    n = 0
    for _ in once:  # one full pass fills the in-memory cache (shared by later iterators)
        n += 1
    _say(f"cached {n} batches of {batch_size} in memory (repeated)")
    return once.repeat()


def build_models(specs: Sequence[Tuple[str, str, List[str]]], data) -> list:
    """[(name, experiment, model)] for [(name, config path, overrides)], built like `tfrrl
    train`, on the same prepared dataset."""
    models = []
    for name, path, overrides in specs:
        t0 = time.time()
        exp, model = build(path, overrides, data)
        n_params = sum(int(v.numpy().size) for v in model.trainable_variables)
        _say(f"built {name} ({os.path.relpath(path, REPO)}"
             f"{' ' + ' '.join(overrides) if overrides else ''}) in {time.time() - t0:.1f}s:"
             f" {n_params:,} trainable parameters, batch {exp.train.batch_size} + "
             f"{exp.train.num_negatives} sampled negatives")
        models.append((name, exp, model))
    return models


def warm_up(models, dataset, args: argparse.Namespace,
            datasets: Optional[Dict[str, object]] = None) -> Dict[str, object]:
    """``--warmup`` untimed steps per model (the first traces ``train_step``); returns each
    model's input iterator, by name (``datasets``: another input for some models)."""
    iterators = {}
    for name, _, model in models:
        it = iter((datasets or {}).get(name, dataset))
        t0 = time.perf_counter()
        _logs_to_floats(model.train_function(it))
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(args.warmup - 1):
            logs = model.train_function(it)
        if args.warmup > 1:
            _logs_to_floats(logs)
        rest = (time.perf_counter() - t0) / max(1, args.warmup - 1)
        _say(f"warm-up {name}: first step (tracing) {first:.1f}s, then {rest * 1e3:.0f} ms/step"
             f" over {args.warmup - 1} steps (not counted)")
        iterators[name] = it
    return iterators


def timed_block(model, iterator, steps: int) -> Tuple[float, float]:
    """(wall, process CPU) seconds per step of ``steps`` train steps."""
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        logs = model.train_function(iterator)
    _logs_to_floats(logs)  # synchronise before stopping the clock
    return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps


def time_models(models, dataset, args: argparse.Namespace, after_round=None,
                datasets: Optional[Dict[str, object]] = None):
    """Warm-up, then ``--rounds`` alternating blocks of ``--steps`` / rounds steps per model
    (``after_round()`` runs after each round); returns (wall seconds per step per block, CPU
    seconds per step per block, block, rounds). ``datasets``: another input for some models,
    by name (``dataset`` for the others)."""
    batch = models[0][1].train.batch_size
    iterators = warm_up(models, dataset, args, datasets)

    rounds = max(1, args.rounds)
    block = max(1, args.steps // rounds)
    times: Dict[str, List[float]] = {name: [] for name, _, _ in models}
    cpu: Dict[str, List[float]] = {name: [] for name, _, _ in models}
    _say(f"timing {rounds} rounds × {block} steps per model, alternating order "
         f"(input: {args.input})")
    for r in range(rounds):
        order = models if r % 2 == 0 else models[::-1]
        line = []
        for name, _, model in order:
            dt, dc = timed_block(model, iterators[name], block)
            times[name].append(dt)
            cpu[name].append(dc)
            line.append(f"{name} {batch / dt:,.0f} ex/s ({dt * 1e3:.0f} ms/step, "
                        f"CPU {cpu[name][-1] * 1e3:.0f} ms)")
        _say(f"round {r + 1}/{rounds}: " + ", ".join(line))
        if after_round is not None:
            after_round()
    return times, cpu, block, rounds


def run_throughput(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from tfrrl.data.reader import PreparedDataset  # pylint: disable=import-outside-toplevel

    specs: List[Tuple[str, str, List[str]]] = [("Backbone", BACKBONE_CONFIG, []),
                                               ("Backbone&RRL", RRL_CONFIG, [])]
    specs += [load_variant(v) for v in args.variant]
    specs = [(n, p, o + list(args.set)) for n, p, o in specs]
    with _DataDir(args) as data_dir:
        data = PreparedDataset(data_dir)
        models = build_models(specs, data)
        batch_sizes = {exp.train.batch_size for _, exp, _ in models}
        if len(batch_sizes) != 1:
            raise SystemExit(f"the configs use different batch sizes {sorted(batch_sizes)}")
        batch = batch_sizes.pop()
        dataset = _input_dataset(data, batch, args)

        times, cpu, block, rounds = time_models(models, dataset, args)
    print()
    print(f"train step throughput: {block * rounds} timed steps per model "
          f"({rounds} alternating rounds × {block}), batch {batch}, "
          f"input {args.input}, model.train_function (= one model.fit step)")
    width = max(len(n) for n, _, _ in models)
    base_name = models[0][0]
    base_med = statistics.median(times[base_name])
    base_cpu = statistics.median(cpu[base_name])
    for name, _, _ in models:
        med = statistics.median(times[name])
        med_cpu = statistics.median(cpu[name])
        eps = [batch / t for t in times[name]]
        print(f"  {name:<{width}}  {batch / med:>8,.0f} examples/s (median; blocks "
              f"{min(eps):,.0f}–{max(eps):,.0f})  {med * 1e3:7.1f} ms/step "
              f"× {med / base_med:.2f}  | CPU {med_cpu * 1e3:7.1f} ms/step "
              f"× {med_cpu / base_cpu:.2f}")
    rrl = "Backbone&RRL"
    ratio = statistics.median(times[rrl]) / base_med
    paired = statistics.median(a / b for a, b in zip(times[rrl], times[base_name]))
    cpu_ratio = statistics.median(cpu[rrl]) / base_cpu
    verdict = "PASS" if ratio <= TARGET_RATIO else "MISS"
    print(f"(× = relative to {base_name}; CPU = process CPU seconds per step, all threads: less "
          f"sensitive than wall time to other processes on the machine)")
    print(f"step_time(Backbone&RRL) / step_time(Backbone) = {ratio:.2f} "
          f"(median of per-round paired ratios {paired:.2f}; CPU-time ratio {cpu_ratio:.2f}); "
          f"target ≤ {TARGET_RATIO}: {verdict}")
    return 0


# --------------------------------------------------------------------------------------------
# Speed mode (issue 16): the reference path against the fast levers, per architecture.

def dense_flops_per_step(exp, num_domains: int, sequence_length: int,
                         blocks: bool = False, distinct_fraction: float = 1.0) -> float:
    """An estimate of the FLOPs of one training step: the pair-level Dense layers and the target
    attention, 2 FLOPs per multiply-add, forward + backward ≈ 3 × forward, over B × C pairs
    (C = B in-batch + N sampled). Per pair: the shared and one specific expert on D = 3R + E
    inputs and one tower on the gate's 3h (Backbone), or one tower on D + E (DNN); the
    attention's logits and weighted sum (2·L·R). The per-user and per-entity encoders and the
    RRL heads (positives only) are left out: a lower bound.

    The REFERENCE path by default; ``blocks``: the first Dense layers see only E_att's R inputs
    per pair (the rest runs per user and per candidate: left out); ``distinct_fraction``: the
    share of the C columns that are distinct entities (``train.unique_candidates``)."""
    m, t = exp.model, exp.train
    d = 3 * m.representation_dim + m.embedding_dim
    first = m.representation_dim if blocks else d

    def chain(width, units):
        macs = 0
        for u in units:
            macs += width * u
            width = u
        return macs

    def without_first(width, units):  # the first layer's per-pair inputs: `first`, not width
        return chain(width, units) - width * units[0] + first * units[0]

    if m.backbone == "rrl":
        h = m.expert_units[-1]
        per_pair = (2 * without_first(d, m.expert_units)
                    + chain(3 * h, list(m.tower_units) + [1]) + 2 * h)  # gate fusion
    elif m.backbone == "dnn":
        per_pair = without_first(d + m.embedding_dim,
                                 list(m.expert_units) + list(m.tower_units) + [1])
    else:
        raise ValueError(f"no FLOP model for backbone {m.backbone!r}")
    per_pair += 2 * sequence_length * m.representation_dim
    pairs = t.batch_size * (t.batch_size + t.num_negatives) * distinct_fraction
    return 3 * 2 * per_pair * pairs


def measured_distinct_fraction(model, dataset, steps: int = 20) -> float:
    """Mean share of distinct entities among a step's candidate columns (the batch's positives
    + the sampled negatives), over ``steps`` batches of ``dataset`` and fresh negative draws:
    what ``train.unique_candidates`` leaves to score."""
    from tfrrl.tasks.retrieval import distinct_columns  # pylint: disable=import-outside-toplevel

    shares = []
    for batch in dataset.take(steps):
        candidates, _ = model.task.sample_negatives(
            {k: v for k, v in batch.items() if k in model.task.corpus})
        first, columns = distinct_columns(candidates["entity_hash"])
        shares.append(int(first.shape[0]) / int(columns.shape[0]))
    return sum(shares) / len(shares)


def measured_input_cost(data, batch_size: int, args: argparse.Namespace,
                        batches: int = 200) -> float:
    """Process CPU seconds per batch of the training input pipeline alone (TFRecords → shuffle →
    batch → parse → vocabulary lookup), over ``batches`` batches after 20 warm-up ones."""
    from tfrrl.data.reader import TRAIN  # pylint: disable=import-outside-toplevel

    it = iter(data.dataset(TRAIN, batch_size, shuffle=True, seed=args.seed + 1,
                           drop_remainder=True).repeat())
    for _ in range(20):
        next(it)
    c0 = time.process_time()
    for _ in range(batches):
        next(it)
    return (time.process_time() - c0) / batches


def measured_matmul_peak(dtype: str, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of the best of ``repeats`` [size × size] · [size × size] matmuls in ``dtype`` on
    this machine with every core (oneDNN): the practical peak the step is compared with."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    a = tf.random.normal([size, size], dtype=tf.float32)
    a = tf.cast(a, dtype)
    mm = tf.function(lambda x: tf.reduce_sum(tf.cast(tf.matmul(x, x), tf.float32)))
    mm(a).numpy()
    best = min(_timed(lambda: mm(a).numpy()) for _ in range(repeats))
    return 2 * size ** 3 / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_speed(args: argparse.Namespace) -> int:
    """Every architecture of SPEED_MODELS on each lever of SPEED_LEVERS, alternating, on the
    same cached batches; prints examples/s, the step-time ratio of each lever to the reference
    and the fraction of the measured bf16 matmul peak."""
    _quiet_tensorflow()
    from tfrrl.data.reader import TRAIN, PreparedDataset  # pylint: disable=import-outside-toplevel

    archs = [a for a in SPEED_MODELS if not args.arch or a[0] in args.arch]
    specs = [(f"{arch} {lever}", path, overrides + list(args.set))
             for arch, path in archs for lever, overrides in SPEED_LEVERS]
    with _DataDir(args) as data_dir:
        data = PreparedDataset(data_dir)
        models = build_models(specs, data)
        batch = models[0][1].train.batch_size
        dataset = _input_dataset(data, batch, args)
        # The peak is measured between the rounds and the best kept: a busy machine lowers it
        # as it lowers the steps.
        peaks = {"float32": 0.0, "bfloat16": 0.0}

        def measure_peaks():
            for d in peaks:
                peaks[d] = max(peaks[d], measured_matmul_peak(d))

        # The fastest path once more on the live pipeline (TFRecords → parse → vocabulary
        # lookup → prefetch, as `tfrrl train` reads them): its parse and lookup threads share
        # the cores with the step, so its step time against the cached one is what the input
        # costs the training loop.
        live, cached_of = {}, {}
        if args.input == "cached":
            arch = next((a for a, _ in archs if a == "Backbone&RRL"), archs[-1][0])
            fastest = f"{arch} {SPEED_LEVERS[-1][0]}"
            live_name = f"{fastest} (live input)"
            models.append((live_name,) + next((e, m) for n, e, m in models if n == fastest))
            live = {live_name: data.dataset(TRAIN, batch, shuffle=True, seed=args.seed,
                                            drop_remainder=True).repeat()}
            cached_of = {live_name: fastest}
        times, cpu, block, rounds = time_models(models, dataset, args, measure_peaks, live)
        num_domains, seq = models[0][2].num_domains, data.sequence_length
        distinct = measured_distinct_fraction(models[0][2], dataset)
        input_cpu = measured_input_cost(data, batch, args)
    print()
    print(f"speed levers (issue 16): {block * rounds} timed steps per model ({rounds} "
          f"alternating rounds × {block}), batch {batch}, input {args.input}; "
          f"{os.cpu_count()} cores")
    print(f"measured matmul peak (2048², best of 5 after each round): float32 {peaks['float32'] / 1e9:,.0f} "
          f"GFLOP/s, bfloat16 {peaks['bfloat16'] / 1e9:,.0f} GFLOP/s")
    width = max(len(n) for n, _, _ in models)
    for arch, _ in archs:
        ref = statistics.median(times[f"{arch} reference"])
        ref_cpu = statistics.median(cpu[f"{arch} reference"])
        exp = next(e for n, e, _ in models if n == f"{arch} reference")
        flops = dense_flops_per_step(exp, num_domains, seq)
        for lever, _ in SPEED_LEVERS:
            name = f"{arch} {lever}"
            med = statistics.median(times[name])
            paired = statistics.median(r / t for r, t in zip(times[f"{arch} reference"],
                                                              times[name]))
            lever = shown_lever(lever, args.set)
            peak = peaks["bfloat16" if "bf16" in lever else "float32"]
            shown = f"{arch} {lever}"
            print(f"  {shown:<{width}}  {batch / med:>8,.0f} examples/s  {med * 1e3:7.1f} "
                  f"ms/step  speed-up × {ref / med:.2f} (paired {paired:.2f}; CPU × "
                  f"{ref_cpu / statistics.median(cpu[name]):.2f})  "
                  f"{flops / med / 1e9:,.0f} GFLOP/s = {flops / med / peak:.1%} of the "
                  f"{'bf16' if 'bf16' in lever else 'fp32'} matmul peak")
        best = ref / statistics.median(times[f"{arch} {SPEED_LEVERS[-1][0]}"])
        left = dense_flops_per_step(exp, num_domains, seq, blocks=True,
                                    distinct_fraction=distinct)
        floor = left / peaks["bfloat16"]
        print(f"  roofline: the fastest path still does {left / 1e9:.1f} of the reference's "
              f"{flops / 1e9:.1f} GFLOP per step ({distinct:.1%} of the candidate columns are "
              f"distinct); at the measured bf16 matmul peak that alone takes "
              f"{floor * 1e3:.1f} ms, a ceiling of × {ref / floor:.2f} over the reference")
        if arch == "Backbone&RRL":
            print(f"  → Backbone&RRL speed-up × {best:.2f}; target ≥ {SPEED_TARGET}: "
                  f"{'PASS' if best >= SPEED_TARGET else 'MISS'}")
    for name, cached in cached_of.items():
        fast, slow = statistics.median(times[cached]), statistics.median(times[name])
        print(f"  input: {name} {slow * 1e3:.1f} ms/step against {fast * 1e3:.1f} cached: the "
              f"live pipeline costs the step {max(0.0, 1 - fast / slow):.1%} of its time; "
              f"reading + parsing + lookup alone take {input_cpu * 1e3:.1f} ms of CPU per batch "
              f"({input_cpu / statistics.median(cpu[name]):.1%} of the live step's CPU)")
    print("(GFLOP/s: the reference path's pair-level Dense + attention FLOPs "
          "(dense_flops_per_step) / step time: the same work, done faster; the roofline "
          "counts only the matmul work the fast path keeps, elementwise work and the encoders "
          "excluded, so the real ceiling is lower)")
    return 0


# --------------------------------------------------------------------------------------------
# Threads mode: the same paths in processes with other TensorFlow thread pools.

def _thread_specs(args: argparse.Namespace) -> List[Tuple[str, str, List[str]]]:
    """The reference path and the fastest path of each ``--arch`` (default: Backbone&RRL)."""
    archs = [a for a in SPEED_MODELS if a[0] in (args.arch or ["Backbone&RRL"])]
    return [(f"{arch} {lever}", path, overrides + list(args.set))
            for arch, path in archs for lever, overrides in (SPEED_LEVERS[0], SPEED_LEVERS[-1])]


def run_thread_child(args: argparse.Namespace) -> int:
    """A child of ``--threads``: builds and warms up the models, then times one block of steps
    of each per ``round`` line on stdin, answering one marked JSON line."""
    _quiet_tensorflow()
    from tfrrl.data.reader import PreparedDataset  # pylint: disable=import-outside-toplevel

    data = PreparedDataset(args.data)
    models = build_models(_thread_specs(args), data)
    dataset = _input_dataset(data, models[0][1].train.batch_size, args)
    iterators = warm_up(models, dataset, args)
    block = max(1, args.steps // max(1, args.rounds))

    def time_round(r: int):
        order = models if r % 2 == 0 else models[::-1]
        return {name: timed_block(model, iterators[name], block) for name, _, model in order}
    thread_children.serve_rounds(time_round)
    return 0


def _child_command(args: argparse.Namespace, data_dir: str) -> List[str]:
    """The ``python -m`` command of a ``--threads`` / ``--against`` child."""
    command = ["benchmarks.train_step", "--thread-child", "--data", data_dir,
               "--steps", str(args.steps), "--rounds", str(args.rounds),
               "--warmup", str(args.warmup), "--cache-batches", str(args.cache_batches),
               "--seed", str(args.seed)]
    command += [a for arch in args.arch for a in ("--arch", arch)]
    return command + [a for override in args.set for a in ("--set", override)]


def run_threads(args: argparse.Namespace) -> int:
    """The reference and fastest paths in one process per ``--threads`` setting; the processes
    take turns (one round each, alternating order; the others wait idle), so every setting
    meets the same load. Prints ms/step and the speed-up over the first setting's reference."""
    settings = thread_children.parse_thread_settings(args.threads)
    with _DataDir(args) as data_dir:
        times = thread_children.take_turns(
            thread_children.pool_children(settings), _child_command(args, data_dir),
            args.rounds,
            on_round=lambda r: _say(f"round {r + 1}/{args.rounds} done"))
    names = [name for name, _, _ in _thread_specs(args)]
    print()
    print(f"thread pools (issue 16): {args.steps // max(1, args.rounds) * args.rounds} timed "
          f"steps per model and setting ({args.rounds} alternating rounds), input cached; "
          f"{os.cpu_count()} cores; settings INTRA:INTER threads of TensorFlow's pools"
          + (f"; on every model (after the levers): {' '.join(args.set)}" if args.set else ""))
    for name in names:
        arch = name.rsplit(" ", 1)[0]
        base = statistics.median(w for w, _ in times[(settings[0], f"{arch} {SPEED_LEVERS[0][0]}")])
        for setting in settings:
            med = statistics.median(w for w, _ in times[(setting, name)])
            shown = f"{arch} {shown_lever(name.rsplit(' ', 1)[1], args.set)}"
            print(f"  {shown:<40} threads {setting:<8} {med * 1e3:7.1f} ms/step  × "
                  f"{base / med:.2f} over the {settings[0]} reference")
    return 0


def _worktree(rev: str) -> str:
    """A detached git worktree of ``rev`` in a new temporary folder (the caller removes it)."""
    path = tempfile.mkdtemp(prefix="tfrrl-against-")
    try:
        subprocess.run(["git", "worktree", "add", "--detach", path, rev], cwd=REPO, check=True,
                       capture_output=True, text=True)
    except subprocess.CalledProcessError as e:
        os.rmdir(path)
        raise ValueError(f"--against {rev}: git cannot check it out here "
                         f"({e.stderr.strip().splitlines()[-1] if e.stderr.strip() else e}); "
                         "give a commit, branch or tag of this repository") from None
    return path


def run_against(args: argparse.Namespace, worktree: str) -> int:
    """The reference and fastest paths of each ``--arch`` in this checkout and in
    ``worktree`` (:func:`_worktree` of ``--against``, removed at the end), one child each,
    taking turns; prints both step times and the speed-up of this checkout's code."""
    from benchmarks.quality_results import version_of  # pylint: disable=import-outside-toplevel

    setting = args.threads or "default"
    here = f"this checkout ({version_of(REPO)})"
    try:
        theirs = f"{args.against} ({version_of(worktree)})"
        with _DataDir(args) as data_dir:
            times = thread_children.take_turns(
                thread_children.checkout_children([(theirs, worktree), (here, REPO)], setting),
                _child_command(args, data_dir), args.rounds,
                on_round=lambda r: _say(f"round {r + 1}/{args.rounds} done"))
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", worktree], cwd=REPO,
                       capture_output=True)
    print()
    print(f"this checkout against {args.against} (issue 16): "
          f"{args.steps // max(1, args.rounds) * args.rounds} timed steps per model and "
          f"checkout ({args.rounds} alternating rounds), input cached; threads {setting}"
          + (f"; on every model (after the levers): {' '.join(args.set)}" if args.set else ""))
    for name, _, _ in _thread_specs(args):
        arch, lever = name.rsplit(" ", 1)
        before = statistics.median(w for w, _ in times[(theirs, name)])
        after = statistics.median(w for w, _ in times[(here, name)])
        cpu_ratio = (statistics.median(c for _, c in times[(theirs, name)])
                     / statistics.median(c for _, c in times[(here, name)]))
        print(f"  {arch + ' ' + shown_lever(lever, args.set):<40} {before * 1e3:7.1f} → "
              f"{after * 1e3:7.1f} ms/step  × {before / after:.3f} (CPU × {cpu_ratio:.3f})")
    return 0


# --------------------------------------------------------------------------------------------
# Soak mode.

def run_soak(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tfrrl.data.reader import PreparedDataset  # pylint: disable=import-outside-toplevel
    from tfrrl.training import trainer  # pylint: disable=import-outside-toplevel

    steps = args.soak_steps
    overrides = [f"train.steps_per_epoch={steps}"] + list(args.set)
    with _DataDir(args) as data_dir:
        data = PreparedDataset(data_dir)
        exp, model = build(RRL_CONFIG, overrides, data)
        train_ds, _ = trainer.make_datasets(data, exp)  # steps_per_epoch set → repeat()
        trainable = list(model.trainable_variables)
        others = [v for v in model.variables if all(v is not t for t in trainable)
                  and v.dtype in ("float16", "bfloat16", "float32", "float64")]

        @tf.function(autograph=False)
        def all_finite(variables):
            return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in variables])

        def bad_variables(variables) -> List[str]:
            return [v.path for v in variables if not np.all(np.isfinite(v.numpy()))]

        _say("non-trainable float weights also checked: " + ", ".join(v.path for v in others))

        _say(f"soak: {steps:,} train steps of {exp.name} ({len(trainable)} trainable variables, "
             f"{sum(int(np.prod(v.shape)) for v in trainable):,} parameters; "
             f"{len(others)} non-trainable float), batch {exp.train.batch_size}, "
             f"repeated training dataset ({data.num_records('train'):,} examples, "
             f"{data.num_records('train') // exp.train.batch_size} steps/epoch)")
        lo: Dict[str, float] = {}
        hi: Dict[str, float] = {}
        first_bad: Optional[str] = None
        others_bad_step: Optional[int] = None
        it = iter(train_ds)
        t_start = t_last = time.perf_counter()
        t_first = 0.0
        done = last_logged = 0
        for step in range(1, steps + 1):
            model.reset_metrics()  # logged value = this step's value, not a running mean
            logs = _logs_to_floats(model.train_function(it))
            done = step
            if step == 1:
                t_first = time.perf_counter() - t_start
                _say(f"step 1 (tracing) took {t_first:.1f}s")
                t_start = t_last = time.perf_counter()
                last_logged = 1
            for k, v in logs.items():
                lo[k] = min(lo.get(k, math.inf), v)
                hi[k] = max(hi.get(k, -math.inf), v)
            bad_logs = [k for k, v in logs.items() if not math.isfinite(v)]
            if bad_logs:
                first_bad = f"step {step}: non-finite logged values {bad_logs}"
            elif not bool(all_finite(trainable)):
                first_bad = f"step {step}: non-finite weights {bad_variables(trainable)}"
            if others_bad_step is None and others and not bool(all_finite(others)):
                others_bad_step = step
                _say(f"step {step}: non-finite non-trainable weights {bad_variables(others)}")
            if first_bad:
                _say(f"FAIL at {first_bad}")
                break
            if step % args.log_every == 0 or step == steps:
                now = time.perf_counter()
                shown = " ".join(f"{k}={logs[k]:.4g}" for k in sorted(logs))
                _say(f"step {step:>5}/{steps}: "
                     f"{(now - t_last) / max(1, step - last_logged) * 1e3:.0f} ms/step; {shown}")
                t_last, last_logged = now, step
        elapsed = time.perf_counter() - t_start

    print()
    print(f"soak: {done:,} of {steps:,} train steps of {exp.name} in {t_first + elapsed:.0f}s "
          f"(step 1 with tracing {t_first:.1f}s, then {elapsed / max(1, done - 1) * 1e3:.0f} "
          f"ms/step); every logged value and every trainable weight checked after every step")
    width = max(len(k) for k in lo)
    print(f"  {'logged value':<{width}}  {'min':>12}  {'max':>12}")
    for k in sorted(lo, key=lambda n: (n.startswith("uwl_weight_"), n)):
        print(f"  {k:<{width}}  {lo[k]:>12.6g}  {hi[k]:>12.6g}")
    print(f"  non-trainable float weights ({len(others)}): "
          f"{'finite' if others_bad_step is None else f'NON-FINITE from step {others_bad_step}'}")
    ok = first_bad is None and done == steps
    print(f"no NaN/Inf in {steps:,} steps of Backbone&RRL: {'PASS' if ok else 'FAIL'}"
          + ("" if ok else f" ({first_bad})"))
    return 0 if ok else 1


# --------------------------------------------------------------------------------------------

def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="a prepared dataset (default: generate + prepare one)")
    parser.add_argument("--impressions", type=int, default=200_000,
                        help="synthetic impressions to generate when --data is not given")
    parser.add_argument("--seed", type=int, default=0, help="generator and shuffle seed")
    parser.add_argument("--keep", action="store_true",
                        help="keep the generated dataset (reuse with --data)")
    parser.add_argument("--steps", type=int, default=200, help="timed train steps per model")
    parser.add_argument("--rounds", type=int, default=8,
                        help="alternating blocks the timed steps are split into")
    parser.add_argument("--warmup", type=int, default=10,
                        help="untimed steps per model first (the first one traces)")
    parser.add_argument("--input", choices=("cached", "live"), default="cached",
                        help="cached: in-memory batches of the train pipeline; live: the pipeline")
    parser.add_argument("--cache-batches", type=int, default=100)
    parser.add_argument("--variant", action="append", default=[],
                        metavar="NAME=[CONFIG.yaml] OVERRIDES",
                        help="extra model: a config (default backbone.yaml) + space-separated "
                             "dotted overrides")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="dotted override applied to every model (e.g. train.batch_size=256)")
    parser.add_argument("--soak-steps", type=int, nargs="?", const=2000, default=None,
                        help="soak mode: N train steps of Backbone&RRL, NaN/Inf check "
                             "(default N: 2000)")
    parser.add_argument("--log-every", type=int, default=100, help="soak progress interval")
    parser.add_argument("--speed", action="store_true",
                        help="speed mode: the reference path vs the fast levers (pair blocks, "
                             "distinct candidates, fused Adam, bf16) for Backbone, Backbone&RRL and DNN, side by side")
    parser.add_argument("--threads", metavar="SETTINGS",
                        help="threads mode: the reference and fastest paths (--arch, default "
                             "Backbone&RRL) in one process per setting, taking turns; settings "
                             "comma-separated, each 'default' or INTRA[:INTER] thread-pool "
                             "sizes, e.g. default,1:2")
    parser.add_argument("--against", metavar="REV",
                        help="against mode: the reference and fastest paths (--arch) in this "
                             "checkout and in a git worktree of REV, taking turns; --threads "
                             "(one setting) sets both children's pools")
    parser.add_argument("--thread-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--arch", action="append", default=[],
                        help="--speed: only these architectures (Backbone, Backbone&RRL, DNN)")
    args = parser.parse_args(argv)
    if args.thread_child:
        return run_thread_child(args)
    if args.threads:
        try:
            thread_children.parse_thread_settings(args.threads)
        except ValueError as e:
            parser.error(str(e))
    if args.against:
        if args.threads and "," in args.threads:
            parser.error("--against takes one --threads setting (both children use it), "
                         f"not {args.threads!r}")
        try:
            worktree = _worktree(args.against)
        except ValueError as e:
            parser.error(str(e))
        return run_against(args, worktree)
    if args.threads:
        return run_threads(args)
    if args.speed:
        return run_speed(args)
    if args.soak_steps is not None:
        return run_soak(args)
    return run_throughput(args)


if __name__ == "__main__":
    sys.exit(main())
