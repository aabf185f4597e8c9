"""Layout rules: offsets (Concat, Split, Slice), repeats (Flatten, Reshape), axis moves
(Transpose, Squeeze, Unsqueeze); each checks exact ids, widths and the moved constants.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from onnxcompress.channels.rules._testing import Net

I64 = np.int64


#: the registered ops this file tests
COVERED = {"Concat", "Split", "Slice", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Gather"}


def check_concat() -> None:
    n = Net()
    x = n.input()
    a, b = n.conv(x, 3, 8, name="c1"), n.conv(x, 3, 4, name="c2")
    n.conv(n.op("Concat", [a, b], name="op", axis=1), 12, 2, name="c3")
    c = n.analyse(["c3"])
    want = np.concatenate([c.out_ids("c1"), c.out_ids("c2")])
    np.testing.assert_array_equal(c.ids("op"), want)
    np.testing.assert_array_equal(c.in_ids("c3"), want)
    assert c.blocks_at("op") == []
    c.assert_only_output_blocks()
    c.assert_free(want)
    assert c.widths() == [("c1", 8, 4), ("c2", 4, 2)]
    c.check_const({"c1": [1], "c2": [0, 3]}, "op")


def test_concat() -> None:
    check_concat()


def test_concat_with_an_untracked_input_fills_fixed_ids() -> None:
    n = Net()
    x = n.input()
    a = n.conv(x, 3, 8, name="c1")
    n.conv(n.op("Concat", [x, a], name="op", axis=1), 11, 2, name="c2")
    c = n.analyse(["c2"])
    ids = c.ids("op")
    np.testing.assert_array_equal(ids[3:], c.ids("c1"))
    assert c.analysis.fixed[ids[:3]].all() and not c.analysis.fixed[ids[3:]].any()
    assert c.widths() == [("c1", 8, 4)]


def test_concat_along_another_axis_ties_the_inputs() -> None:
    n = Net()
    x = n.input()
    a, b = n.conv(x, 3, 8, name="c1"), n.conv(x, 3, 8, name="c2")
    n.conv(n.op("Concat", [a, b], name="op", axis=2), 8, 2, name="c3")
    c = n.analyse(["c3"])
    np.testing.assert_array_equal(c.ids("op"), c.ids("c1"))
    assert c.same_atoms(c.ids("c1"), c.ids("c2"))
    assert c.widths() == [("c1+c2", 8, 4)]


def check_split() -> None:
    n = Net()
    a = n.conv(n.input(), 3, 8, name="c1")
    s0, s1 = n.op("Split", [a, n.const([3, 5], I64)], n_out=2, name="op", axis=1)
    n.conv(s0, 3, 2, name="c2")
    n.conv(s1, 5, 2, name="c3")
    c = n.analyse(["c2", "c3"])
    ids = c.ids("c1")
    np.testing.assert_array_equal(c.ids(s0), ids[:3])
    np.testing.assert_array_equal(c.ids(s1), ids[3:])
    np.testing.assert_array_equal(c.in_ids("c3"), ids[3:])
    assert c.node("op") in c.analysis.rewrites
    c.assert_only_output_blocks()
    # each part feeds its own consumer: two groups, halved separately; the kept count rounds up
    # (3 * 0.5 = 1.5 -> 2, 5 * 0.5 = 2.5 -> 3), so no group loses more than half
    assert c.widths() == [("c1", 3, 2), ("c1", 5, 3)]
    c.check_const({"c1": [4, 6]}, s1)
    c.check_const({"c1": [0, 5]}, s0)


def test_split() -> None:
    check_split()


def test_split_along_a_spatial_axis_keeps_channels() -> None:
    n = Net()
    a = n.conv(n.input(), 3, 8, name="c1")
    s0, s1 = n.op("Split", [a], n_out=2, name="op", axis=2, num_outputs=2)
    n.conv(s0, 8, 2, name="c2")
    n.conv(s1, 8, 2, name="c3")
    c = n.analyse(["c2", "c3"], check=False)
    np.testing.assert_array_equal(c.ids(s0), c.ids("c1"))
    np.testing.assert_array_equal(c.ids(s1), c.ids("c1"))


def check_slice() -> None:
    n = Net()
    a = n.conv(n.input(), 3, 8, name="c1")
    s = n.op("Slice", [a, n.const([2], I64), n.const([7], I64), n.const([1], I64)], name="op")
    n.conv(s, 5, 2, name="c2")
    c = n.analyse(["c2"])
    np.testing.assert_array_equal(c.ids("op"), c.ids("c1")[2:7])
    np.testing.assert_array_equal(c.in_ids("c2"), c.ids("c1")[2:7])
    c.assert_only_output_blocks()
    # the 5 read channels and the 3 sliced off (read by nobody) are separate groups (kept counts round up)
    assert c.widths() == [("c1", 3, 2), ("c1", 5, 3)]
    c.check_const({"c1": [3, 5]}, "op")


def test_slice() -> None:
    check_slice()


def test_slice_with_a_step_on_channels_blocks() -> None:
    n = Net()
    a = n.conv(n.input(), 3, 8, name="c1")
    s = n.op("Slice", [a, n.const([0], I64), n.const([8], I64), n.const([1], I64), n.const([2], I64)], name="op")
    n.conv(s, 4, 2, name="c2")
    c = n.analyse(["c2"])
    assert set(c.blocks_at("op")) == {("Slice", "Slice of channels with a step or on a split channel axis")}
    assert c.widths() == []


def check_flatten() -> None:
    n = Net()
    a = n.conv(n.input((1, 3, 2, 2)), 3, 4, name="c1")
    f = n.op("Flatten", [a], name="op", axis=1)
    w = n.const(n.rng.standard_normal((16, 5)))
    n.op("Gemm", [f, w], name="fc")
    c = n.analyse(["fc"])
    want = np.repeat(c.ids("c1"), 4)
    np.testing.assert_array_equal(c.ids("op"), want)
    assert c.axes("op") == (1,)
    assert c.slot("fc", "in")[:2] == (w, 0)
    np.testing.assert_array_equal(c.in_ids("fc"), want)
    c.assert_only_output_blocks()
    assert c.widths() == [("c1", 4, 2)]
    c.check_const({"c1": [1, 2]}, "op")


def test_flatten() -> None:
    check_flatten()


def check_reshape() -> None:
    """Reshape to [N, C*H*W] repeats each channel H*W times, like Flatten."""
    n = Net()
    a = n.conv(n.input((1, 3, 2, 2)), 3, 4, name="c1")
    r = n.op("Reshape", [a, n.const([1, 16], I64)], name="op")
    n.op("MatMul", [r, n.const(n.rng.standard_normal((16, 5)))], name="mm")
    c = n.analyse(["mm"])
    np.testing.assert_array_equal(c.ids("op"), np.repeat(c.ids("c1"), 4))
    np.testing.assert_array_equal(c.in_ids("mm"), np.repeat(c.ids("c1"), 4))
    c.assert_only_output_blocks()
    assert c.widths() == [("c1", 4, 2)]
    c.check_const({"c1": [0, 3]}, "op")


def test_reshape() -> None:
    check_reshape()


def check_channel_shuffle() -> None:
    """Reshape C into (2, 4), Transpose to (4, 2), Reshape back: ids follow, rows are tied."""
    n = Net()
    a = n.conv(n.input((1, 3, 2, 2)), 3, 8, name="c1")
    r = n.op("Reshape", [a, n.const([1, 2, 4, 2, 2], I64)], name="split")
    t = n.op("Transpose", [r], name="op", perm=[0, 2, 1, 3, 4])
    m = n.op("Reshape", [t, n.const([1, 8, 2, 2], I64)], name="merge")
    n.conv(m, 8, 2, name="c2")
    c = n.analyse(["c2"])
    ids = c.ids("c1")
    assert c.axes("split") == (1, 2) and c.axes("op") == (1, 2) and c.axes("merge") == (1,)
    np.testing.assert_array_equal(c.ids("split"), ids.reshape(2, 4))
    np.testing.assert_array_equal(c.ids("op"), ids.reshape(2, 4).T)
    np.testing.assert_array_equal(c.ids("merge"), ids.reshape(2, 4).T.ravel())
    assert c.same_atoms(ids[:4], ids[4:])  # both groups keep the same positions
    c.assert_only_output_blocks()
    assert c.widths() == [("c1", 8, 4)]
    c.check_const({"c1": [1]}, "merge")


def test_channel_shuffle_reshape_transpose() -> None:
    check_channel_shuffle()


def check_transpose() -> None:
    n = Net()
    a = n.conv(n.input(), 3, 8, name="c1")
    t = n.op("Transpose", [a], name="op", perm=[0, 2, 3, 1])
    w = n.const(n.rng.standard_normal((8, 5)))
    n.op("MatMul", [t, w], name="mm")
    c = n.analyse(["mm"])
    assert c.axes("op") == (3,)
    np.testing.assert_array_equal(c.ids("op"), c.ids("c1"))
    assert c.slot("mm", "in")[:2] == (w, 0)
    np.testing.assert_array_equal(c.in_ids("mm"), c.ids("c1"))
    c.assert_only_output_blocks()
    assert c.widths() == [("c1", 8, 4)]
    c.check_const({"c1": [2, 7]}, "op")


def test_transpose() -> None:
    check_transpose()


def check_squeeze_unsqueeze() -> None:
    n = Net()
    a = n.conv(n.input(), 3, 8, name="c1")
    u = n.op("Unsqueeze", [a, n.const([0], I64)], name="unsq")
    s = n.op("Squeeze", [u, n.const([0], I64)], name="sq")
    n.conv(s, 8, 2, name="c2")
    c = n.analyse(["c2"])
    assert c.axes("unsq") == (2,) and c.axes("sq") == (1,)
    np.testing.assert_array_equal(c.ids("unsq"), c.ids("c1"))
    np.testing.assert_array_equal(c.ids("sq"), c.ids("c1"))
    c.assert_only_output_blocks()
    assert c.widths() == [("c1", 8, 4)]
    c.check_const({"c1": [0, 6]}, "unsq")
    c.check_const({"c1": [0, 6]}, "sq")


def test_squeeze_and_unsqueeze() -> None:
    check_squeeze_unsqueeze()


def test_squeeze_of_the_channel_axis_blocks() -> None:
    n = Net()
    a = n.conv(n.input(), 3, 1, name="c1")
    n.op("Squeeze", [a, n.const([1], I64)], name="op")
    c = n.analyse(["op"])
    assert set(c.blocks_at("op")) == {("Squeeze", "Squeeze removes the channel axis")}


def check_gather() -> None:
    """A class token picked from (N, L, C) tokens: channels pass, and the MatMul after it reads them."""
    n = Net()
    a = n.conv(n.input(), 3, 8, name="c1")
    t = n.op("Transpose", [n.op("Reshape", [a, n.const([1, 8, 36], I64)], name="flat")], perm=[0, 2, 1])  # (1, 36, 8)
    g = n.op("Gather", [t, n.const(0, I64)], name="op", axis=1)  # (1, 8): the first token
    w = n.const(n.rng.standard_normal((8, 5)))
    n.op("MatMul", [g, w], name="mm")
    c = n.analyse(["mm"])
    assert c.axes("op") == (1,)
    np.testing.assert_array_equal(c.ids("op"), c.ids("c1"))
    np.testing.assert_array_equal(c.in_ids("mm"), c.ids("c1"))
    c.assert_only_output_blocks()
    assert c.widths() == [("c1", 8, 4)]
    c.check_const({"c1": [1, 5]}, "op")


def test_gather() -> None:
    check_gather()


def test_gather_of_rows_keeps_channel_axes_in_place() -> None:
    n = Net()
    a = n.conv(n.input(), 3, 8, name="c1")
    g = n.op("Gather", [a, n.const([[0, 1], [2, 3]], I64)], name="op", axis=2)  # (1, 8, 2, 2, 6)
    c = n.analyse([n.op("ReduceMean", [g, n.const([2, 3, 4], I64)], keepdims=0)], check=False)
    assert c.axes("op") == (1,)


def test_gather_along_the_channel_axis_blocks() -> None:
    n = Net()
    a = n.conv(n.input(), 3, 8, name="c1")
    n.op("Gather", [a, n.const([0, 2], I64)], name="op", axis=1)
    c = n.analyse(["op"])
    assert set(c.blocks_at("op")) == {("Gather", "Gather picks positions we do not track (along the channel axis)")}
    assert c.analysis.fixed[c.out_ids("c1")].all()


def test_an_embedding_lookup_is_a_source() -> None:
    """Gather(table (vocab, E), token ids): E prunable columns; a removed column is 0 downstream."""
    n = Net()
    tok = n.input((1, 4), name="tok", dtype=TensorProto.INT64)
    emb = n.op("Gather", [n.const(n.rng.standard_normal((10, 6))), tok], name="emb")
    y = n.op("MatMul", [n.op("Relu", [emb], name="act"), n.const(n.rng.standard_normal((6, 2)))], name="y")
    c = n.analyse([y])
    assert c.axes("emb") == (2,) and c.slot("emb", "out")[1] == 1
    assert c.widths() == [("emb", 6, 3)]
    removed = c.removed_mask({"emb": [1, 4]})
    got = c.rule_consts(removed)["act"]
    np.testing.assert_array_equal(np.isnan(got), [True, False, True, True, False, True])
    assert got[1] == 0.0 and got[4] == 0.0
    # a table also read elsewhere (tied input and output embeddings) keeps its columns
    n2 = Net()
    table = n2.const(n2.rng.standard_normal((10, 6)))
    e2 = n2.op("Gather", [table, n2.input((1, 4), name="tok", dtype=TensorProto.INT64)], name="emb")
    y2 = n2.op("MatMul", [e2, n2.op("Transpose", [table], perm=[1, 0])], name="y")
    assert n2.analyse([y2]).widths() == []
