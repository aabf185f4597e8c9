"""Error-driven selection: measure each group's damage on real inputs, then spend a MAC budget.

One onnxruntime session serves every candidate. The model gets, at the input of every
consumer (Conv/Gemm/MatMul) of prunable channels, ``x * mask + shift`` with ``mask`` and
``shift`` as extra graph inputs. A candidate plan is then just a feed: its removed
channels get mask 0 and their calibrated mean as shift, which is what bias compensation
gives the pruned model. The drift ε of the model's outputs (relative L2 against the
unmasked run, on the calibration fit split) measures the damage.

``measure`` costs groups x ratios passes over the calibration set; ``allocation.allocate``
then picks per-group ratios greedily by the least ε per MAC saved until a MAC target is met.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx.helper as oh
import onnx_ir as ir

from onnxcompress.blockwise import sample_blocks, square_sum
from onnxcompress.channels.state import AnalysisResult
from onnxcompress.box_score_heads import box_score_fields
from onnxcompress.fidelity import MAP_THRESHOLD, is_probability_map, map_scores
from onnxcompress.pruning.activations import FeatureStats, consumer_slots, unread_outputs
from onnxcompress.pruning.plan import Group, _round_keep, _step, weakest_atoms
from onnxcompress.pruning.suffix import SuffixRunner
from onnxcompress.runtime import Session, np_dtype

#: the fractions of a group's atoms tried by default
RATIOS = (0.125, 0.25, 0.375, 0.5, 0.75)
#: calibration samples each sensitivity measurement runs (the cost is groups x ratios
#: passes over them; ε is a mean over every output position, so a few dozen suffice)
SENSITIVITY_SAMPLES = 32
#: ... and at most this many input bytes, but never fewer than ``MIN_SENSITIVITY_SAMPLES``: a
#: 640x640 detector's ε averages 3.3M map positions over 8 pages, and 32 pages cost 4x the time
SENSITIVITY_BYTES = 32 << 20
MIN_SENSITIVITY_SAMPLES = 8


def sensitivity_sample_count(batches: list[dict[str, np.ndarray]]) -> int:
    """How many calibration samples each sensitivity measurement runs (see ``SENSITIVITY_BYTES``)."""
    if not batches:
        return SENSITIVITY_SAMPLES
    f = batches[0]
    per_sample = sum(v.nbytes for v in f.values()) / max(len(next(iter(f.values()))), 1)
    return max(MIN_SENSITIVITY_SAMPLES, min(SENSITIVITY_SAMPLES, int(SENSITIVITY_BYTES // max(per_sample, 1))))


@dataclass
class GroupSensitivity:
    key: tuple[int, ...]
    names: list[str]
    atoms: int
    macs_per_atom: float
    #: ratio -> (atoms removed, measured ε)
    curve: dict[float, tuple[int, float]] = field(default_factory=dict)
    #: why the group's removal could not be simulated (then it has no curve and is kept whole)
    unmeasured: str | None = None
    #: atoms per rounding step (``plan._step``): the allocation changes a removal count between
    #: the curve's points by whole steps, so the kept count stays a multiple of it
    step: int = 1

    def to_dict(self) -> dict:
        d = {
            "filters": self.names,
            "atoms": self.atoms,
            "macs_per_atom": self.macs_per_atom,
            "curve": [{"ratio": r, "removed": n, "drift": e} for r, (n, e) in sorted(self.curve.items())],
        }
        if self.unmeasured:
            d["unmeasured"] = self.unmeasured
        return d


class MaskedModel:
    """The model with a mask and a shift on every consumer input; one session for all candidates."""

    def __init__(
        self, model: ir.Model, analysis: AnalysisResult, stats: dict[str, FeatureStats], shapes: dict[str, tuple[int, ...]]
    ) -> None:
        proto = ir.to_proto(model)
        self.analysis = analysis
        self.slots = []  # (slot, mask input name, shift input name, shape, mean)
        self.covered: set[int] = set()  # id() of every ``in`` slot whose input is masked
        self.axis: dict[str, int] = {}  # mask input name -> the channel axis it scales
        # ``model`` is a clone taken right after the analysis: its nodes are in ``analysis.order``'s order.
        nodes = {id(n): i for i, n in enumerate(analysis.order)}
        consumers_of: dict[str, list] = {}
        for s in consumer_slots(analysis):
            x = s.node.inputs[0]
            st = stats.get(x.name)
            if st is None or len(s.ids) != len(st.mean):
                continue
            consumers_of.setdefault(x.name, []).append(s)
        new_nodes: list = []
        for k, (xname, slots) in enumerate(consumers_of.items()):
            st = stats[xname]
            dtype = np.dtype(np_dtype(slots[0].node.inputs[0].dtype))
            m, b, y, shape = _mask_and_shift(proto, xname, st, len(shapes[xname]), dtype, f"{k}", new_nodes)
            self.axis[m] = st.axis % len(shapes[xname])
            for s in slots:
                pnode = proto.graph.node[nodes[id(s.node)]]
                pnode.input[0] = y
                self.covered.add(id(s))
            self.slots.append((slots[0], m, b, shape, st.mean, dtype))
        self.outputs = self._mask_unread_outputs(proto, stats, shapes, new_nodes)
        self.lossy_slots, self.unsimulated = self._simulate_lossy(proto, nodes, shapes, new_nodes)
        # The Mul/Add pairs go first: their inputs are graph inputs or earlier nodes' outputs,
        # so a topological sort after insertion keeps the graph valid.
        _insert_sorted(proto, new_nodes)
        self.proto = proto
        self._session: Session | None = None

    def _mask_unread_outputs(self, proto, stats: dict[str, FeatureStats], shapes, new_nodes: list) -> list:
        """Mask and shift, where they are made, the channels no consumer reads (q's and k's dims
        under ``--attention dims``): a removed one becomes its calibrated mean, a constant, as
        the pruned model's channel is. Returns (ids, mask name, shift name, shape, mean, dtype)."""
        out, renamed = [], {}
        by_name = {v.name: v for v in self.analysis.info}
        for k, name in enumerate(unread_outputs(self.analysis)):
            st, v = stats.get(name), by_name.get(name)
            ids = self.analysis.info[v].ids if v is not None else None
            if st is None or ids is None or len(ids) != len(st.mean) or name not in shapes:
                continue
            dtype = np.dtype(np_dtype(v.dtype))
            m, b, renamed[name], shape = _mask_and_shift(proto, name, st, len(shapes[name]), dtype, f"out_{k}", new_nodes)
            out.append((ids, m, b, shape, st.mean, dtype))
        for node in proto.graph.node:  # the graph's readers take the masked values (the new Mul/Adds are not in it yet)
            for i, x in enumerate(node.input):
                node.input[i] = renamed.get(x, x)
        return out

    def _simulate_lossy(self, proto, nodes: dict[int, int], shapes, new_nodes: list) -> tuple[list, list]:
        """Replace each lossy node by its rule's masked simulation, fed its own mask and factor.

        A LayerNorm then normalises over the kept channels only, as the pruned model will.
        Returns the (ids, mask, factor, shape, dtype) feeds and the records no rule simulates.
        """
        opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 21)
        slots: list = []
        unsimulated: list = []
        replaced: set[int] = set()
        for k, r in enumerate(self.analysis.lossy):
            rule = self.analysis.rules.get(r.at)
            sim = getattr(rule, "simulate", None)
            # the value whose channels the mask covers: the input, or (a stream's source) the output
            x = getattr(rule, "simulated_value", lambda n: n.inputs[0])(r.at) if r.at is not None else None
            info = self.analysis.info.get(x) if x is not None else None
            if sim is None or info is None or len(info.axes) != 1 or x.name not in shapes or id(r.at) not in nodes:
                unsimulated.append(r)
                continue
            rank = len(shapes[x.name])
            shape = [1] * rank
            shape[info.axes[0]] = len(info.ids)
            dtype = np.dtype(np_dtype(x.dtype))
            elem = onnx.helper.np_dtype_to_tensor_dtype(dtype)
            m, f = f"__oc_lossy_mask_{k}", f"__oc_lossy_factor_{k}"
            proto.graph.input.extend([oh.make_tensor_value_info(m, elem, shape), oh.make_tensor_value_info(f, elem, [1])])
            i = nodes[id(r.at)]
            new_nodes += sim(proto.graph.node[i], m, f, info.axes[0], opset, dtype)
            replaced.add(i)
            slots.append((info.ids, m, f, shape, dtype))
        # the simulations take over the replaced nodes' outputs (indices stay valid until here)
        for i in sorted(replaced, reverse=True):
            del proto.graph.node[i]
        return slots, unsimulated

    @property
    def session(self) -> Session:
        """One onnxruntime session for every candidate (opened on first use)."""
        if self._session is None:
            self._session = Session(self.proto, optimize=False)
        return self._session

    def unmeasured(self, roots: np.ndarray) -> dict[int, str]:
        """Root id -> why removing it cannot be simulated: an ``in`` slot of its group is not masked.

        Such a removal would measure as free (ε = 0) while the pruned model loses the channel
        uncompensated: a DBNet head's ConvTranspose inputs were emptied that way.
        """
        out: dict[int, str] = {}
        for r in self.unsimulated:
            why = f"through {r.op} {r.node}, a lossy removal the sensitivity model cannot simulate"
            for root in np.unique(roots[r.ids]):
                out.setdefault(int(root), why)
        for s in self.analysis.slots:
            if s.role == "in" and id(s) not in self.covered:
                why = f"read by {s.node.op_type} {s.node.name or ''}".rstrip() + ", which calibration cannot simulate"
                for r in np.unique(roots[s.ids]):
                    out.setdefault(int(r), why)
        # A group that no mask reaches (q and k dims, read only by the scores product) would
        # measure as free, and the allocation would empty it.
        reached = {int(r) for s in self.analysis.slots if id(s) in self.covered for r in np.unique(roots[s.ids])}
        reached |= {int(r) for ids, *_ in self.lossy_slots + self.outputs for r in np.unique(roots[ids])}
        for s in self.analysis.slots:
            if s.role == "out":
                why = f"filters of {s.node.op_type} {s.node.name or ''}".rstrip() + " that no weight layer reads, so calibration cannot measure their removal"
                for r in np.unique(roots[s.ids]):
                    if int(r) not in reached:
                        out.setdefault(int(r), why)
        return out

    def feeds_for(self, removed: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        for ids, m, b, shape, mean, dtype in [(s.ids, *rest) for s, *rest in self.slots] + self.outputs:
            gone = removed[ids]
            out[m] = (~gone).astype(dtype).reshape(shape)
            out[b] = np.where(gone, mean, 0.0).astype(dtype).reshape(shape)
        for ids, m, f, shape, dtype in self.lossy_slots:
            kept = ~removed[ids]
            out[m] = kept.astype(dtype).reshape(shape)
            out[f] = np.array([len(ids) / max(int(kept.sum()), 1)], dtype)
        return out

    def run(self, removed: np.ndarray, batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return self.session.run_all(batches, shared=self.feeds_for(removed))


def _mask_and_shift(proto: onnx.ModelProto, x: str, st: FeatureStats, rank: int, dtype: np.dtype, tag: str,
                    new_nodes: list) -> tuple[str, str, str, list[int]]:
    """``x * mask + shift`` over ``x``'s channel axis: the two graph inputs, the Mul/Add appended
    to ``new_nodes``; returns the mask and shift names, the masked value's name and their shape."""
    shape = [1] * rank
    shape[st.axis % rank] = len(st.mean)
    m, b, y = f"__oc_mask_{tag}", f"__oc_shift_{tag}", f"__oc_masked_{tag}"
    elem = onnx.helper.np_dtype_to_tensor_dtype(dtype)
    proto.graph.input.extend([oh.make_tensor_value_info(m, elem, shape), oh.make_tensor_value_info(b, elem, shape)])
    new_nodes += [oh.make_node("Mul", [x, m], [y + "_m"]), oh.make_node("Add", [y + "_m", b], [y])]
    return m, b, y, shape


def _insert_sorted(proto: onnx.ModelProto, new_nodes: list) -> None:
    """Add nodes and re-sort the graph topologically (stable for the existing order)."""
    nodes = list(proto.graph.node) + new_nodes
    produced = {o: i for i, n in enumerate(nodes) for o in n.output}
    done: set[int] = set()
    order: list[int] = []

    def visit(i: int) -> None:
        stack = [(i, False)]
        while stack:
            j, expanded = stack.pop()
            if j in done:
                continue
            if expanded:
                done.add(j)
                order.append(j)
                continue
            stack.append((j, True))
            for inp in nodes[j].input:
                p = produced.get(inp)
                if p is not None and p not in done:
                    stack.append((p, False))

    for i in range(len(nodes)):
        visit(i)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes[i] for i in order)


def drift(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], map_thresholds: dict[str, float] | None = None) -> float:
    """Relative L2 error over every float output together, or 1 - F1 of a probability map (or of a YOLO
    head's scores, ``box_score_heads``) if larger.

    A probability map (``fidelity.is_probability_map``) is mostly background: a map whose
    foreground vanished can score a moderate L2 while its binarized F1 is 0.
    """
    return DriftReference(ref, map_thresholds)(got)


