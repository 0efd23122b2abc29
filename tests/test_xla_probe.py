"""benchmarks.xla_probe: the speed-up table from measured times (no TensorFlow here)."""

import pytest

from benchmarks import xla_probe


def test_speedups_are_ratios_of_medians_per_dtype_and_against_float32_graph():
    # medians: graph f32 200, xla f32 250, nested f32 400; graph bf16 100, xla bf16 40,
    # nested bf16 80. xla bf16: 100/40 = ×2.5 over the bf16 graph, 200/40 = ×5 over f32.
    times = {("graph", "float32"): [190.0, 200.0, 260.0], ("xla", "float32"): [250.0],
             ("nested", "float32"): [400.0, 400.0],
             ("graph", "bfloat16"): [100.0, 90.0, 110.0], ("xla", "bfloat16"): [40.0],
             ("nested", "bfloat16"): [80.0], ("pieces", "float32"): [100.0],
             ("pieces", "bfloat16"): [200.0]}
    rows = {(m, d): (ms, same, f32) for m, d, ms, same, f32 in xla_probe.speedups(times)}
    assert rows[("graph", "float32")] == (200.0, 1.0, 1.0)
    assert rows[("xla", "float32")] == (250.0, pytest.approx(0.8), pytest.approx(0.8))
    assert rows[("nested", "float32")] == (400.0, 0.5, 0.5)
    assert rows[("graph", "bfloat16")] == (100.0, 1.0, 2.0)
    assert rows[("xla", "bfloat16")] == (40.0, 2.5, 5.0)
    assert rows[("nested", "bfloat16")] == (80.0, 1.25, 2.5)
    assert rows[("pieces", "float32")] == (100.0, 2.0, 2.0)
    assert rows[("pieces", "bfloat16")] == (200.0, 0.5, 1.0)
    assert [k[:2] for k in xla_probe.speedups(times)] == [
        (m, d) for d in xla_probe.DTYPES for m in xla_probe.MODES]


def test_pieces_hand_written_backward_equals_autodiff():
    # The "pieces" mode's MLP (jit-compiled forward, hand-written jit-compiled backward) must
    # give the plain MLP's output and the gradients TensorFlow's autodiff takes of it.
    import tensorflow as tf

    x = tf.random.stateless_normal([6, 4], seed=[0, 1])
    kernels = [tf.Variable(tf.random.stateless_normal(s, seed=[1, i]))
               for i, s in enumerate([(4, 5), (5, 3)])]
    biases = [tf.Variable(tf.random.stateless_normal([u], seed=[2, i]) * 0.1)
              for i, u in enumerate((5, 3))]
    variables = kernels + biases

    def plain(inputs):
        h = inputs
        for kernel, bias in zip(kernels, biases):
            h = tf.nn.relu(tf.matmul(h, kernel) + bias)
        return h

    pieces = xla_probe._pieces(kernels, biases, tf.float32)
    results = []
    for forward in (plain, pieces):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = forward(x)
            loss = tf.reduce_sum(y * tf.range(1.0, 4.0))
        results.append((y, tape.gradient(loss, [x] + variables)))
    (y_plain, g_plain), (y_pieces, g_pieces) = results
    assert float(tf.reduce_max(y_plain)) > 0.0  # some units active: the mask matters
    tf.debugging.assert_near(y_pieces, y_plain, rtol=1e-5, atol=1e-6)
    for got, want in zip(g_pieces, g_plain):
        tf.debugging.assert_near(got, want, rtol=1e-5, atol=1e-6)
