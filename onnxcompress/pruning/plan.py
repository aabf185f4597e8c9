"""Plan: which atoms go. Groups, importance, local/global selection, round_to.

A *group* is the set of atoms that live in exactly the same slots (the same convs' filters,
the same consumers): one layer, or one residual stage whose convs are tied by adds. The
ratio applies per group (local) or across groups (global), and each group's kept count is
rounded up to a multiple of ``round_to`` channels (so no group loses more than the ratio),
never above its width and never to zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from onnxcompress.channels.state import AnalysisResult
from onnxcompress.config import CompressConfig
from onnxcompress._parallel import parallel_map
from onnxcompress.importance import filter_norms, normalise_by_group


@dataclass
class Group:
    key: tuple[int, ...]
    atoms: list[int]  # root element ids
    channels_per_atom: int  # channels one atom removes from its widest filter slot
    keep: int = 0
    names: list[str] = field(default_factory=list)


@dataclass
class Plan:
    roots: np.ndarray  # root id of every element
    removed: np.ndarray  # bool per element
    groups: list[Group]
    blocked_groups: int
    scores: dict[int, float]
    #: sum of |w| (float64) of each scored weight, a by-product of its L1 filter norms (none with L2)
    l1_totals: dict = field(default_factory=dict)


def _round_keep(keep: float, n: int, step: int, floor_keep: int = 1) -> int:
    """The smallest multiple of ``step`` at or above ``keep`` (and ``floor_keep``), capped at ``n``.

    Rounding up means a group never loses more than the ratio asked of it: at ratio 0.05,
    a group of 10 or 12 with step 8 keeps all its channels rather than dropping to 8.
    Never 0: at least ``step`` (or ``n``, when the group is narrower than a step).
    """
    if n <= step:
        return n
    need = max(keep, floor_keep, 1)
    k = math.ceil(need / step - 1e-9) * step
    return min(max(k, step), n)


def make_plan(
    analysis: AnalysisResult,
    tensors: dict,
    config: CompressConfig,
    *,
    data_scores: tuple[np.ndarray, set[int]] | None = None,
    keep: dict[tuple[int, ...], int] | None = None,
) -> Plan:
    """Score atoms and choose which to remove. ``tensors`` maps slot values to numpy arrays.

    ``data_scores`` (a score per root, and the slots it was measured on) replaces the
    magnitude score in every group that has one of those slots. ``keep`` gives kept
    counts per group key (an error-driven allocation), overriding the ratio.
    """
    n_elem = len(analysis.uf.parent)
    roots = analysis.uf.all_roots()
    membership, scores, mult, names, totals = _score_atoms(analysis, roots, tensors, config.criterion)
    if data_scores is not None:
        measured, measured_slots = data_scores
        for r, slots in membership.items():
            if slots & measured_slots:
                scores[r] = float(measured[r])
    groups, blocked = _group_atoms(analysis, roots, membership, mult, names)

    for g in groups:
        g.keep = len(g.atoms)
    if keep is not None:
        for g in groups:
            g.keep = keep.get(g.key, len(g.atoms))
    elif config.ratio > 0:
        if config.scope == "local":
            _plan_local(groups, config)
        else:
            _plan_global(groups, scores, config)
    removed_roots = np.zeros(n_elem, dtype=bool)
    for g in groups:
        removed_roots[weakest_atoms(g, scores, len(g.atoms) - g.keep)] = True
    return Plan(
        roots=roots,
        removed=removed_roots[roots],
        groups=groups,
        blocked_groups=blocked,
        scores=scores,
        l1_totals=totals,
    )



def _score_atoms(analysis: AnalysisResult, roots: np.ndarray, tensors: dict, criterion: str):
    """Which slots each root lives in, its magnitude score, atoms per slot, filter names, and the
    total |w| of each weight scored by L1 norms (the sum of its filters')."""
    membership: dict[int, set[int]] = {}
    score_arr = np.zeros(len(roots), dtype=np.float64)
    mult: dict[tuple[int, int], int] = {}
    names: dict[int, set[str]] = {}
    # Groups without measured data keep a magnitude score (L1 unless L2 was asked for).
    norm = "l2" if criterion == "l2" else "l1"
    out_slots = [s for s in analysis.slots if s.role == "out"]
    filter_scores = dict(zip(map(id, out_slots), parallel_map(
        lambda job: filter_norms(job[0], job[1], norm), [(tensors[s.value], s.axis) for s in out_slots])))
    for si, slot in enumerate(analysis.slots):
        uniq, counts = np.unique(roots[slot.ids], return_counts=True)
        for root in uniq.tolist():
            membership.setdefault(root, set()).add(si)
        if slot.role == "out":
            np.add.at(score_arr, roots[slot.ids], filter_scores[id(slot)])
            label = slot.node.name or slot.node.op_type
            for root, c in zip(uniq.tolist(), counts.tolist()):
                mult[(root, si)] = c
                names.setdefault(root, set()).add(label)
    totals = {s.value: float(filter_scores[id(s)].sum()) for s in out_slots} if norm == "l1" else {}
    return membership, {r: float(score_arr[r]) for r in membership}, mult, names, totals


def _group_atoms(analysis: AnalysisResult, roots: np.ndarray, membership, mult, names) -> tuple[list[Group], int]:
    """Prunable atoms grouped by the exact set of slots they live in; and the count of blocked groups."""
    fixed_root = np.zeros(len(roots), dtype=bool)
    source_root = np.zeros(len(roots), dtype=bool)
    fixed_root[roots[analysis.fixed]] = True
    source_root[roots[analysis.source]] = True
    by_key: dict[tuple[int, ...], list[int]] = {}
    blocked_keys: set[tuple[int, ...]] = set()
    for root, slots in membership.items():
        if not source_root[root]:
            continue
        key = tuple(sorted(slots))
        if fixed_root[root]:
            blocked_keys.add(key)
        else:
            by_key.setdefault(key, []).append(root)
    groups = []
    for key, atoms in by_key.items():
        per_atom = max((mult.get((atoms[0], si), 0) for si in key), default=1) or 1
        gnames = sorted(set().union(*(names.get(a, set()) for a in atoms)))
        groups.append(Group(key=key, atoms=sorted(atoms), channels_per_atom=per_atom, names=gnames))
    return groups, len(blocked_keys - set(by_key))

def weakest_atoms(group: Group, scores: dict[int, float], n: int) -> list[int]:
    """The ``n`` lowest-scoring atoms of ``group`` (ties broken by id, so plans are deterministic)."""
    return sorted(group.atoms, key=lambda a: (scores.get(a, 0.0), a))[:n]


def _step(g: Group, round_to: int) -> int:
    """Atoms per rounding step, so channel counts stay multiples of ``round_to``."""
    return max(1, round_to // math.gcd(round_to, g.channels_per_atom))


def narrow_groups(groups: list[Group], round_to: int) -> list[Group]:
    """Groups that cannot lose a channel at ``round_to``: one rounding step of atoms or fewer."""
    return [g for g in groups if len(g.atoms) <= _step(g, round_to)]


def rounding_note(groups: list[Group], ratio: float, round_to: int) -> str | None:
    """Why a ``--ratio`` plan removed nothing from prunable groups, when the rounding is why."""
    if not groups or ratio <= 0 or round_to <= 1 or any(g.keep < len(g.atoms) for g in groups):
        return None
    widest = max(len(g.atoms) * g.channels_per_atom for g in groups)
    return (f"no channel removed: at --ratio {ratio:g} each of the {len(groups)} prunable group(s) would lose less "
            f"than one step of --round-to {round_to} channels (widest: {widest}); a larger --ratio or a smaller "
            f"--round-to prunes")


def _plan_local(groups: list[Group], config: CompressConfig) -> None:
    for g in groups:
        n = len(g.atoms)
        g.keep = _round_keep(n - config.ratio * n, n, _step(g, config.round_to))


def _plan_global(groups: list[Group], scores: dict[int, float], config: CompressConfig) -> None:
    by_group = {i: g.atoms for i, g in enumerate(groups)}
    norm = normalise_by_group(scores, by_group)
    total = sum(len(g.atoms) for g in groups)
    target = int(round(config.ratio * total))
    caps = [min(len(g.atoms) - 1, int(math.floor(config.max_layer_ratio * len(g.atoms)))) for g in groups]
    ranked = sorted(((norm[a], i, a) for i, g in enumerate(groups) for a in g.atoms))
    removed = [0] * len(groups)
    count = 0
    for _, i, _a in ranked:
        if count >= target:
            break
        if removed[i] < caps[i]:
            removed[i] += 1
            count += 1
    for i, g in enumerate(groups):
        n = len(g.atoms)
        floor_keep = n - caps[i]
        g.keep = _round_keep(n - removed[i], n, _step(g, config.round_to), floor_keep=max(1, floor_keep))


def reported_blockers(analysis: AnalysisResult, plan: Plan) -> list[dict]:
    """Blocks that kept some prunable filter's channels; one entry per node and reason."""
    source_roots = set(np.unique(plan.roots[analysis.source]).tolist())
    seen, out = set(), []
    for b in analysis.blocks:
        if not b.reason:
            continue
        if not source_roots.intersection(np.unique(plan.roots[b.ids]).tolist()):
            continue
        key = (b.node, b.reason)
        if key not in seen:
            seen.add(key)
            out.append({"node": b.node, "op": b.op, "reason": b.reason})
    return out


def describe_groups(model, shapes: dict, block_ops: list[str] | tuple[str, ...] = (),
                    attention: str = "heads") -> tuple[list[dict], list[dict]]:
    """The prunable channel groups of ``model`` and what blocks the rest (nothing is changed).

    Lossy groups (a LayerNorm-coupled stream, ...) are listed too, with their outcome: they
    are pruned only with calibration data.
    """
    from onnxcompress.channels.analysis import analyse_channels
    from onnxcompress._ir_utils import const_array

    analysis = analyse_channels(model, shapes, block_ops=block_ops, allow_lossy=True, attention=attention)
    tensors = {s.value: const_array(s.value) for s in analysis.slots if s.role == "out"}
    plan = make_plan(analysis, tensors, CompressConfig(ratio=0.0))
    lossy_at: dict[int, list] = {}
    for r in analysis.lossy:
        for root in set(plan.roots[r.ids].tolist()):
            lossy_at.setdefault(root, []).append(r)
    heads = head_roots(analysis, plan)
    groups = []
    for g in sorted(plan.groups, key=lambda g: -len(g.atoms) * g.channels_per_atom):
        recs = {id(r): r for a in g.atoms for r in lossy_at.get(int(a), [])}.values()
        entry = {"filters": g.names, "channels": len(g.atoms) * g.channels_per_atom, "prunable_units": len(g.atoms),
                 "unit": "head" if any(int(a) in heads for a in g.atoms) else "channel",
                 "channels_per_unit": g.channels_per_atom, "outcome": "lossy" if recs else "exact"}
        if recs:
            entry["lossy_at"] = [{"node": r.node, "op": r.op, "reason": r.reason} for r in recs]
        groups.append(entry)
    return groups, reported_blockers(analysis, plan)


def head_roots(analysis: AnalysisResult, plan: Plan) -> set[int]:
    """Atoms that are attention heads (the rules that couple a head's channels mark them)."""
    return {int(r) for r in plan.roots[analysis.heads]}


def macs_per_atom(analysis: AnalysisResult, plan: Plan, shapes: dict) -> tuple[dict[tuple[int, ...], float], float]:
    """MACs one atom of each group saves, and the model's total.

    Every node with MACs (Conv, Gemm, MatMul, also activation-by-activation MatMuls such
    as attention scores) shrinks with the share of its input and output channels that
    the group removes; the shares come from the tracked channels on its tensors.
    """
    from onnxcompress.analysis.cost import node_macs

    atoms_of = np.full(len(plan.roots), -1, dtype=np.int64)
    for gi, g in enumerate(plan.groups):
        atoms_of[g.atoms] = gi
    saved = np.zeros(len(plan.groups))
    total = 0.0
    for node in analysis.order:
        macs = node_macs(node, shapes)
        total += macs
        if not macs:
            continue
        values = [v for v in (*node.inputs, *node.outputs[:1]) if v is not None and v in analysis.info]
        for v in values:
            info = analysis.info[v]
            if len(info.axes) != 1 or not info.ids.size:
                continue
            owner = atoms_of[plan.roots[info.ids.ravel()]]
            counts = np.bincount(owner[owner >= 0], minlength=len(plan.groups))
            saved += macs * counts / info.ids.size
    out = {g.key: float(saved[gi]) / max(len(g.atoms), 1) for gi, g in enumerate(plan.groups)}
    return out, total


def macs_kept(analysis: AnalysisResult, roots: np.ndarray, removed_roots: np.ndarray, shapes: dict) -> float:
    """Fraction of the MACs a removal keeps: each node scales by the kept share of every
    distinct channel set it reads or writes (a depthwise conv's input and output are one set)."""
    from onnxcompress.analysis.cost import node_macs

    total = kept = 0.0
    for node in analysis.order:
        macs = node_macs(node, shapes)
        if not macs:
            continue
        total += macs
        factor, seen = 1.0, []
        for v in (*node.inputs, *node.outputs[:1]):
            info = analysis.info.get(v) if v is not None else None
            if info is None or not info.ids.size:  # several axes: heads x dims, counted as one set
                continue
            r = roots[info.ids.ravel()]
            key = frozenset(np.unique(r).tolist())
            if key in seen:
                continue
            seen.append(key)
            factor *= 1.0 - float(removed_roots[r].mean())
        kept += macs * factor
    return kept / total if total else 1.0
