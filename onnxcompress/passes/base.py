"""What every pass of the pipeline shares: a name, a report section, warnings, timing.

A pass fills ``self.report`` (its section of the JSON report) and ``self.warnings`` when
it runs. ``publish`` copies them into the ``CompressReport``; a pass whose findings
belong at the report's top level (pruning) overrides it. Nothing reads a pass's report
by name or by ``getattr``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

import onnx_ir as ir

if TYPE_CHECKING:
    from onnxcompress.report import CompressReport


class Progress:
    """Where a running pipeline reports: stage names as they start, and their timings."""

    def __init__(self, on_stage: Callable[[str], None] | None = None) -> None:
        self.on_stage = on_stage or (lambda name: None)
        self.timings: dict[str, float] = {}


class ReportingPass(ir.passes.InPlacePass):
    """An in-place pass with a report section; ``name`` keys it in the report and timings."""

    name = "pass"

    def __init__(self) -> None:
        super().__init__()
        self.report: dict = {}
        self.warnings: list[str] = []
        self.progress: Progress | None = None

    def __call__(self, model_or_result, /):
        if self.progress is None:
            return super().__call__(model_or_result)
        self.progress.on_stage(self.name.replace("_", " "))
        t = time.perf_counter()
        try:
            return super().__call__(model_or_result)
        finally:
            self.progress.timings[f"{self.name}_s"] = time.perf_counter() - t

    def publish(self, report: CompressReport) -> None:
        """Add this pass's findings to ``report`` (after it ran)."""
        if self.report:
            report.passes[self.name] = self.report
        report.warnings.extend(self.warnings)
