"""What the probes of a target search share, in a module of its own: every compression makes one,
and importing it must not pull in the calibration machinery a plain compress never uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from onnxcompress.pruning.sensitivity import GroupSensitivity


@dataclass
class SearchCache:
    """Measurements reused across the probes of a target search (same model, same data)."""

    sensitivity: list[GroupSensitivity] | None = None
    sensitivity_s: float = 0.0
    #: how the sensitivity was obtained: "sweep" or "taylor"
    estimate: str = ""
    #: the calibration data as read (key: where from, which preprocessing, how many), read once
    calibration: tuple[tuple, object] | None = None