class DriftReference:
    """``drift`` against one fixed reference, its side computed once: each float output's square
    sum and threshold if it is a probability map. A sweep scores hundreds of candidates against
    one reference: on PP-OCRv6 rec (32 x 40 x 18710 probabilities) recomputing them, and the
    float64 copies, took a quarter of the allocation's time. The values are ``drift``'s, bit for bit.
    """

    def __init__(self, ref: dict[str, np.ndarray], map_thresholds: dict[str, float] | None = None) -> None:
        thresholds = map_thresholds or {}
        self.ref = {k: a for k, a in ref.items() if np.issubdtype(a.dtype, np.floating)}
        self.square_sums = {k: square_sum(a) for k, a in self.ref.items()}
        # YOLO's boxes and scores in one output: its scores are the map (box_score_heads)
        self.score_fields = {k: f for k, a in self.ref.items() if (f := box_score_fields(a)) is not None}
        self.map_threshold = {k: thresholds.get(k, MAP_THRESHOLD) for k, a in self.ref.items()
                              if k in thresholds or k in self.score_fields or is_probability_map(a)}
        self._buffers: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}

    def __call__(self, got: dict[str, np.ndarray]) -> float:
        num = den = task = 0.0
        for k, a in self.ref.items():
            if k not in got or got[k].shape != a.shape:
                continue
            for rows in sample_blocks(a):  # a bounded float64 buffer, whatever the output's size
                ra, rg = a[rows], got[k][rows]
                buf = self._buffers.get((k, ra.shape))
                if buf is None:  # made once per block shape, not per call (setdefault built one each time)
                    buf = self._buffers[(k, ra.shape)] = np.empty(ra.shape, dtype=np.float64)
                np.subtract(ra, rg, out=buf, dtype=np.float64)  # both sides cast to float64 first
                num += float(np.square(buf, out=buf).sum())
            den += self.square_sums[k]
            if k in self.score_fields:
                axis, first = self.score_fields[k]
                scores = (slice(None),) * axis + (slice(first, None),)
                task = max(task, 1.0 - map_scores(a[scores], got[k][scores], self.map_threshold[k])[1])
            elif k in self.map_threshold:
                task = max(task, 1.0 - map_scores(a, got[k], self.map_threshold[k])[1])
        return max(math.sqrt(num / den) if den > 0 else math.sqrt(num), task)


