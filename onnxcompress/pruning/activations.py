"""What real inputs say about channels: per-feature activation statistics at every consumer.

A removed channel's damage is what its consumers lose: the consumer's weight column
times the channel's activation. With calibration data we measure, at the input of every
Conv/ConvTranspose/Gemm/MatMul that reads prunable channels, each feature's mean and variance over
samples and positions, streamed batch by batch (float64 sums, bounded memory).

The data-aware score of an atom (``criterion="activation"``) sums, over its consumer
columns k, ``||W[:, k]||^2 * Var(x_k)``: the output energy the consumer loses when the
channel is replaced by its mean, which is what bias compensation does (FLAP's
fluctuation metric, on convolutions too). Without recovery, E[x_k^2] replaces the variance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_ir as ir

from onnxcompress.channels.state import AnalysisResult, Slot
from onnxcompress.runtime import Session



@dataclass
class FeatureStats:
    """Per-feature mean and second moment of one tensor, along its channel axis."""

    axis: int
    mean: np.ndarray
    sq: np.ndarray  # E[x^2]
    count: int

    @property
    def var(self) -> np.ndarray:
        return np.maximum(self.sq - self.mean**2, 0.0)


def consumer_slots(analysis: AnalysisResult) -> list[Slot]:
    """The ``in`` slots whose consumer we can read features for (single channel axis).

    A consumer is an op whose rule has consumer hooks: its input channels are measured, masked
    in the sensitivity model and compensated by their calibrated mean (a group read by any
    other op cannot be simulated: see ``sensitivity.MaskedModel.unmeasured``).
    """
    from onnxcompress.channels.rules import consumer_of

    out = []
    for s in analysis.slots:
        if s.role != "in" or consumer_of(s.node) is None or not s.node.inputs:
            continue
        info = analysis.info.get(s.node.inputs[0])
        if info is not None and len(info.axes) == 1:
            out.append(s)
    return out


#: samples per run when many intermediate values are exposed at once (bounds peak memory)
EXPOSED_BATCH = 8
#: and input bytes per such run: every exposed activation is held at once, so a 640x640
#: detector (4.9 MB a sample) runs one sample at a time
EXPOSED_INPUT_BYTES = 2 << 20


def rebatch(batches, size: int = EXPOSED_BATCH):
    """The same samples in feeds of at most ``size`` and ``EXPOSED_INPUT_BYTES`` (fixed-batch models are already 1 each)."""
    for feeds in batches:
        n = len(next(iter(feeds.values())))
        per_sample = sum(v.nbytes for v in feeds.values()) / max(n, 1)
        step = max(1, min(size, int(EXPOSED_INPUT_BYTES // max(per_sample, 1))))
        for i in range(0, n, step):
            yield {k: v[i : i + step] for k, v in feeds.items()} if n > step else feeds
            if n <= step:
                break


def unread_outputs(analysis: AnalysisResult) -> dict[str, int]:
    """Outputs of filter layers with channels that no consumer slot reads (name -> channel axis).

    q's and k's channels in unfused attention under ``--attention dims`` meet only the scores
    product: the sensitivity model masks them where they are made (``MaskedModel``).
    """
    roots = analysis.uf.all_roots()
    read = {int(r) for s in consumer_slots(analysis) for r in np.unique(roots[s.ids])}
    fixed = {int(r) for r in np.unique(roots[np.flatnonzero(analysis.fixed)])}  # groups that never go
    out: dict[str, int] = {}
    for s in analysis.slots:
        v = s.node.outputs[0] if s.role == "out" and s.node.outputs else None
        info = analysis.info.get(v) if v is not None else None
        if info is None or len(info.axes) != 1:
            continue
        # a group no consumer reads and that may go (a fixed one, a graph output's, never does); the
        # read channels of the same output (v's beside q's and k's in a packed projection) are
        # masked here too, which repeats their consumers' masks harmlessly
        if {int(r) for r in np.unique(roots[info.ids])} - read - fixed:
            out[v.name] = info.axes[0]
    return out


def collect_stats(model: ir.Model | onnx.ModelProto, batches, values: dict[str, int]) -> dict[str, FeatureStats]:
    """Stream ``batches`` through ``model`` and reduce each named value to per-feature moments."""
    names = list(values)
    session = Session(model, expose=names)
    sums: dict[str, list] = {}
    for feeds in rebatch(batches):
        outs = session.run(feeds, names)
        for n in names:
            a = np.asarray(outs[n], dtype=np.float64)
            ax = values[n] % a.ndim
            other = tuple(i for i in range(a.ndim) if i != ax)
            cnt = a.size // a.shape[ax]
            acc = sums.setdefault(n, [0.0, 0.0, 0])
            acc[0] = acc[0] + a.sum(axis=other)
            acc[1] = acc[1] + np.square(a).sum(axis=other)
            acc[2] += cnt
    return {n: FeatureStats(values[n], s / c, q / c, c) for n, (s, q, c) in sums.items()}


def data_aware_scores(
    analysis: AnalysisResult, roots: np.ndarray, stats: dict[str, FeatureStats], *, variance: bool
) -> tuple[np.ndarray, set[int]]:
    """Score per root element, and the set of slot indices that contributed."""
    scores = np.zeros(len(roots), dtype=np.float64)
    used: set[int] = set()
    slot_index = {id(s): i for i, s in enumerate(analysis.slots)}
    for s in consumer_slots(analysis):
        st = stats.get(s.node.inputs[0].name)
        w = _const(s.value)
        if st is None or w is None or w.shape[s.axis] != len(st.mean) or len(s.ids) != len(st.mean):
            continue
        cols = np.moveaxis(w.astype(np.float64), s.axis, 0).reshape(w.shape[s.axis], -1)
        energy = np.square(cols).sum(axis=1) * (st.var if variance else st.sq)
        np.add.at(scores, roots[s.ids], energy)
        used.add(slot_index[id(s)])
    return scores, used


def _const(v: ir.Value) -> np.ndarray | None:
    from onnxcompress._ir_utils import const_array

    return const_array(v)
