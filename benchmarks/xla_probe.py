"""Would XLA pay on this CPU? A pair-sized MLP step, TF's graph against XLA, side by side.

    python -m benchmarks.xla_probe [--rounds 4] [--steps 5] [--pairs 32768]

The training step of a pair scorer is half elementwise work (bias, ReLU and their gradients,
each a separate pass over a [pairs, width] tensor; benchmarks/RESULTS.md, "Training speed").
XLA fuses elementwise chains, and its classic CPU runtime (``XLA_FLAGS=
--xla_cpu_use_thunk_runtime=false``) rewrites bfloat16 dots into oneDNN calls, which run on AMX
where the CPU has it. This probe measures what that would buy before any model is changed:
one step of a [pairs, 128] → [256, 128, 64] ReLU MLP (the size of a backbone expert), forward and
backward, one thread, in eight modes:

* ``graph``: a plain ``tf.function`` (TF's grappler + oneDNN kernels, what training runs today);
* ``xla``: the whole step (forward, loss and gradients) in ``tf.function(jit_compile=True)``;
* ``nested``: only the forward pass jit-compiled, called inside a plain ``tf.function`` that
  takes the gradient (what compiling one sub-layer of a model gives);
* ``pieces``: the MLP as one ``tf.custom_gradient`` op whose forward pass and hand-written
  backward pass are each jit-compiled, called from a plain ``tf.function`` (what a model could
  compile per expert while routing, sampling and the optimizer stay in the graph);

each in float32 and bfloat16 (float32 variables, casts inside the step, as Keras'
``mixed_bfloat16`` policy does). The input is [pairs, 128] (``--shape 2d``) or [128, pairs / 128,
128] (``--shape 3d``: the [users, candidates, width] layout of the model).

``--shape attention`` times the model's other per-pair block instead: the target attention
(tfrrl/model/encoders/target_attention.py, softmax weights) of 128 users' exposure sequences
(``--sequence`` long, 48-wide, 70% valid) against pairs / 128 candidates, projected to 32 —
its einsums ``cd,bld->bcl`` and ``bcl,bld->bcd`` are batched dots, not the 2-D matmuls of the
MLP.

Each (mode, dtype) runs in its own process (the XLA flag must be set before TensorFlow
loads); the processes alternate over ``--rounds`` rounds so that drift in the load of a shared
machine hits every mode, and each round reports the best of ``--steps`` timed steps after 3
warm-up steps. Printed: the median ms per step of each mode and its speed-up over ``graph`` in
the same dtype and over ``graph`` float32.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from typing import Dict, List, Optional, Sequence, Tuple

MODES = ("graph", "xla", "nested", "pieces")
DTYPES = ("float32", "bfloat16")
XLA_FLAGS = "--xla_cpu_use_thunk_runtime=false"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child(mode: str, dtype: str, pairs: int, shape: str, steps: int,
          sequence: int = 20) -> float:
    """Best ms per step of one (mode, dtype), in this process."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    tf.config.threading.set_intra_op_parallelism_threads(1)
    width, units = 128, (256, 128, 64)
    compute = tf.bfloat16 if dtype == "bfloat16" else tf.float32
    if shape == "attention":
        return _timed_step(mode, steps, *_attention(pairs, sequence, compute))
    x = tf.random.stateless_normal([pairs, width] if shape == "2d"
                                   else [128, pairs // 128, width], seed=[0, 1])
    sizes = list(zip((width,) + units[:-1], units))
    kernels = [tf.Variable(tf.random.stateless_normal(s, seed=[1, i]) * 0.05)
               for i, s in enumerate(sizes)]
    biases = [tf.Variable(tf.zeros([u])) for u in units]

    def forward(inputs):
        h = tf.cast(inputs, compute)
        for kernel, bias in zip(kernels, biases):
            h = tf.nn.relu(tf.matmul(h, tf.cast(kernel, compute)) + tf.cast(bias, compute))
        return tf.cast(h, tf.float32)

    if mode == "pieces":
        return _timed_step("graph", steps, _pieces(kernels, biases, compute), x,
                           kernels + biases)
    return _timed_step(mode, steps, forward, x, kernels + biases)


def _pieces(kernels, biases, compute):
    """The MLP as one ``tf.custom_gradient`` op whose forward pass and hand-written backward
    pass are each one jit-compiled function: what a model can compile without compiling its
    whole step (routing, sampling and the optimizer stay in the graph)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    n = len(kernels)

    @tf.function(jit_compile=True)
    def forward(x, *weights):
        h, keep = tf.cast(x, compute), [tf.cast(x, compute)]
        for kernel, bias in zip(weights[:n], weights[n:]):
            h = tf.nn.relu(tf.matmul(h, tf.cast(kernel, compute)) + tf.cast(bias, compute))
            keep.append(h)
        return tf.cast(h, tf.float32), keep

    @tf.function(jit_compile=True)
    def backward(dy, keep, *weights):
        grads_k, grads_b = [None] * n, [None] * n
        d = tf.cast(dy, compute)
        for i in reversed(range(n)):
            d = tf.where(keep[i + 1] > 0, d, tf.zeros_like(d))
            grads_k[i] = tf.cast(tf.matmul(keep[i], d, transpose_a=True), tf.float32)
            grads_b[i] = tf.reduce_sum(tf.cast(d, tf.float32), 0)
            d = tf.matmul(d, tf.cast(weights[i], compute), transpose_b=True)
        return [tf.cast(d, tf.float32)] + grads_k + grads_b

    @tf.custom_gradient
    def mlp(x, *weights):
        y, keep = forward(x, *weights)

        def grad(dy, variables=None):
            out = backward(dy, keep, *weights)
            return out, [None] * len(variables or [])
        return y, grad

    return lambda x: mlp(x, *[tf.convert_to_tensor(w) for w in kernels + biases])


def _attention(pairs: int, sequence: int, compute):
    """(forward, inputs, variables) of the target attention of 128 users × pairs / 128
    candidates (the model's einsums and masked softmax)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    users, width, dim = 128, 48, 32
    target = tf.random.stateless_normal([pairs // users, width], seed=[0, 1])
    seq = tf.random.stateless_normal([users, sequence, width], seed=[0, 2])
    mask = tf.random.stateless_uniform([users, sequence], seed=[0, 3]) < 0.7
    query, key, value = [tf.Variable(tf.random.stateless_normal([width, dim], seed=[1, i]) * 0.1)
                         for i in range(3)]

    def forward(inputs):
        target, seq, mask = inputs
        q = tf.matmul(tf.cast(target, compute), tf.cast(query, compute))
        k = tf.einsum("ble,ed->bld", tf.cast(seq, compute), tf.cast(key, compute))
        v = tf.einsum("ble,ed->bld", tf.cast(seq, compute), tf.cast(value, compute))
        logits = tf.einsum("cd,bld->bcl", q, k) / tf.cast(dim ** 0.5, compute)
        logits = tf.where(mask[:, None, :], logits, tf.fill(tf.shape(logits),
                                                             tf.cast(-1e9, compute)))
        weights = tf.nn.softmax(logits, axis=-1)
        return tf.cast(tf.einsum("bcl,bld->bcd", weights, v), tf.float32)

    return forward, (target, seq, mask), [query, key, value]


def _timed_step(mode: str, steps: int, forward, inputs, variables) -> float:
    """Best ms of ``steps`` steps (forward, mean-square loss, gradients) after 3 warm-up
    steps, ``mode`` deciding what XLA compiles."""
    import time  # pylint: disable=import-outside-toplevel

    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    inner = tf.function(forward, jit_compile=True) if mode == "nested" else forward

    @tf.function(jit_compile=(mode == "xla"))
    def step(inputs):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(inner(inputs)))
        return loss, tape.gradient(loss, variables)

    for _ in range(3):
        step(inputs)[0].numpy()
    best = float("inf")
    for _ in range(steps):
        start = time.perf_counter()
        step(inputs)[0].numpy()
        best = min(best, time.perf_counter() - start)
    return best * 1000.0


def run_child(mode: str, dtype: str, args: argparse.Namespace) -> float:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if mode != "graph":
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + XLA_FLAGS).strip()
    cmd = [sys.executable, "-m", "benchmarks.xla_probe", "--child", mode, dtype,
           "--pairs", str(args.pairs), "--shape", args.shape, "--steps", str(args.steps),
           "--sequence", str(args.sequence)]
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{mode}/{dtype} failed:\n{out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def speedups(times: Dict[Tuple[str, str], List[float]]) -> List[Tuple[str, str, float, float,
                                                                       float]]:
    """(mode, dtype, median ms, × over graph in the same dtype, × over graph float32)."""
    median = {key: statistics.median(v) for key, v in times.items()}
    rows = []
    for dtype in DTYPES:
        for mode in MODES:
            ms = median[(mode, dtype)]
            rows.append((mode, dtype, ms, median[("graph", dtype)] / ms,
                         median[("graph", "float32")] / ms))
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per mode and round")
    parser.add_argument("--pairs", type=int, default=32768, help="rows of the MLP's input")
    parser.add_argument("--shape", choices=("2d", "3d", "attention"), default="2d",
                        help="the MLP on [pairs, 128] or [128, pairs/128, 128], or the target "
                             "attention of 128 users × pairs/128 candidates")
    parser.add_argument("--sequence", type=int, default=20,
                        help="--shape attention: exposures per user (L)")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        ms = child(args.child[0], args.child[1], args.pairs, args.shape, args.steps,
                   args.sequence)
        print(f"{ms:.3f}")
        return 0
    times: Dict[Tuple[str, str], List[float]] = {}
    order = [(m, d) for d in DTYPES for m in MODES]
    for r in range(args.rounds):
        for mode, dtype in (order if r % 2 == 0 else order[::-1]):
            ms = run_child(mode, dtype, args)
            times.setdefault((mode, dtype), []).append(ms)
            print(f"round {r + 1}/{args.rounds}: {mode:6s} {dtype:8s} {ms:8.1f} ms", flush=True)
    what = (f"target attention, L = {args.sequence}" if args.shape == "attention"
            else f"{args.shape} → [256, 128, 64]")
    print(f"\n{args.pairs:,} pairs: {what}, forward + backward, one thread; median of "
          f"{args.rounds} rounds (best of {args.steps} steps each)\n")
    print("| mode | dtype | ms/step | × graph, same dtype | × graph float32 |")
    print("|---|---|---|---|---|")
    for mode, dtype, ms, same, f32 in speedups(times):
        print(f"| {mode} | {dtype} | {ms:.1f} | ×{same:.2f} | ×{f32:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
