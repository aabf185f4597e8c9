"""What a channel rule may read and do: typed, so a rule's author need not read the engine.

A rule sees an ``AnalysisContext`` while channels are propagated and a
``RewriteContext`` while a plan is applied. Channel ids are integer numpy arrays (one
element per channel); constants are numpy arrays, and NaN in a removed channel's
constant means "unknown" (the fold downstream is then marked inexact).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Protocol, Union

import numpy as np
import onnx_ir as ir

#: out: a filter (zeroed in zero mode, scored for importance); bias: the filter's bias;
#: in: a consumer's input channel (absorbs the removed channel's constant in remove mode);
#: param: per-channel parameters that only shrink (BN statistics, PRelu slopes, ...)
SlotRole = Literal["out", "bias", "in", "param"]
SLOT_ROLES: tuple[SlotRole, ...] = ("out", "bias", "in", "param")


@dataclass(frozen=True)
class Exact:
    """Removing a channel here is exact: it becomes a per-channel constant downstream, so the
    smaller model matches the zero-filter model (what a rule returns by default, as ``None``)."""

    @property
    def reason(self) -> str:
        return ""


@dataclass(frozen=True)
class Lossy:
    """Channels may be removed here, but not exactly (LayerNorm statistics over the kept
    channels, a removed head's uniform softmax): calibration must justify it, and recovery
    treats it. Without calibration data the engine keeps these channels, with ``reason``."""

    reason: str


@dataclass(frozen=True)
class Blocked:
    """Every channel flowing into the node stays, for ``reason``."""

    reason: str


#: what ``Rule.propagate`` returns; ``None`` means ``Exact()``
Outcome = Union[Exact, Lossy, Blocked]


class ChannelInfoLike(Protocol):
    axes: tuple[int, ...]
    ids: np.ndarray


class ConstantReader(Protocol):
    """What helpers shared by a rule's analysis and rewrite sides may read: constants and shapes."""

    def const(self, v: ir.Value | None) -> np.ndarray | None: ...
    def shape(self, v: ir.Value | None) -> tuple[int, ...] | None: ...


class AnalysisContext(Protocol):
    """Read and record channels while the graph is analysed."""

    opset: int

    def get(self, v: ir.Value | None) -> ChannelInfoLike | None: ...
    def set(self, v: ir.Value, info: ChannelInfoLike | None) -> None: ...
    def shape(self, v: ir.Value | None) -> tuple[int, ...] | None: ...
    def rank(self, v: ir.Value | None) -> int | None: ...
    def const(self, v: ir.Value | None) -> np.ndarray | None: ...
    def is_const(self, v: ir.Value | None) -> bool: ...
    def fresh(self, shape: tuple[int, ...] | int, *, source: bool = False, fixed: bool = False) -> np.ndarray: ...
    def union(self, a: np.ndarray, b: np.ndarray) -> None: ...
    def fix(self, ids: np.ndarray, node: ir.Node | None, reason: str) -> Blocked: ...
    def block(self, node: ir.Node, reason: str) -> Blocked: ...
    def excluded(self, node: ir.Node) -> bool: ...
    def add_slot(self, node: ir.Node, value: ir.Value, axis: int, ids: np.ndarray, role: SlotRole) -> None: ...
    def channel_const(self, node: ir.Node, v: ir.Value, out_rank: int, info: ChannelInfoLike) -> str: ...
    def needs_rewrite(self, node: ir.Node) -> None: ...
    def record_recipe(self, node: ir.Node, recipe: Callable) -> None: ...


class RewriteContext(Protocol):
    """Read the plan and write constants and attributes while it is applied."""

    opset: int
    zero_bias: bool

    def channels(self, v: ir.Value | None) -> ChannelInfoLike | None: ...
    def const(self, v: ir.Value | None) -> np.ndarray | None: ...
    def recipe(self, node: ir.Node) -> Callable | None: ...
    def tensor(self, v: ir.Value) -> np.ndarray | None: ...
    def is_const(self, v: ir.Value | None) -> bool: ...
    def shape(self, v: ir.Value | None) -> tuple[int, ...] | None: ...
    def const_of(self, v: ir.Value) -> np.ndarray: ...
    def set_const(self, v: ir.Value, values: np.ndarray) -> None: ...
    def set_input_const(self, node: ir.Node, index: int, arr: np.ndarray) -> None: ...
    def removed(self, ids: np.ndarray) -> np.ndarray: ...
    def keep_mask(self, v: ir.Value) -> np.ndarray: ...
    def kept_count(self, v: ir.Value) -> int: ...
    def kept_counts(self, v: ir.Value) -> list[int]: ...
    def channel_vector(self, v: ir.Value | None, ref: ir.Value) -> np.ndarray | float: ...
    def inexact(self, note: str) -> None: ...
