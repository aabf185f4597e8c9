"""onnxruntime benchmarks: latency percentiles per provider and batch, paired A/B runs with fidelity.

``runner.run_benchmark`` is the library entry point; ``cli.run_bench`` renders it.
"""

from __future__ import annotations

from onnxcompress.bench.report import BenchReport, BenchRun, LatencyStats, PairedStats
from onnxcompress.bench.runner import BenchConfig, run_benchmark

__all__ = ["BenchConfig", "BenchReport", "BenchRun", "LatencyStats", "PairedStats", "run_benchmark"]
