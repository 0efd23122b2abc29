"""benchmarks.xla_probe: the speed-up table from measured times (no TensorFlow here)."""

import pytest

from benchmarks import xla_probe


def test_speedups_are_ratios_of_medians_per_dtype_and_against_float32_graph():
    # medians: graph f32 200, xla f32 250, nested f32 400; graph bf16 100, xla bf16 40,
    # nested bf16 80. xla bf16: 100/40 = ×2.5 over the bf16 graph, 200/40 = ×5 over f32.
    times = {("graph", "float32"): [190.0, 200.0, 260.0], ("xla", "float32"): [250.0],
             ("nested", "float32"): [400.0, 400.0],
             ("graph", "bfloat16"): [100.0, 90.0, 110.0], ("xla", "bfloat16"): [40.0],
             ("nested", "bfloat16"): [80.0]}
    rows = {(m, d): (ms, same, f32) for m, d, ms, same, f32 in xla_probe.speedups(times)}
    assert rows[("graph", "float32")] == (200.0, 1.0, 1.0)
    assert rows[("xla", "float32")] == (250.0, pytest.approx(0.8), pytest.approx(0.8))
    assert rows[("nested", "float32")] == (400.0, 0.5, 0.5)
    assert rows[("graph", "bfloat16")] == (100.0, 1.0, 2.0)
    assert rows[("xla", "bfloat16")] == (40.0, 2.5, 5.0)
    assert rows[("nested", "bfloat16")] == (80.0, 1.25, 2.5)
    assert [k[:2] for k in xla_probe.speedups(times)] == [
        (m, d) for d in xla_probe.DTYPES for m in xla_probe.MODES]
