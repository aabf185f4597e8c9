"""Per-channel normalisations: BN's four statistics and InstanceNorm's scale/bias are param slots."""

from __future__ import annotations

import numpy as np

from onnxcompress.channels.rules._testing import Net

BIAS = np.array([-1.2, 0.3, 1.4, -0.6, 0.9, 2.3, -0.2, 0.7], np.float32)


#: the registered ops this file tests
COVERED = {"BatchNormalization", "InstanceNormalization"}


def check_batchnorm() -> None:
    n = Net()
    a = n.conv(n.input(), 3, 8, bias=BIAS, name="c1")
    r = n.rng
    stats = [r.uniform(0.5, 1.5, 8), r.standard_normal(8), r.standard_normal(8) * 0.3, r.uniform(0.5, 1.5, 8)]
    params = [n.const(p) for p in stats]
    n.conv(n.op("BatchNormalization", [a] + params, name="op", epsilon=1e-3), 8, 4, name="c2")
    c = n.analyse(["c2"])
    np.testing.assert_array_equal(c.ids("op"), c.ids("c1"))
    assert [(v, ax) for v, ax, _ in c.slots("op", "param")] == [(p, 0) for p in params]
    for _, _, ids in c.slots("op", "param"):
        np.testing.assert_array_equal(ids, c.ids("c1"))
    assert c.blocks_at("op") == []
    c.assert_only_output_blocks()
    assert c.widths() == [("c1", 8, 4)]
    scale, beta, mean, var = stats
    want = scale * (BIAS - mean) / np.sqrt(var + 1e-3) + beta
    np.testing.assert_allclose(c.check_const({"c1": [0, 2, 5]}, "op"), want[[0, 2, 5]], rtol=1e-5)


def test_batchnorm() -> None:
    check_batchnorm()


def test_batchnorm_with_runtime_statistics_blocks() -> None:
    n = Net()
    x = n.input()
    a = n.conv(x, 3, 8, name="c1")
    m = n.op("Identity", [n.const(np.zeros(8))])  # not an initializer: computed at run time
    ones = n.const(np.ones(8))
    n.conv(n.op("BatchNormalization", [a, ones, n.const(np.zeros(8)), m, n.const(np.ones(8))], name="op"), 8, 4, name="c2")
    c = n.analyse(["c2"])
    assert set(c.blocks_at("op")) == {("BatchNormalization", "BatchNormalization with run-time statistics")}


def check_instancenorm() -> None:
    n = Net()
    a = n.conv(n.input(), 3, 8, name="c1")
    scale, bias = n.const(np.linspace(0.5, 1.5, 8)), n.const(BIAS)
    n.conv(n.op("InstanceNormalization", [a, scale, bias], name="op"), 8, 4, name="c2")
    c = n.analyse(["c2"])
    np.testing.assert_array_equal(c.ids("op"), c.ids("c1"))
    assert [(v, ax) for v, ax, _ in c.slots("op", "param")] == [(scale, 0), (bias, 0)]
    for _, _, ids in c.slots("op", "param"):
        np.testing.assert_array_equal(ids, c.ids("c1"))
    c.assert_only_output_blocks()
    assert c.widths() == [("c1", 8, 4)]
    # a constant channel normalises to 0: the output is InstanceNorm's bias
    np.testing.assert_allclose(c.check_const({"c1": [1, 6]}, "op"), BIAS[[1, 6]], rtol=1e-5)


def test_instancenorm() -> None:
    check_instancenorm()
