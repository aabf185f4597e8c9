"""Allocation in rounds: reach a MACs target in steps, measuring the groups again after each.

The sensitivity sweep measures each group pruned alone, on the unpruned model. Pruned
together, groups interact: on PP-OCRv6 rec, 75% of two wide conv groups looked cheap alone and
cost 7 points together (bench/ALLOCATION_ROUNDS.md). With ``--allocation-rounds N`` the prune
pass runs N times, to the targets T^(1/N), T^(2/N) ... T of the original's MACs; each round
measures the groups of the model that the previous rounds pruned and refit.

Every round's refit, drift and distillation still compare with the **original** model (the
``Teacher``): its outputs, and its features with every channel removed so far dropped. The pass
keeps the pruned graph's node objects across rounds, so a node is matched to the original by
identity, and its kept output channels compose round after round.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir


def round_targets(target: float, rounds: int) -> list[float]:
    """The MACs fraction of the original each round reaches: geometric steps ending at ``target``."""
    rounds = max(int(rounds), 1)
    return [float(target ** ((i + 1) / rounds)) for i in range(rounds)]


def compose_keep(before: np.ndarray | None, now: np.ndarray | None) -> np.ndarray | None:
    """Output channels kept after two prunings, indexed like the original.

    ``before`` is indexed like the original (None: nothing removed yet), ``now`` like the
    model after ``before`` (None: nothing removed now). Raises ``ValueError`` when ``now``
    does not have one entry per channel ``before`` kept.
    """
    if before is None:
        return None if now is None else np.asarray(now, dtype=bool).copy()
    if now is None:
        return before
    now = np.asarray(now, dtype=bool)
    if int(before.sum()) != len(now):
        raise ValueError(f"{len(now)} channels now, {int(before.sum())} kept before")
    out = before.copy()
    out[before] = now
    return out


@dataclass
class Teacher:
    """The original model, and the pruned graph's nodes matched to it across rounds."""

    model: ir.Model
    #: id(node) -> (node, its first output's name in the original)
    names: dict[int, tuple[ir.Node, str]] = field(default_factory=dict)
    #: id(node) -> (node, output channels kept so far, indexed like the original)
    kept: dict[int, tuple[ir.Node, np.ndarray]] = field(default_factory=dict)

    @classmethod
    def of(cls, original: ir.Model, working: ir.Model) -> "Teacher":
        """``original`` is a clone of ``working`` taken before any pruning."""
        return cls(original, {id(n): (n, n.outputs[0].name) for n in working.graph if n.outputs})

    def name(self, node: ir.Node) -> str | None:
        """The node's output name in the original, or None for a node the original does not have."""
        entry = self.names.get(id(node))
        return entry[1] if entry is not None and entry[0] is node else None

    def keep(self, node: ir.Node, now: np.ndarray | None) -> np.ndarray | None:
        """The node's kept output channels in the original's indexing, with this round's ``now``."""
        entry = self.kept.get(id(node))
        before = entry[1] if entry is not None and entry[0] is node else None
        return compose_keep(before, now)

    def record(self, node: ir.Node, now: np.ndarray | None) -> None:
        """After a round: ``node`` kept ``now`` of the channels it had (None: all)."""
        kept = self.keep(node, now)
        if kept is not None:
            self.kept[id(node)] = (node, kept)
