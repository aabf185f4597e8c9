"""Conv and ConvTranspose rules: filters, consumer slots, depthwise and grouped ties, constants."""

from __future__ import annotations

import numpy as np

from onnxcompress.channels.rules._testing import Net


#: the registered ops this file tests
COVERED = {"Conv", "ConvTranspose"}


def check_conv() -> None:
    """group 1: new prunable filters on W axis 0 (and bias), the consumer's W axis 1 reads them."""
    n = Net()
    a = n.conv(n.input(), 3, 8, name="c1")
    n.conv(a, 8, 4, name="c2")
    c = n.analyse(["c2"])
    ids = c.ids("c1")
    assert c.axes("c1") == (1,)
    w1, b1 = n.inits[0].name, n.inits[1].name
    assert [(v, ax) for v, ax, _ in c.slots("c1")] == [(w1, 0), (b1, 0)]
    assert [s[1] for s in c.slots("c1")] == [0, 0]
    np.testing.assert_array_equal(c.out_ids("c1"), ids)
    np.testing.assert_array_equal(c.slot("c1", "bias")[2], ids)
    assert c.slot("c2", "in")[:2] == (n.inits[2].name, 1)
    np.testing.assert_array_equal(c.in_ids("c2"), ids)
    assert c.analysis.source[ids].all()
    c.assert_free(ids)
    c.assert_only_output_blocks()
    assert c.widths() == [("c1", 8, 4)]
    assert c.widths(ratio=0.3, round_to=2) == [("c1", 8, 6)]
    # A zeroed filter outputs its bias; with zero_bias, 0.
    bias = np.frombuffer(n.inits[1].raw_data, np.float32)
    np.testing.assert_allclose(c.check_const({"c1": [1, 4, 6]}, "c1"), bias[[1, 4, 6]], rtol=1e-6)
    np.testing.assert_array_equal(c.check_const({"c1": [2]}, "c1", zero_bias=True), [0.0])


def test_conv() -> None:
    check_conv()


def check_depthwise() -> None:
    """Depthwise with multiplier 2: output j follows input j // 2; the conv is rewritten."""
    n = Net()
    a = n.conv(n.input(), 3, 4, name="c1")
    d = n.conv(a, 4, 8, k=3, group=4, name="dw")
    n.conv(d, 8, 2, name="c2")
    c = n.analyse(["c2"])
    np.testing.assert_array_equal(c.ids("dw"), np.repeat(c.ids("c1"), 2))
    np.testing.assert_array_equal(c.out_ids("dw"), np.repeat(c.out_ids("c1"), 2))
    assert c.slots("dw", "in") == []
    assert c.node("dw") in c.analysis.rewrites
    c.assert_only_output_blocks()
    assert c.widths() == [("c1+dw", 8, 4)]  # 4 atoms of 2 depthwise filters each
    bias = np.frombuffer(n.inits[3].raw_data, np.float32)
    np.testing.assert_allclose(c.check_const({"c1": [0, 3]}, "dw"), bias[[0, 1, 6, 7]], rtol=1e-6)


def test_depthwise_conv() -> None:
    check_depthwise()


def test_grouped_conv_ties_the_kth_channel_of_every_group() -> None:
    n = Net()
    a = n.conv(n.input(), 3, 8, name="c1")
    g = n.conv(a, 8, 12, group=2, name="gc")
    n.conv(g, 12, 2, name="c2")
    c = n.analyse(["c2"])
    r = c.roots
    x, y = r[c.ids("c1")].reshape(2, 4), r[c.ids("gc")].reshape(2, 6)
    np.testing.assert_array_equal(x[0], x[1])
    np.testing.assert_array_equal(y[0], y[1])
    assert len(set(x[0])) == 4 and len(set(y[0])) == 6
    np.testing.assert_array_equal(c.in_ids("gc"), c.ids("c1")[:4])  # one group's input columns
    c.assert_only_output_blocks()
    assert c.widths() == [("c1", 8, 4), ("gc", 12, 6)]


def check_conv_transpose() -> None:
    """ConvTranspose: input channels on W axis 0, new filters on W axis 1."""
    n = Net()
    a = n.conv(n.input(), 3, 8, name="c1")
    w = n.const(n.rng.standard_normal((8, 4, 2, 2)) * 0.4)
    bt = np.array([0.7, -1.1, 0.4, 1.9], np.float32)
    t = n.op("ConvTranspose", [a, w, n.const(bt)], name="ct", strides=[2, 2], kernel_shape=[2, 2])
    n.conv(t, 4, 2, name="c2")
    c = n.analyse(["c2"])
    assert c.slot("ct", "in")[:2] == (w, 0)
    np.testing.assert_array_equal(c.in_ids("ct"), c.ids("c1"))
    assert c.slot("ct", "out")[:2] == (w, 1)
    np.testing.assert_array_equal(c.out_ids("ct"), c.ids("ct"))
    np.testing.assert_array_equal(c.slot("ct", "bias")[2], c.ids("ct"))
    assert c.ids("ct").size == 4 and c.analysis.source[c.ids("ct")].all()
    c.assert_free(c.ids("ct"))
    c.assert_only_output_blocks()
    assert c.widths() == [("c1", 8, 4), ("ct", 4, 2)]
    np.testing.assert_allclose(c.check_const({"ct": [1, 3]}, "ct"), bt[[1, 3]], rtol=1e-6)


def test_conv_transpose() -> None:
    check_conv_transpose()
