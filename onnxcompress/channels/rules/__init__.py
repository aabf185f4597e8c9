"""The op-rule registry, keyed by (domain, op_type, opset range).

Adding an op means one rule in its family's module and one test beside it:

    @register("LpNormalization", since=1)
    class LpNormRule(Rule):
        def propagate(self, node, ctx: AnalysisContext) -> Outcome | None: ...

``register`` takes the op types, the ``domain`` (default: the standard one) and the
opset range (``since``, ``until`` inclusive) the rule's semantics hold for; an op whose
meaning changed across opsets gets one entry per range. Ops known to mix channels are
entries too, registered with ``block_op(op, reason)``, so the report says exactly why.

A rule has:
- ``propagate(node, ctx)``: set the outputs' channel info from the inputs, union
  coupled elements, register weight slots, or ``return ctx.block(node, reason)``;
- ``const_eval(node, app)`` (optional): in remove mode, map the constant values that
  removed channels carry (they are spatially uniform) from inputs to outputs, so the
  constant can be folded into the consumers' bias; without it the value is unknown (NaN)
  and the report marks the fold inexact;
- ``rewrite(node, app)`` (optional): fix attributes or constant inputs that spell out
  channel counts (Split sizes, Slice bounds, Reshape targets, depthwise ``group``);
- ``consumer`` (ops that read channels through a constant weight): the hooks that fold a
  removed channel's constant into the op, refit it, and say where its output channels lie
  (``channels.rules.consumer``); the engines ask ``consumer_of(node)``, never an op list;
- ``macs(node, shapes)``: the op's multiply-accumulates (``analysis.cost`` asks the rule);
- ``simulate`` (rules that return ``Lossy``): the node's computation with the removed
  channels masked out, which the sensitivity model swaps in to measure the loss.

``propagate`` returns an outcome the engine acts on: ``None`` or ``Exact()`` (removal is
exact), ``Lossy(reason)`` (tracked only with calibration data, and listed in the report),
or ``Blocked(reason)`` (``ctx.block`` records it and returns one).

Users whose model trips a rule can block ops by name: ``ONNXCOMPRESS_BLOCK_OPS=Op1,Op2``
or ``--block-op OP``; each then blocks with the reason "blocked by the user".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import onnx_ir as ir

from onnxcompress._ir_utils import STANDARD_DOMAINS
from onnxcompress.channels.protocols import AnalysisContext, Blocked, Outcome, RewriteContext

if TYPE_CHECKING:
    from onnxcompress.analysis.shapes import Shape
    from onnxcompress.channels.rules.consumer import ConsumerHooks

BLOCK_OPS_ENV = "ONNXCOMPRESS_BLOCK_OPS"
USER_BLOCK_REASON = "blocked by the user"


class Rule:
    """Base rule: subclasses implement ``propagate``."""

    #: run even when no input carries tracked channels (ops that create channels: Conv, ...)
    always = False
    rewrite: Callable | None = None
    #: set by ops that read channels through a constant weight (see ``consumer.py``)
    consumer: ConsumerHooks | None = None
    #: set by rules that return ``Lossy``: ``simulate(pnode, mask, factor, axis, opset, dtype)``
    #: returns the nodes that replace ``pnode`` (a NodeProto of the sensitivity model) and compute
    #: its outputs as if the channels where ``mask`` is 0 were gone (``factor`` = channels / kept;
    #: see ``simulate.py``). A lossy node without it leaves its groups unmeasured: not pruned by target.
    simulate: Callable | None = None

    def propagate(self, node: ir.Node, ctx: AnalysisContext) -> Outcome | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def macs(self, node: ir.Node, shapes: dict[str, Shape]) -> int:
        """Multiply-accumulates of one node (0: not counted, or a needed shape is unknown)."""
        return 0

    def const_eval(self, node: ir.Node, app: RewriteContext) -> None:
        """Default: the removed channels' values after this op are unknown."""
        for o in node.outputs:
            info = app.channels(o)
            if info is not None:
                app.set_const(o, np.full(info.ids.shape, np.nan))


class BlockerRule(Rule):
    """A known channel-mixing op: every channel flowing in stays, for the stated reason."""

    def __init__(self, reason: str, macs: Callable[[ir.Node, dict], int] | None = None) -> None:
        self.reason = reason
        self._macs = macs

    def propagate(self, node: ir.Node, ctx: AnalysisContext) -> Blocked:
        return ctx.block(node, self.reason)

    def macs(self, node: ir.Node, shapes: dict[str, Shape]) -> int:
        return self._macs(node, shapes) if self._macs is not None else 0


