import numpy as np
import onnx
import onnx.helper as oh

from onnxcompress.runtime import Session


def _matmul_model() -> onnx.ModelProto:
    """y = x @ w, both graph inputs: x batched (N, 64), w a (64, 64) feed that is not a batch."""
    f = onnx.TensorProto.FLOAT
    g = oh.make_graph([oh.make_node("MatMul", ["x", "w"], ["y"])], "g",
                      [oh.make_tensor_value_info("x", f, ["N", 64]), oh.make_tensor_value_info("w", f, [64, 64])],
                      [oh.make_tensor_value_info("y", f, ["N", 64])])
    return oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)])


def test_shared_feeds_go_whole_to_every_batch_and_never_count_as_one():
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((3, 64)).astype(np.float32) for _ in range(2)]
    w = rng.standard_normal((64, 64)).astype(np.float32)
    s = Session(_matmul_model())
    got = s.run_all([{"x": x} for x in xs], shared={"w": w})["y"]
    assert got.shape == (6, 64)
    np.testing.assert_allclose(got, np.concatenate(xs) @ w, rtol=1e-5, atol=1e-4)
    # merged into the batches, the (64, 64) feed is the largest array and is taken for the batch:
    # the two runs' outputs (3 rows each) are then joined along the wrong axis (what the
    # sensitivity sweep got from a feed bigger than its samples)
    merged = s.run_all([{"x": x, "w": w} for x in xs])["y"]
    assert merged.shape != (6, 64)
