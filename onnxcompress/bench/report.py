"""Benchmark results as plain dataclasses, with JSON and Markdown renderings."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class LatencyStats:
    """One model's timings at one provider and batch size (milliseconds per run)."""

    iters: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    std_ms: float
    throughput: float  # samples per second, batch / mean

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PairedStats:
    """Speedup of B over A from interleaved runs: ratio of medians, spread of per-pair ratios."""

    speedup: float
    pair_median: float  # median of the per-pair ratios, a second robust estimate
    ratio_lo: float
    ratio_hi: float
    spread_percentiles: list[float]
    pairs: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class BenchRun:
    """Results for one (provider, batch) point."""

    provider: str  # as requested: cpu | cuda
    provider_used: str  # what onnxruntime actually ran, e.g. CPUExecutionProvider
    batch: int
    io_binding: bool
    a: LatencyStats
    b: LatencyStats | None = None
    paired: PairedStats | None = None
    fidelity: dict[str, Any] | None = None

    def to_dict(self) -> dict:
        return {
            "provider": self.provider,
            "provider_used": self.provider_used,
            "batch": self.batch,
            "io_binding": self.io_binding,
            "a": self.a.to_dict(),
            "b": self.b.to_dict() if self.b else None,
            "paired": self.paired.to_dict() if self.paired else None,
            "fidelity": self.fidelity,
        }


@dataclass
class BenchReport:
    """Everything one ``onnxcompress bench`` measured."""

    model_a: str
    file_bytes_a: int
    model_b: str | None = None
    file_bytes_b: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    runs: list[BenchRun] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def paired(self) -> bool:
        return self.model_b is not None

    def to_dict(self) -> dict:
        return {
            "model_a": self.model_a,
            "file_bytes_a": self.file_bytes_a,
            "model_b": self.model_b,
            "file_bytes_b": self.file_bytes_b,
            "settings": self.settings,
            "machine": self.machine,
            "runs": [r.to_dict() for r in self.runs],
            "warnings": list(self.warnings),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_markdown(self) -> str:
        """A self-contained Markdown section: settings, one table, fidelity, warnings."""
        s = self.settings
        lines = ["# onnxcompress bench", ""]
        lines.append(f"- A: `{self.model_a}` ({_mb(self.file_bytes_a)})")
        if self.paired:
            lines.append(f"- B: `{self.model_b}` ({_mb(self.file_bytes_b or 0)})")
        lines.append(
            f"- warmup {s.get('warmup')}, iters {s.get('iters')}"
            + (f" (at least {s['min_seconds']:g} s)" if s.get("min_seconds") else "")
            + f", threads {s.get('threads') or 'onnxruntime default'}, "
            f"inputs {s.get('inputs', 'random')}"
        )
        m = self.machine
        if m:
            lines.append(f"- machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, onnxruntime {m.get('onnxruntime', '?')}")
        lines.append("")
        head = ["provider", "batch", "A p50 ms", "A p90 ms", "A p99 ms", "A mean ms", "A samples/s"]
        if self.paired:
            head += ["B p50 ms", "B p90 ms", "B p99 ms", "B mean ms", "B samples/s", "speedup (A/B medians)", "pair ratio spread"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join("---" if i < 1 else "---:" for i in range(len(head))) + "|")
        for r in self.runs:
            row = [r.provider_used, str(r.batch)] + _lat_cells(r.a)
            if self.paired and r.b and r.paired:
                p = r.paired
                row += _lat_cells(r.b) + [
                    f"{p.speedup:.3f}x",
                    f"{p.ratio_lo:.3f}-{p.ratio_hi:.3f} (p{p.spread_percentiles[0]:g}-p{p.spread_percentiles[1]:g})",
                ]
            lines.append("| " + " | ".join(row) + " |")
        fids = [(r, r.fidelity) for r in self.runs if r.fidelity]
        if fids:
            lines += ["", "Fidelity of B against A on the same inputs:", ""]
            lines.append("| provider | batch | min cosine | max abs diff | top-1 agreement |")
            lines.append("|---|---:|---:|---:|---:|")
            for r, f in fids:
                top1 = "-" if f.get("top1_agreement") is None else f"{f['top1_agreement']:.1%}"
                lines.append(f"| {r.provider_used} | {r.batch} | {f['cosine_min']:.6f} | {f['max_abs_diff']:.3g} | {top1} |")
        if self.warnings:
            lines += ["", "Warnings:", ""] + [f"- {w}" for w in self.warnings]
        return "\n".join(lines) + "\n"


def _lat_cells(x: LatencyStats) -> list[str]:
    return [f"{x.p50_ms:.2f}", f"{x.p90_ms:.2f}", f"{x.p99_ms:.2f}", f"{x.mean_ms:.2f}", f"{x.throughput:.1f}"]


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"
