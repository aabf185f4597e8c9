"""What the passes of one compression share: settings, shapes, data, and the report."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from onnxcompress.analysis.shapes import Shape, ShapeOracle
from onnxcompress.config import CompressConfig
from onnxcompress.passes.base import Progress

if TYPE_CHECKING:
    from onnxcompress.calibration import CalibrationSet
    from onnxcompress.report import CompressReport


@dataclass
class CompressContext:
    config: CompressConfig
    input_shapes: dict[str, Shape]
    report: CompressReport
    #: the input as onnxruntime should read it: its file when there is one (unchanged)
    source: str | os.PathLike | ir.Model
    oracle: ShapeOracle = field(default_factory=ShapeOracle)
    progress: Progress = field(default_factory=Progress)
    #: real inputs: ``calib`` fits decisions, ``held_out`` judges them (None without --calib)
    calib: CalibrationSet | None = None
    held_out: CalibrationSet | None = None
    #: the verification feeds (batches) and the original model's outputs on them
    verify_feeds: list[dict[str, np.ndarray]] = field(default_factory=list)
    #: what the verification feeds are: "calibration" (held-out real inputs) or "random"
    report_inputs: str = "random"
    reference: dict[str, np.ndarray] | None = None
    second_sizing: dict[str, Shape] | None = None
    second_feeds: dict[str, np.ndarray] | None = None
    second_reference: dict[str, np.ndarray] | None = None
    #: a copy of the input taken before any pass, for the zero-mode exactness measurement
    snapshot: ir.Model | None = None
    #: measurements shared by the probes of a target search
    search_cache: object | None = None

    def __post_init__(self) -> None:
        if self.search_cache is None:
            from onnxcompress.pruning.calibrated import SearchCache

            self.search_cache = SearchCache()
