"""Run the op rules over a graph and collect element ids, slots and blockers."""

from __future__ import annotations

import logging
import os
import re

import numpy as np
import onnx_ir as ir

from onnxcompress.analysis.shapes import Shape
from onnxcompress._ir_utils import STANDARD_DOMAINS, const_array, default_opset, is_const
from onnxcompress.channels.protocols import Blocked, Exact, Lossy, Outcome
from onnxcompress.channels.state import AnalysisResult, BlockRecord, ChannelInfo, Slot, UnionFind

logger = logging.getLogger(__name__)

STRICT_ENV = "ONNXCOMPRESS_STRICT_RULES"


class ChannelContext:
    """What a rule sees: channel info of values, constants, static shapes, and helpers."""

    def __init__(self, model: ir.Model, shapes: dict[str, Shape], exclude: list[str] | None = None,
                 allow_lossy: bool = False, attention: str = "heads"):
        self.model = model
        if attention not in ("heads", "dims"):
            raise ValueError(f"attention must be 'heads' or 'dims', not {attention!r}")
        #: what attention's rules prune: whole "heads", or the same "dims" of every head
        self.attention = attention
        #: Lossy outcomes are tracked only when calibration data can justify them
        self.allow_lossy = allow_lossy
        self.lossy: list[BlockRecord] = []
        self.graph = model.graph
        self.shapes = shapes
        self.opset = default_opset(model)
        self.exclude = [re.compile(p) for p in (exclude or [])]
        self.uf = UnionFind()
        self.info: dict[ir.Value, ChannelInfo] = {}
        self.slots: list[Slot] = []
        self.source: list[bool] = []
        self.fixed: list[bool] = []
        self.blocks: list[BlockRecord] = []
        self.rewrites: list[ir.Node] = []
        # Layout ops record how they move channel arrays, so constants can follow the ids.
        self.recipes: dict[ir.Node, object] = {}
        #: (rows, cols) id arrays of split channel axes that must stay rectangles
        self.rectangles: list[np.ndarray] = []
        #: one element per attention head (reports call these groups' units heads)
        self.heads: list[np.ndarray] = []

    # ----- values -----
    def get(self, v: ir.Value | None) -> ChannelInfo | None:
        return None if v is None else self.info.get(v)

    def set(self, v: ir.Value, info: ChannelInfo | None) -> None:
        if info is not None:
            self.info[v] = info

    def shape(self, v: ir.Value | None) -> Shape | None:
        if v is None:
            return None
        return self.shapes.get(v.name)

    def rank(self, v: ir.Value | None) -> int | None:
        s = self.shape(v)
        return None if s is None else len(s)

    def const(self, v: ir.Value | None) -> np.ndarray | None:
        """The value as a numpy array when it is a constant (initializer or Constant node)."""
        return const_array(v)

    def is_const(self, v: ir.Value | None) -> bool:
        return is_const(v)

    # ----- elements -----
    def fresh(self, shape: tuple[int, ...] | int, *, source: bool = False, fixed: bool = False) -> np.ndarray:
        """New elements: ``source`` ones belong to prunable filters, ``fixed`` ones always stay."""
        n = int(np.prod(shape))
        ids = self.uf.make(n)
        self.source.extend([source] * n)
        self.fixed.extend([fixed] * n)
        return ids.reshape(shape)

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(np.asarray(a).ravel(), np.asarray(b).ravel()):
            self.uf.union(int(x), int(y))

    def fix(self, ids: np.ndarray, node: ir.Node | None, reason: str) -> Blocked:
        ids = np.asarray(ids).ravel()
        if ids.size == 0:
            return Blocked(reason)
        for i in ids:
            self.fixed[int(i)] = True
        self.blocks.append(
            BlockRecord(node=(node.name or node.op_type) if node else "(graph)", op=node.op_type if node else "", reason=reason, ids=ids)
        )
        return Blocked(reason)

    def block(self, node: ir.Node, reason: str) -> Blocked:
        """Keep every channel that flows into ``node``; its outputs carry no tracked channels."""
        for v in node.inputs:
            info = self.get(v)
            if info is not None:
                self.fix(info.ids, node, reason)
        return Blocked(reason)

    def needs_rewrite(self, node: ir.Node) -> None:
        """``node`` spells channel counts that the applier must rewrite even without channels on its outputs."""
        self.rewrites.append(node)

    def keep_rectangular(self, ids: np.ndarray) -> None:
        """``ids`` (rows, cols, ...), a channel axis split in two or more, must keep equal rows.

        Settled once every rule has run (``settle_rectangles``): when each row is one element
        (attention heads, whose rules coupled each head's channels) whole rows go; otherwise
        the same columns go from every row (a channel shuffle, the q/k/v thirds of a fused projection).
        """
        self.rectangles.append(np.asarray(ids))

    def mark_heads(self, ids: np.ndarray) -> None:
        """``ids`` are attention heads, one element each (for reports: the unit of their group)."""
        self.heads.append(np.asarray(ids).ravel())

    def settle_rectangles(self) -> None:
        for ids in self.rectangles:
            self._settle(ids)

    def _settle(self, ids: np.ndarray) -> None:
        """Rows (slices along the first axis) whole, or tied to each other and settled inside."""
        if ids.ndim < 2:
            return
        roots = np.array([self.uf.find(int(i)) for i in ids.ravel()]).reshape(ids.shape[0], -1)
        if bool(np.all(roots == roots[:, :1])):
            return  # whole rows: removing any of them keeps a rectangle
        for r in range(1, ids.shape[0]):
            self.union(ids[0], ids[r])
        self._settle(ids[0])

    def record_recipe(self, node: ir.Node, recipe) -> None:
        """How ``node`` moves per-channel arrays (``recipe(arrays, fill) -> arrays``), for constants to follow."""
        self.recipes[node] = recipe

    def excluded(self, node: ir.Node) -> bool:
        return any(p.search(node.name or "") for p in self.exclude)

    # ----- slots -----
    def add_slot(self, node: ir.Node, value: ir.Value, axis: int, ids: np.ndarray, role: str) -> None:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        for s in self.slots:
            if s.value is value and s.axis == axis:
                # The same tensor axis in two places (a shared weight): its channels are coupled.
                self.union(s.ids, ids)
        self.slots.append(Slot(node=node, value=value, axis=axis, ids=ids, role=role))

    def channel_const(self, node: ir.Node, v: ir.Value, out_rank: int, info: ChannelInfo) -> str:
        """Classify a constant operand of an elementwise op against ``info`` (on an output of ``out_rank``).

        Returns ``scalar`` (broadcasts over channels), ``slot`` (per-channel, registered), or
        ``blocked`` (varies along channels in a way we do not track; channels fixed).
        """
        c = self.const(v)
        if c is None:
            return "blocked"
        if len(info.axes) != 1:
            if c.size == 1:
                return "scalar"
            self.fix(info.ids, node, "per-channel constant on a split channel axis")
            return "blocked"
        axis = info.axes[0]
        caxis = c.ndim - (out_rank - axis)
        if caxis < 0 or c.shape[caxis] == 1:
            return "scalar"
        if c.shape[caxis] == info.ids.shape[0]:
            self.add_slot(node, v, caxis, info.ids, "param")
            return "slot"
        self.fix(info.ids, node, f"constant {v.name!r} does not broadcast per channel")
        return "blocked"


