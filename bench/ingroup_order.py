"""Which channels inside a group go first: the order ``allocation_oracle.py --order`` can swap in.

The calibrated path ranks the atoms of a group by the output energy its consumers lose when a channel
is replaced by its mean, ``||W[:, c]||² · Var(x_c)`` summed over consumers (``activations.
data_aware_scores``). That score looks at each channel alone. The least-squares refit that follows
rebuilds a removed channel from the ones kept, so a channel the others predict well costs less than
its energy says, and one nothing else carries costs more. Two alternative orders, for a probe only:

- ``redundancy``: at every consumer that mixes channels (a Conv with ``group`` 1, a Gemm, a constant
  MatMul), channels are removed greedily by the error left after refitting the others
  (Optimal-Brain-Surgeon order on the input covariance Σ of that consumer: removing channel j costs
  ``||W[j]||² / P[j, j]`` with P = Σ⁻¹, then W and P are updated as if the rest were refit). A channel's
  score is the cumulative cost when it goes, so the greedy order is kept. The greedy runs per channel
  and per consumer: an atom of several channels, or one read by several consumers, sums their costs.
  Atoms with no mixing consumer keep their usual score.
- ``random``: a seeded permutation, to see how much the order matters at all.

Nothing in ``onnxcompress`` changes; ``install`` replaces ``CalibratedPruning.scores`` for one run.
"""

from __future__ import annotations

import numpy as np

from onnxcompress._ir_utils import const_array
from onnxcompress.pruning import calibrated
from onnxcompress.pruning.activations import consumer_slots, data_aware_scores, rebatch
from onnxcompress.runtime import Session

#: the ridge on Σ's diagonal, as a share of its mean (Σ of a ReLU feature map is often singular)
RIDGE = 1e-3


def mixes_channels(node) -> bool:
    """Whether every output of ``node`` reads every input channel (so a kept channel can stand in)."""
    if node.op_type == "Conv":
        g = node.attributes.get("group")
        return g is None or g.as_int() == 1
    return node.op_type in ("Gemm", "MatMul")


def channel_rows(a: np.ndarray, axis: int) -> np.ndarray:
    """``a`` as (positions, channels) float64 rows: every axis but ``axis`` flattened."""
    a = np.moveaxis(np.asarray(a, dtype=np.float64), axis, -1)
    return a.reshape(-1, a.shape[-1])


def input_covariances(model, batches, values: dict[str, int], centered: bool) -> dict[str, np.ndarray]:
    """Σ (channels x channels) of each named value along its channel axis, over every other axis."""
    session = Session(model, expose=list(values))
    gram = dict.fromkeys(values, 0.0)
    total = dict.fromkeys(values, 0.0)
    rows = dict.fromkeys(values, 0)
    for feeds in rebatch(batches):
        for name, a in session.run(feeds, list(values)).items():
            if name in values:
                x = channel_rows(a, values[name])
                gram[name] = gram[name] + x.T @ x
                total[name] = total[name] + x.sum(axis=0)
                rows[name] += len(x)
    mean = {n: total[n] / rows[n] for n in values}
    return {n: gram[n] / rows[n] - (np.outer(mean[n], mean[n]) if centered else 0.0) for n in values}


def greedy_costs(cols: np.ndarray, cov: np.ndarray, ridge: float = RIDGE) -> np.ndarray:
    """Cumulative refit error when each channel goes, in greedy OBS order (row c of ``cols`` is what
    channel c feeds into every output); strictly increasing along the order."""
    n = len(cols)
    w = cols.astype(np.float64).copy()
    p = np.linalg.inv(cov + np.eye(n) * ridge * max(float(np.trace(cov)) / n, 1e-12))
    alive = np.ones(n, dtype=bool)
    out = np.zeros(n)
    total = 0.0
    for _ in range(n):
        d = np.diag(p).copy()
        cost = np.where(alive, np.square(w).sum(axis=1) / np.maximum(d, 1e-300), np.inf)
        j = int(np.argmin(cost))
        total += max(float(cost[j]), 0.0) + 1e-12 * (1 + total)  # ties and zeros still order
        out[j] = total
        pj = p[:, j].copy()
        w -= np.outer(pj / p[j, j], w[j])
        p -= np.outer(pj, pj) / p[j, j]
        alive[j] = False
        w[j] = 0.0
        p[j, :] = 0.0
        p[:, j] = 0.0
        p[j, j] = 1.0  # never chosen again (alive is False); keeps the division finite
    return out


def redundancy_scores(cp, roots: np.ndarray) -> tuple[np.ndarray, set[int]]:
    base, used = data_aware_scores(cp.analysis, roots, cp.stats, variance=cp.recover != "none")
    slots = []
    for s in consumer_slots(cp.analysis):
        st = cp.stats.get(s.node.inputs[0].name)
        w = const_array(s.value)
        if (mixes_channels(s.node) and st is not None and w is not None and w.shape[s.axis] == len(st.mean)
                and len(s.ids) == len(st.mean)):
            slots.append((s, w))
    values = {s.node.inputs[0].name: cp.analysis.info[s.node.inputs[0]].axes[0] for s, _ in slots}
    covs = input_covariances(cp.reference, cp.fit, values, centered=cp.recover != "none")
    mixed = np.zeros(len(roots))
    has = np.zeros(len(roots), dtype=bool)
    for s, w in slots:
        cols = np.moveaxis(w.astype(np.float64), s.axis, 0).reshape(w.shape[s.axis], -1)
        np.add.at(mixed, roots[s.ids], greedy_costs(cols, covs[s.node.inputs[0].name]))
        has[roots[s.ids]] = True
    return np.where(has, mixed, base), used


def random_scores(cp, roots: np.ndarray, seed: int = 0) -> tuple[np.ndarray, set[int]]:
    _, used = data_aware_scores(cp.analysis, roots, cp.stats, variance=cp.recover != "none")
    return np.random.default_rng(seed).permutation(len(roots)).astype(np.float64) + 1.0, used


ORDERS = {"redundancy": redundancy_scores, "random": random_scores}


def install(order: str) -> None:
    """Replace ``CalibratedPruning.scores`` with ``order`` for the rest of this process."""
    fn = ORDERS[order]
    calibrated.CalibratedPruning.scores = lambda self, roots: fn(self, roots)
