"""What the passes of one compression share: settings, shapes, data, and the report."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import onnx_ir as ir

from onnxcompress.analysis.shapes import Shape, ShapeOracle
from onnxcompress.config import CompressConfig
from onnxcompress.passes.base import Progress

if TYPE_CHECKING:
    from onnxcompress.calibration import CalibrationSet
    from onnxcompress.report import CompressReport


@dataclass
class CompressContext:
    """Settings, shapes, real inputs and the report, the same for every pass of one compression.

    A pass's own findings are not parked here: ``ReferencePass`` hands its ``Reference`` to
    ``VerifyPass``, and prune's plan, exactness and recovery reach the passes after it through
    the report, published as soon as it has run (``pipeline.run_pipeline``).
    """

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
    #: measurements shared by the probes of a target search
    search_cache: object | None = None
    #: the output's data file (``spill.DataSink``), where the prune pass writes the weights it cuts
    data_sink: object | None = None

    def __post_init__(self) -> None:
        if self.search_cache is None:
            from onnxcompress.pruning.search_cache import SearchCache

            self.search_cache = SearchCache()
