"""First-order sensitivity: every group's drift curve from a few backward passes, not groups x ratios runs.

The forward sweep (``sensitivity.measure``) runs the masked model once per group and ratio.
Here the same masked graph (``x * mask + shift`` at every consumer input) runs once in the
torch executor of the ``finetune`` extra, and the output change of removing any set S of
channels is taken to first order. Removing channel c of a masked input replaces ``x_c`` by
its calibrated mean, so

    d_out ~= sum over c in S of  J_c (mean_c - x_c),

and, with ``g = d(u . out) / d(masked input)`` for a random direction ``u`` in output space,

    u . d_out ~= sum over c in S of  a_c,   a_c = mean_c * d(u.out)/d shift_c - d(u.out)/d mask_c.

Since ``E[(u . d_out)^2] = ||d_out||^2`` for ``u ~ N(0, I)`` (Hutchinson), averaging the square
of that sum over ``PROJECTIONS`` directions and the samples estimates ||d_out||^2 for every
candidate set at once; the drift is its square root over ||out||, the relative L2 the sweep
measures. Per sample this costs one forward and ``PROJECTIONS`` backward passes, whatever the
number of groups.

What it does not see: second-order effects (a removal that switches ReLUs off, several
removals interacting) and the binarized F1 of probability maps, which the sweep adds to
the drift. ``bench/TAYLOR.md`` measures both against the sweep on real models.
"""

from __future__ import annotations

import logging

import numpy as np

from onnxcompress.pruning.plan import Group, _step
from onnxcompress.pruning.sensitivity import RATIOS, GroupSensitivity, MaskedModel, group_curve, removal_for

logger = logging.getLogger(__name__)

#: random output directions per sample (the estimate's relative spread is about sqrt(2 / (K * samples)))
PROJECTIONS = 8


class TaylorUnavailable(Exception):
    """The first-order estimate cannot run on this graph; the forward sweep is used instead."""


def estimate(
    masked: MaskedModel,
    reference,
    groups: list[Group],
    scores: dict[int, float],
    roots: np.ndarray,
    batches: list[dict[str, np.ndarray]],
    macs_per_atom: dict[tuple[int, ...], float],
    round_to: int,
    ratios: tuple[float, ...] = RATIOS,
    progress=None,
    seed: int = 0,
) -> list[GroupSensitivity]:
    """ε per group and ratio, estimated to first order (see the module docstring)."""
    try:
        import torch

        from onnxcompress.finetune.targets import differentiable_targets
        from onnxcompress.finetune.graph_module import GraphModule, unsupported_ops
    except ImportError as exc:
        raise TaylorUnavailable("the finetune extra (torch) is not installed") from exc
    missing = unsupported_ops(masked.proto)
    if missing:
        raise TaylorUnavailable("the torch executor cannot run " + ", ".join(sorted(missing)))
    targets, _ = differentiable_targets(reference)
    if not targets:
        raise TaylorUnavailable("no float output to differentiate")
    for _s, m, *_rest in masked.slots:
        if masked.axis[m] == 0:
            raise TaylorUnavailable("a masked input has its channels on axis 0 (no per-sample masks)")
    module = GraphModule(masked.proto, trainable=lambda *a: False)
    module.eval()
    gen = torch.Generator().manual_seed(seed)
    contrib: list[list[np.ndarray]] = [[] for _ in masked.slots]  # per slot: (n, K, C) arrays
    out_sq = 0.0
    total = len(batches)
    for b, feeds in enumerate(batches):
        n = len(next(iter(feeds.values())))
        x = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items()}
        leaves = []
        for s, m, sh, shape, mean, dtype in masked.slots:
            per_sample = [n] + list(shape[1:])
            mt = torch.ones(per_sample, dtype=torch.float32, requires_grad=True)
            bt = torch.zeros(per_sample, dtype=torch.float32, requires_grad=True)
            x[m], x[sh] = mt, bt
            leaves += [mt, bt]
        outs = module(x, outputs=targets)
        flat = [o.float() for o in outs.values()]
        out_sq += float(sum(o.detach().double().square().sum() for o in flat))
        for k in range(PROJECTIONS):
            proj = sum((torch.randn(o.shape, generator=gen) * o).sum() for o in flat)
            grads = torch.autograd.grad(proj, leaves, retain_graph=k < PROJECTIONS - 1, allow_unused=True)
            for i, (s, m, sh, shape, mean, dtype) in enumerate(masked.slots):
                gm, gb = grads[2 * i], grads[2 * i + 1]
                if gm is None:
                    a = np.zeros((n, len(mean)))
                else:
                    gm_np = gm.detach().double().reshape(n, -1).numpy()
                    gb_np = gb.detach().double().reshape(n, -1).numpy()
                    a = mean[None, :] * gb_np - gm_np
                if k == 0:
                    contrib[i].append(np.zeros((n, PROJECTIONS, len(mean))))
                contrib[i][-1][:, k, :] = a
        if progress is not None:
            progress(b + 1, total)
    a_all = [np.concatenate(c) for c in contrib]  # per slot (N, K, C)

    def drift_of(removed: np.ndarray) -> float:
        s = 0.0
        for (slot, *_r), a in zip(masked.slots, a_all):
            gone = removed[slot.ids]
            if gone.any():
                s = s + a[:, :, gone].sum(axis=2)
        if isinstance(s, float):
            return 0.0
        return float(np.sqrt(np.mean(np.square(s), axis=1).sum() / max(out_sq, 1e-30)))

    blind = masked.unmeasured(roots)
    out = []
    for g in groups:
        n_atoms = len(g.atoms)
        gs = GroupSensitivity(g.key, g.names, n_atoms, macs_per_atom.get(g.key, 0.0), step=_step(g, round_to))
        gs.unmeasured = next((blind[a] for a in g.atoms if a in blind), None)
        if gs.unmeasured is None:
            gs.curve = group_curve(g, ratios, round_to, lambda k, g=g: drift_of(removal_for(g, k, scores, len(roots), roots)))
        out.append(gs)
    return out