def _rule_for(node: ir.Node, ctx: ChannelContext, blocked: set[str]):
    """The registry's rule for ``node`` when it has work to do (None: skip; unknown ops block)."""
    from onnxcompress.channels.rules import lookup

    model = ctx.model
    opset = model.opset_imports.get(node.domain, ctx.opset if node.domain in STANDARD_DOMAINS else 1)
    rule = lookup(node.op_type, opset, node.domain, blocked)
    has_info = any(ctx.get(v) is not None for v in node.inputs)
    if rule is None:
        if has_info:
            what = f"custom domain {node.domain!r}" if node.domain not in STANDARD_DOMAINS else f"opset {opset}"
            ctx.block(node, f"no channel rule for {node.op_type} ({what}): channel semantics unknown")
        return None
    return rule if has_info or rule.always else None


def _propagate(node: ir.Node, rule, ctx: ChannelContext, strict: bool) -> bool:
    """Run one rule and act on its outcome; a failing rule blocks its node (or raises, in strict mode)."""
    blocks_before = len(ctx.blocks)
    try:
        _act(node, rule.propagate(node, ctx), ctx, blocks_before)
    except Exception as exc:  # noqa: BLE001 - a rule that cannot decide blocks, never breaks
        if strict:
            raise
        logger.warning("channel rule for %s failed on node %s (%s: %s); its channels stay",
                       node.op_type, node.name, type(exc).__name__, exc)
        ctx.block(node, f"{node.op_type} rule failed on this node ({type(exc).__name__}: {exc})")
        for o in node.outputs:
            ctx.info.pop(o, None)
        return True
    if getattr(rule, "rewrite", None) is not None and any(ctx.get(o) is not None for o in node.outputs):
        ctx.rewrites.append(node)
    return True