def removal_for(group: Group, n_remove: int, scores: dict[int, float], n_elem: int, roots: np.ndarray) -> np.ndarray:
    """Removed-element mask for taking the ``n_remove`` lowest-scoring atoms of ``group``."""
    gone_roots = np.zeros(n_elem, dtype=bool)
    gone_roots[weakest_atoms(group, scores, n_remove)] = True
    return gone_roots[roots]


def measure(
    masked: MaskedModel,
    groups: list[Group],
    scores: dict[int, float],
    roots: np.ndarray,
    batches: list[dict[str, np.ndarray]],
    macs_per_atom: dict[tuple[int, ...], float],
    round_to: int,
    ratios: tuple[float, ...] = RATIOS,
    progress=None,
    map_thresholds: dict[str, float] | None = None,
) -> list[GroupSensitivity]:
    """ε per group and ratio (each group pruned alone); ``progress(done, total)`` is called per run.

    Groups are measured in the order of the first node their masks reach, each candidate from
    the unmasked model's cut there (``suffix.SuffixRunner``); the results come in ``groups``' order.
    """
    none = np.zeros(len(roots), dtype=bool)
    ref = DriftReference(masked.run(none, batches), map_thresholds)
    blind = masked.unmeasured(roots)
    runner = SuffixRunner(masked.proto, batches, masked.feeds_for(none))

    def outputs(removed: np.ndarray) -> dict[str, np.ndarray]:
        got = runner.run(masked.feeds_for(removed))
        return got if got is not None else masked.run(removed, batches)

    order = sorted(range(len(groups)), key=lambda i: runner.start_of(
        masked.feeds_for(removal_for(groups[i], 1, scores, len(roots), roots))) if groups[i].atoms else 0)
    out: dict[int, GroupSensitivity] = {}
    total = len(groups) * len(ratios)
    done = 0
    for i in order:
        g = groups[i]
        n = len(g.atoms)
        gs = GroupSensitivity(g.key, g.names, n, macs_per_atom.get(g.key, 0.0), step=_step(g, round_to))
        gs.unmeasured = next((blind[a] for a in g.atoms if a in blind), None)
        out[i] = gs
        if gs.unmeasured is None:
            gs.curve = group_curve(g, ratios, round_to, lambda k, g=g: ref(
                outputs(removal_for(g, k, scores, len(roots), roots))))
        done += len(ratios)
        if progress is not None:
            progress(done, total)
    return [out[i] for i in range(len(groups))]


def group_curve(g: Group, ratios: tuple[float, ...], round_to: int, drift_of_k) -> dict[float, tuple[int, float]]:
    """ratio -> (atoms removed, ε): ``drift_of_k(k)`` once per distinct count of removed atoms."""
    n = len(g.atoms)
    seen: dict[int, float] = {}
    curve: dict[float, tuple[int, float]] = {}
    for r in ratios:
        k = n - _round_keep(n - r * n, n, _step(g, round_to))
        if k > 0 and k not in seen:
            seen[k] = drift_of_k(k)
        if k > 0:
            curve[r] = (k, seen[k])
    return curve