@dataclass(frozen=True)
class Entry:
    domain: str
    op_type: str
    since: int
    until: int | None
    rule: Rule

    def covers(self, opset: int) -> bool:
        return self.since <= opset and (self.until is None or opset <= self.until)

    @property
    def blocker(self) -> bool:
        return isinstance(self.rule, BlockerRule)


_ENTRIES: dict[tuple[str, str], list[Entry]] = {}


def _add(domain: str, op: str, since: int, until: int | None, rule: Rule) -> None:
    entries = _ENTRIES.setdefault((domain, op), [])
    for e in entries:
        if e.covers(since) or (until is not None and e.covers(until)) or (e.since >= since and (until is None or e.since <= until)):
            raise ValueError(f"two rules for {domain or 'ai.onnx'}::{op} at overlapping opsets")
    entries.append(Entry(domain, op, since, until, rule))


def register(*ops: str, domain: str = "", since: int = 1, until: int | None = None) -> Callable[[type[Rule]], type[Rule]]:
    """Class decorator: one instance of the rule serves every op listed, in that opset range."""

    def deco(cls: type[Rule]) -> type[Rule]:
        inst = cls()
        for op in ops:
            _add(domain, op, since, until, inst)
        return cls

    return deco


def block_op(op: str, reason: str, *, domain: str = "", since: int = 1, until: int | None = None,
             macs: Callable[[ir.Node, dict], int] | None = None) -> None:
    """Register a known blocker: the op mixes channels, and ``reason`` says how (``macs``: its cost)."""
    _add(domain, op, since, until, BlockerRule(reason, macs))


def _norm_domain(domain: str) -> str:
    return "" if domain in STANDARD_DOMAINS else domain


def user_blocked_ops(extra: list[str] | tuple[str, ...] = ()) -> set[str]:
    """Ops the user blocked: ``ONNXCOMPRESS_BLOCK_OPS`` plus ``--block-op``."""
    env = os.environ.get(BLOCK_OPS_ENV, "")
    return {o.strip() for o in env.split(",") if o.strip()} | {o for o in extra if o}


def lookup(op_type: str, opset: int, domain: str = "", blocked: set[str] | frozenset[str] = frozenset()) -> Rule | None:
    """The rule for ``op_type`` at ``opset``; None when no entry covers it."""
    if op_type in blocked:
        return BlockerRule(USER_BLOCK_REASON)
    for e in _ENTRIES.get((_norm_domain(domain), op_type), ()):
        if e.covers(opset):
            return e.rule
    return None


def rule_of(node: ir.Node, opset: int | None = None) -> Rule | None:
    """The rule for ``node`` at its graph's opset for its domain (the newest, for a detached node)."""
    if opset is None:
        graph = node.graph
        imports = graph.opset_imports if graph is not None else {}
        domain = _norm_domain(node.domain)
        opset = imports.get(domain, imports.get("ai.onnx", 21) if domain == "" else 1)
    return lookup(node.op_type, opset, node.domain)


def consumer_of(node: ir.Node) -> ConsumerHooks | None:
    """The consumer hooks of ``node``'s rule: None when the op reads no channels through a constant weight."""
    rule = rule_of(node)
    return None if rule is None else rule.consumer


def get_rule(op_type: str, opset: int = 21) -> Rule | None:
    """The standard-domain rule for ``op_type`` (at the newest opset unless given)."""
    return lookup(op_type, opset)


def entries() -> list[Entry]:
    return [e for es in _ENTRIES.values() for e in es]


def registered_ops(*, blockers: bool = False) -> list[str]:
    """Op types with a rule (``blockers=True``: with a known-blocker entry) in any opset range."""
    return sorted({e.op_type for e in entries() if e.blocker == blockers})


def channels_on_axis1(node: ir.Node, ctx: AnalysisContext, info) -> bool:
    """Per-channel ops (BN, pools, ...) read channels at axis 1; elsewhere they block."""
    if info.axes != (1,):
        ctx.block(node, f"{node.op_type} on channels not at axis 1")
        return False
    return True


# Importing the families fills the registry.
from onnxcompress.channels.rules import (  # noqa: E402,F401
    attention, blockers, conv, einsum, elementwise, fused_norm, layout, linear, norm, reshape, spatial,
)
