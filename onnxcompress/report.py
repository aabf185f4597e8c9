"""Reports are plain dataclasses; rendering (terminal, JSON, Markdown) lives in ``render``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from onnxcompress.analysis.cost import LayerCost
from onnxcompress.versions import library_versions


@dataclass
class ModelStats:
    params: int
    macs: int
    file_bytes: int

    def to_dict(self) -> dict:
        return {"params": self.params, "macs": self.macs, "file_bytes": self.file_bytes}


@dataclass
class InspectReport:
    """What ``onnxcompress inspect`` shows."""

    params: int
    macs: int
    file_bytes: int
    layers: list[LayerCost]
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    #: with ``groups=True``: prunable channel groups and the blockers of the rest
    groups: list[dict] | None = None
    blockers: list[dict] | None = None
    #: what the figures above leave out (weight layers whose shapes, so MACs, are unknown)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = {
            "params": self.params,
            "macs": self.macs,
            "file_bytes": self.file_bytes,
            "input_shapes": self.input_shapes,
            "layers": [layer.to_dict() for layer in self.layers],
        }
        if self.warnings:
            d["warnings"] = self.warnings
        if self.groups is not None:
            d["groups"] = self.groups
            d["blockers"] = self.blockers
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


@dataclass
class Blocker:
    node: str
    op: str
    reason: str

    def to_dict(self) -> dict:
        return {"node": self.node, "op": self.op, "reason": self.reason}


@dataclass
class LayerChange:
    name: str
    op: str
    before: int
    after: int

    def to_dict(self) -> dict:
        return {"name": self.name, "op": self.op, "channels_before": self.before, "channels_after": self.after}


@dataclass
class CompressReport:
    """Everything one compression did, measured."""

    input: str | None
    output: str | None
    config: dict
    before: ModelStats
    after: ModelStats
    groups: dict[str, int] = field(default_factory=lambda: {"total": 0, "pruned": 0, "blocked": 0})
    blockers: list[Blocker] = field(default_factory=list)
    layers: list[LayerChange] = field(default_factory=list)
    fidelity: dict[str, Any] | None = None
    pruned_l1_mass: float = 0.0
    importance: dict[str, Any] = field(default_factory=dict)
    exactness: dict[str, Any] = field(default_factory=dict)
    passes: dict[str, dict] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    bench: dict | None = None
    #: the calibration data used (None without --calib)
    calibration: dict | None = None
    #: per-layer and end-to-end drift before and after recovery
    recovery: dict | None = None
    #: target-driven search: the candidates measured and what stopped it
    search: dict | None = None

    def to_dict(self) -> dict:
        return {
            "input": self.input,
            "output": self.output,
            "config": self.config,
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "groups": dict(self.groups),
            "blockers": [b.to_dict() for b in self.blockers],
            "layers": [layer.to_dict() for layer in self.layers],
            "fidelity": self.fidelity,
            "pruned_l1_mass": self.pruned_l1_mass,
            "importance": self.importance,
            "exactness": self.exactness,
            "passes": self.passes,
            "timings": self.timings,
            "warnings": self.warnings,
            "bench": self.bench,
            "calibration": self.calibration,
            "recovery": self.recovery,
            "search": self.search,
            "versions": library_versions(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=_jsonable)


def _jsonable(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(o)


def refusal_json(model_path: str, exc: Exception) -> str:
    """The ``--report`` of a refused compression (exit 1, nothing written): why, what the search
    measured, and the refused model's own report where there is one (a collapsed model's)."""
    report = getattr(exc, "report", None)
    body = {
        "input": model_path,
        "output": None,
        "written": False,
        "exit_code": 1,
        "refused": str(exc),
        "measured": getattr(exc, "measured", None),
        "report": None if report is None else {**report.to_dict(), "output": None},
        "versions": library_versions(),
    }
    return json.dumps(body, indent=2, default=_jsonable)