def _act(node: ir.Node, outcome: Outcome | None, ctx: ChannelContext, blocks_before: int) -> None:
    """The engine's side of a rule's outcome.

    ``Blocked`` keeps every channel flowing in (a rule may have recorded narrower fixes
    itself first). ``Lossy`` is recorded for the planner and the report when calibration data
    can justify it, and otherwise blocks with the rule's reason.
    """
    if outcome is None or isinstance(outcome, Exact):
        return
    if isinstance(outcome, Blocked):
        if len(ctx.blocks) == blocks_before:  # returned, not recorded through ctx.block/fix
            ctx.block(node, outcome.reason)
        return
    if isinstance(outcome, Lossy):
        if not ctx.allow_lossy:
            ctx.block(node, f"{outcome.reason} (lossy: needs calibration data, --calib)")
            return
        ids = [ctx.get(v).ids.ravel() for v in node.inputs if ctx.get(v) is not None]
        ctx.lossy.append(BlockRecord(node=node.name or node.op_type, op=node.op_type, reason=outcome.reason,
                                     ids=np.concatenate(ids) if ids else np.zeros(0, np.int64), at=node))
        return
    raise TypeError(f"the {node.op_type} rule returned {outcome!r}; expected Exact, Lossy, Blocked or None")


def _fix_what_must_stay(ctx: ChannelContext, main_nodes: set, prune_outputs: bool) -> None:
    """Graph outputs, values read inside subgraphs, and weights read by other ops keep their channels."""
    for v, info in list(ctx.info.items()):
        if v.is_graph_output() and not prune_outputs:
            ctx.fix(info.ids, v.producer(), f"channels reach graph output {v.name!r}")
        if any(u.node not in main_nodes for u in v.uses()):
            ctx.fix(info.ids, v.producer(), "used inside a subgraph")
    # A slotted tensor read by an op that is not one of its slots would be corrupted by slicing.
    slot_uses: dict[ir.Value, set[ir.Node]] = {}
    for s in ctx.slots:
        slot_uses.setdefault(s.value, set()).add(s.node)
    for value, nodes in slot_uses.items():
        others = [u.node for u in value.uses() if u.node not in nodes]
        if others or value.is_graph_output():
            for s in ctx.slots:
                if s.value is value:
                    ctx.fix(s.ids, others[0] if others else s.node, f"weight {value.name!r} is also read by another op")


def strict_rules() -> bool:
    """``ONNXCOMPRESS_STRICT_RULES=1`` (set by the test suite): a rule that raises is a bug, not a blocker."""
    return os.environ.get(STRICT_ENV, "") not in ("", "0")


def analyse_channels(
    model: ir.Model,
    shapes: dict[str, Shape],
    *,
    exclude: list[str] | None = None,
    prune_outputs: bool = False,
    block_ops: list[str] | tuple[str, ...] = (),
    strict: bool | None = None,
    allow_lossy: bool = False,
    attention: str = "heads",
) -> AnalysisResult:
    """Propagate channel ids through ``model`` in topological order using the rule registry.

    Outside strict mode, an exception inside a rule blocks that node's channels, and the
    report says the rule failed (a warning is logged): a buggy rule never breaks a model.
    ``allow_lossy`` (calibration data is given) lets ``Lossy`` outcomes through; they are
    listed in ``AnalysisResult.lossy``. ``attention`` ("heads" or "dims") is what attention's
    rules prune (``ChannelContext.attention``).
    """
    from onnxcompress.channels.rules import user_blocked_ops

    strict = strict_rules() if strict is None else strict
    blocked = user_blocked_ops(block_ops)
    ctx = ChannelContext(model, shapes, exclude, allow_lossy, attention)
    order = list(model.graph)
    main_nodes = set(order)
    rules = {}
    for node in order:
        rule = _rule_for(node, ctx, blocked)
        if rule is not None and _propagate(node, rule, ctx, strict):
            rules[node] = rule
    ctx.settle_rectangles()
    _fix_what_must_stay(ctx, main_nodes, prune_outputs)
    return AnalysisResult(
        uf=ctx.uf,
        info=ctx.info,
        slots=ctx.slots,
        source=np.array(ctx.source, dtype=bool),
        fixed=np.array(ctx.fixed, dtype=bool),
        blocks=ctx.blocks,
        order=order,
        rewrites=ctx.rewrites,
        recipes=ctx.recipes,
        rules=rules,
        lossy=ctx.lossy,
        heads=np.concatenate(ctx.heads) if ctx.heads else np.zeros(0, np.int64),
    )
