"""The sensitivity sweep with the refit's compensation: removed channels predicted from the kept ones.

The forward sweep (``sensitivity.MaskedModel``) replaces a removed channel by its calibrated
mean, which is what bias compensation gives. The written model is then refit: each consumer's
weights are solved again by least squares on its kept inputs, against the original's output.
For a consumer that mixes channels at one position (a 1x1 conv, a Gemm, a MatMul with a
constant weight), that refit is exactly the consumer reading, in place of each removed
channel, its best linear prediction from the kept ones:

    x_R ~ mu_R + B (x_K - mu_K),   B = S_RK (S_KK + lam I)^-1

with S the channels' calibrated covariance. A channel the others predict well costs almost
nothing after the refit, however large its own variance; that is what the mean alone cannot
see. So here the sweep feeds each such consumer ``x * mask + shift + P (x - mu)``, with
``P[R, K] = B`` for the candidate's removed channels and zero elsewhere.

Only values whose every consumer is such a layer get the prediction (a k x k conv's refit
also draws on neighbouring positions, so there the prediction is a lower bound on what the
refit recovers; a depthwise conv's removed input is a removed output too, which nothing
predicts): elsewhere the sweep keeps the mean.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import onnx_ir as ir

from onnxcompress.pruning.activations import rebatch
from onnxcompress.runtime import Session

#: ridge on S_KK, relative to its mean diagonal (as the refit's)
RIDGE = 1e-3
#: channels above which a value keeps the mean (the covariance is C x C float64)
MAX_CHANNELS = 2048


def predictable(node: ir.Node, rank: int, axis: int) -> str | None:
    """How ``node`` mixes the channels of its first input at one position: "conv" (a 1x1-style
    Conv read as channels at axis 1), "matmul" (channels last), or None when it does not."""
    if node.op_type == "Conv":
        group = next((a.as_int() for a in node.attributes.values() if a.name == "group"), 1)
        w = node.inputs[1] if len(node.inputs) > 1 else None
        if group != 1 or axis != 1 or rank not in (3, 4) or w is None or w.shape is None:
            return None
        return "conv" if all(int(d) == 1 for d in list(w.shape)[2:]) else None
    if node.op_type == "MatMul" and axis == rank - 1 and rank >= 2:
        return "matmul"
    if node.op_type == "Gemm" and axis == 1 and rank == 2:
        trans_a = next((a.as_int() for a in node.attributes.values() if a.name == "transA"), 0)
        return None if trans_a else "matmul"
    return None


def collect_covariance(model, batches, values: dict[str, int]) -> dict[str, np.ndarray]:
    """Each named value's channel covariance (C x C, float64, centered), streamed over ``batches``."""
    names = list(values)
    if not names:
        return {}
    session = Session(model, expose=names)
    sums: dict[str, list] = {}
    for feeds in rebatch(batches):
        outs = session.run(feeds, names)
        for n in names:
            a = np.asarray(outs[n], dtype=np.float64)
            a = np.moveaxis(a, values[n] % a.ndim, 0).reshape(a.shape[values[n] % a.ndim], -1)
            acc = sums.setdefault(n, [0.0, 0.0, 0])
            acc[0] = acc[0] + a @ a.T
            acc[1] = acc[1] + a.sum(axis=1)
            acc[2] += a.shape[1]
    out = {}
    for n, (g, s, c) in sums.items():
        mu = s / c
        out[n] = g / c - np.outer(mu, mu)
    return out


def prediction(cov: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """P (C x C): row r of a removed channel holds its regression on the kept channels."""
    c = len(removed)
    p = np.zeros((c, c), dtype=np.float64)
    r, k = np.flatnonzero(removed), np.flatnonzero(~removed)
    if not len(r) or not len(k):
        return p
    skk = cov[np.ix_(k, k)]
    lam = RIDGE * max(float(np.mean(np.diag(skk))), 1e-12)
    b = np.linalg.solve(skk + lam * np.eye(len(k)), cov[np.ix_(k, r)]).T  # (|R|, |K|)
    p[np.ix_(r, k)] = b
    return p


def add_prediction(proto: onnx.ModelProto, x: str, y: str, mean: np.ndarray, kind: str, rank: int,
                   dtype: np.dtype, tag: str, new_nodes: list) -> tuple[str, str, tuple[int, ...]]:
    """``y + P (x - mu)`` over ``x``'s channels: P a graph input, reshaped to a Conv weight [C, C, 1..]
    or MatMul's right factor [C, C]. Returns the new value's name, P's input name and its fed shape."""
    c = len(mean)
    mshape = [1] * rank
    mshape[1 if kind == "conv" else rank - 1] = c
    mu, pin, xc, pr, out = (f"__oc_pred_mu_{tag}", f"__oc_pred_{tag}", f"__oc_pred_xc_{tag}",
                            f"__oc_pred_y_{tag}", f"__oc_predicted_{tag}")
    proto.graph.initializer.append(onnx.numpy_helper.from_array(mean.astype(dtype).reshape(mshape), mu))
    # P is fed as (1, C, C) and reshaped in the graph: a feed whose first axis equals the batch
    # size would be split with the samples (``runtime.split_feeds``)
    wshape = (c, c) + ((1,) * (rank - 2) if kind == "conv" else ())
    elem = oh.np_dtype_to_tensor_dtype(dtype)
    proto.graph.input.append(oh.make_tensor_value_info(pin, elem, [1, c, c]))
    proto.graph.initializer.append(onnx.numpy_helper.from_array(np.array(wshape, np.int64), pin + "_shape"))
    op = "Conv" if kind == "conv" else "MatMul"
    new_nodes += [oh.make_node("Sub", [x, mu], [xc]), oh.make_node("Reshape", [pin, pin + "_shape"], [pin + "_w"]),
                  oh.make_node(op, [xc, pin + "_w"], [pr]), oh.make_node("Add", [y, pr], [out])]
    return out, pin, (1, c, c)


def feed(p: np.ndarray, kind: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """P as the graph input takes it (``shape``: (1, C, C)): a Conv weight's rows (out = removed
    channels) or MatMul's right factor."""
    return (p if kind == "conv" else p.T).astype(dtype).reshape(shape)


def predictable_values(analysis, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, str]]:
    """Consumer inputs whose every consumer mixes channels at one position: name -> (axis, kind)."""
    from onnxcompress.pruning.activations import consumer_slots

    kinds: dict[str, set] = {}
    axes: dict[str, int] = {}
    for s in consumer_slots(analysis):
        x = s.node.inputs[0]
        if x.name not in shapes:
            continue
        rank = len(shapes[x.name])
        axis = analysis.info[x].axes[0] % rank
        axes[x.name] = axis
        kinds.setdefault(x.name, set()).add(predictable(s.node, rank, axis))
    out = {}
    for name, ks in kinds.items():
        c = shapes[name][axes[name]]
        if len(ks) == 1 and None not in ks and isinstance(c, int) and 1 < c <= MAX_CHANNELS:
            out[name] = (axes[name], next(iter(ks)))
    return out
