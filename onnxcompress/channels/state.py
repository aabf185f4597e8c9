"""The data the channel analysis builds: element ids, their union-find, slots, blockers."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir


class UnionFind:
    """Union-find over integer element ids, grown on demand."""

    def __init__(self) -> None:
        self.parent: list[int] = []

    def make(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, x: int) -> int:
        p = self.parent
        while p[x] != x:
            p[x] = p[p[x]]
            x = p[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(int(a)), self.find(int(b))
        if ra != rb:
            if ra < rb:
                ra, rb = rb, ra
            self.parent[ra] = rb

    def all_roots(self) -> np.ndarray:
        """Root of every element, by pointer jumping over the whole parent array at once."""
        parent = np.array(self.parent, dtype=np.int64)
        while True:
            nxt = parent[parent]
            if np.array_equal(nxt, parent):
                return parent
            parent = nxt


@dataclass
class ChannelInfo:
    """Which axes of a tensor carry tracked channels, and the element id at each position.

    ``ids`` has one dim per entry of ``axes`` (ascending); usually one axis, two after a
    channel-shuffle Reshape splits C into (groups, C/groups).
    """

    axes: tuple[int, ...]
    ids: np.ndarray


@dataclass
class Slot:
    """One axis of one constant tensor that shrinks when atoms are removed.

    role: ``out`` (a filter: zeroed in zero mode, scored for importance),
    ``bias`` (the filter's bias: zeroed in zero mode), ``in`` (a consumer's input
    channel: receives the removed channel's constant in remove mode), ``param``
    (per-channel parameters that only shrink: BN statistics, PRelu slopes, ...).
    """

    node: ir.Node
    value: ir.Value
    axis: int
    ids: np.ndarray
    role: str


@dataclass
class BlockRecord:
    node: str
    op: str
    reason: str
    ids: np.ndarray
    #: the node itself (lossy records: the sensitivity model simulates its removal)
    at: ir.Node | None = None


@dataclass
class AnalysisResult:
    """Everything ``analyse_channels`` found, ready for planning and applying."""

    uf: UnionFind
    info: dict[ir.Value, ChannelInfo]
    slots: list[Slot]
    source: np.ndarray  # bool per element: produced by a prunable filter
    fixed: np.ndarray  # bool per element: must stay
    blocks: list[BlockRecord]
    order: list[ir.Node]
    rewrites: list[ir.Node] = field(default_factory=list)
    recipes: dict = field(default_factory=dict)
    #: the rule each analysed node used (the same one rewrites it)
    rules: dict = field(default_factory=dict)
    #: nodes whose rule returned ``Lossy`` (tracked because calibration data was given)
    lossy: list[BlockRecord] = field(default_factory=list)
    #: elements that are whole attention heads (marked by the rules that couple them)
    heads: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
