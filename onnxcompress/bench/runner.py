"""Time onnxruntime sessions: per provider and batch size, alone or paired A/B.

Paired runs keep both sessions alive and interleave them, alternating which model
goes first in each pair (A,B then B,A), so drift on a busy machine (frequency,
other processes, thermal) lands on both models alike and neither always runs in
the other's cache shadow. On CUDA the inputs and outputs are bound on the device
with IOBinding, so host/device copies stay out of the timed region.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnxcompress.analysis.shapes import Shape, graph_inputs, resolve_input_shapes
from onnxcompress.bench.report import BenchReport, BenchRun
from onnxcompress.bench.stats import latency_stats, paired_speedup
from onnxcompress.errors import InputError, VerificationError
from onnxcompress.io import file_bytes, load_model
from onnxcompress.npz_inputs import check_feed_names
from onnxcompress.runtime import PROVIDERS, open_session, random_feeds
from onnxcompress.verify import compare_outputs

logger = logging.getLogger(__name__)

#: Timed runs after this many warm-up runs. 10 warm-ups cover onnxruntime's first-run
#: allocations and kernel selection; 50 timed runs put p90 on 5 samples, and the
#: median of 50 pairs is stable to a few percent on a quiet machine.
DEFAULT_WARMUP = 10
DEFAULT_ITERS = 50

#: (label, done, total) after every run of a point; label names the point.
ProgressFn = Callable[[str, int, int], None]


@dataclass
class BenchConfig:
    """What to time. ``threads=None`` keeps onnxruntime's default (one per physical core)."""

    providers: list[str] = field(default_factory=lambda: ["cpu"])
    batches: list[int] = field(default_factory=lambda: [1])
    iters: int = DEFAULT_ITERS
    warmup: int = DEFAULT_WARMUP
    threads: int | None = None
    input_shapes: dict[str, Shape] = field(default_factory=dict)
    #: Fixed feeds (e.g. from an .npz); their batch replaces ``batches``.
    inputs: dict[str, np.ndarray] | None = None
    #: Stop timing a point after this many seconds (at least 5 runs), if set.
    max_seconds: float | None = None
    #: Keep timing past ``iters`` until this many seconds have passed, if set: small
    #: models then get hundreds of pairs, which tames the noise of a busy machine.
    min_seconds: float | None = None
    seed: int = 0
    fidelity: bool = True

    def validate(self) -> None:
        if not self.providers:
            raise InputError("--providers: give at least one of cpu, cuda")
        for p in self.providers:
            if p not in PROVIDERS:
                raise InputError(f"--providers: unknown provider {p!r} (known: {', '.join(PROVIDERS)})")
        if not self.batches or any(b < 1 for b in self.batches):
            raise InputError(f"--batch: sizes must be positive integers, got {self.batches}")
        if self.iters < 1:
            raise InputError(f"--iters must be >= 1, got {self.iters}")
        if self.warmup < 0:
            raise InputError(f"--warmup must be >= 0, got {self.warmup}")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads must be >= 1, got {self.threads}")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise InputError(f"--max-seconds must be positive, got {self.max_seconds}")
        if self.min_seconds is not None and self.min_seconds < 0:
            raise InputError(f"--min-seconds must be >= 0, got {self.min_seconds}")


def machine_info() -> dict:
    """CPU model, logical cores, onnxruntime version and its available providers."""
    import onnxruntime as ort

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "onnxruntime": ort.__version__,
        "available_providers": list(ort.get_available_providers()),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def batched_shapes(model, overrides: dict[str, Shape], batch: int) -> dict[str, Shape]:
    """Concrete input shapes with dim 0 set to ``batch`` wherever the model leaves it free."""
    base = resolve_input_shapes(model, overrides)
    out: dict[str, Shape] = {}
    for v in graph_inputs(model):
        shape = base[v.name]
        if not shape:
            out[v.name] = shape
            continue
        fixed = v.shape[0] if v.shape is not None and len(v.shape) else None
        # dim_value -1 or 0 (a PaddlePaddle habit) is dynamic, as onnxruntime treats it
        if isinstance(fixed, int) and fixed > 0:
            if fixed != batch:
                raise InputError(
                    f"input {v.name!r} has a fixed batch dim of {fixed}; cannot run batch {batch} "
                    f"(export the model with a dynamic batch axis)"
                )
            out[v.name] = shape
        else:
            out[v.name] = (batch, *shape[1:])
    return out


def feeds_for(model, config: BenchConfig, batch: int) -> dict[str, np.ndarray]:
    """The benchmark inputs at ``batch``: the user's fixed feeds, or seeded random ones."""
    if config.inputs is not None:
        return config.inputs
    return random_feeds(model, batched_shapes(model, config.input_shapes, batch), config.seed)


def _batch_of(feeds: dict[str, np.ndarray]) -> int:
    for a in feeds.values():
        if np.ndim(a) >= 1:
            return int(np.shape(a)[0])
    return 1


class TimedSession:
    """One onnxruntime session prepared for repeated timed runs on fixed feeds."""

    def __init__(
        self,
        path: str | os.PathLike,
        provider: str,
        threads: int | None,
        feeds: dict[str, np.ndarray],
        io_binding: bool | None = None,
    ):
        """``io_binding=None`` binds on CUDA only; True forces it (also on CPU, for tests)."""
        import onnxruntime as ort

        providers = ["cuda", "cpu"] if provider == "cuda" else ["cpu"]
        self.session = open_session(path, providers=providers, threads=threads, prepack=True)
        self.provider_used = self.session.get_providers()[0]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.feeds = feeds
        self.binding = None
        on_gpu = self.provider_used == PROVIDERS["cuda"]
        if io_binding or (io_binding is None and on_gpu):
            self._bind(ort, "cuda" if on_gpu else "cpu")

    def _bind(self, ort, device: str) -> None:
        # Inputs are copied to the device once; outputs are allocated there by the first
        # run and then re-bound, so a timed run neither copies nor allocates.
        b = self.session.io_binding()
        self._device_inputs = []
        for name, arr in self.feeds.items():
            ov = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr), device, 0)
            self._device_inputs.append(ov)
            b.bind_ortvalue_input(name, ov)
        for name in self.output_names:
            b.bind_output(name, device, 0)
        self.session.run_with_iobinding(b)
        outs = b.get_outputs()
        b.clear_binding_outputs()
        for name, ov in zip(self.output_names, outs):
            b.bind_ortvalue_output(name, ov)
        self._device_outputs = outs
        self.binding = b

    def run(self) -> None:
        if self.binding is not None:
            # Run() waits for the CUDA stream before returning; synchronize_outputs
            # makes that explicit so the timer never stops early.
            self.session.run_with_iobinding(self.binding)
            self.binding.synchronize_outputs()
        else:
            self.session.run(self.output_names, self.feeds)

    def timed(self) -> float:
        t0 = time.perf_counter()
        self.run()
        return time.perf_counter() - t0

    def outputs(self) -> dict[str, np.ndarray]:
        """One more run, outputs fetched to the host (not timed)."""
        if self.binding is not None:
            self.run()
            return dict(zip(self.output_names, self.binding.copy_outputs_to_cpu()))
        return dict(zip(self.output_names, self.session.run(self.output_names, self.feeds)))


def _resolve_providers(requested: list[str], warnings: list[str]) -> list[str]:
    """Requested providers that this onnxruntime can run; CUDA falls back to CPU with a warning."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    out: list[str] = []
    for p in requested:
        if p == "cuda" and PROVIDERS["cuda"] not in available:
            msg = (
                "CUDA execution provider is not available in this onnxruntime "
                f"(available: {', '.join(available)}); running on CPU instead"
            )
            warnings.append(msg)
            logger.warning(msg)
            p = "cpu"
        if p not in out:
            out.append(p)
    return out


def _open(path, provider, threads, feeds, warnings: list[str]) -> TimedSession:
    try:
        s = TimedSession(path, provider, threads, feeds)
    except Exception as exc:  # noqa: BLE001
        if provider != "cuda":
            raise InputError(f"onnxruntime cannot load {path}: {str(exc).splitlines()[0]}") from exc
        msg = f"CUDA session for {Path(path).name} failed ({str(exc).splitlines()[0]}); running on CPU instead"
        warnings.append(msg)
        logger.warning(msg)
        return _open(path, "cpu", threads, feeds, warnings)
    if provider == "cuda" and s.provider_used != PROVIDERS["cuda"]:
        msg = f"onnxruntime could not start CUDA for {Path(path).name} (got {s.provider_used}); timings are CPU"
        if msg not in warnings:
            warnings.append(msg)
        logger.warning(msg)
    return s


def _fidelity(a: TimedSession, b: TimedSession) -> dict:
    ref, got = a.outputs(), b.outputs()
    if set(ref) != set(got) and len(ref) == len(got):
        got = dict(zip(ref, got.values()))  # outputs renamed: compare by position
    try:
        return compare_outputs(ref, got).to_dict()
    except (VerificationError, KeyError) as exc:
        return {"cosine_min": 0.0, "max_abs_diff": float("inf"), "top1_agreement": None, "error": str(exc)}


#: Hard cap on timed runs per point when --min-seconds keeps a tiny model going.
MAX_RUNS = 20_000


def _time_point(
    sessions: list[TimedSession], config: BenchConfig, label: str, progress: ProgressFn | None
) -> list[list[float]]:
    """Warm up then time every session, interleaved; returns per-session seconds.

    Timing stops after ``iters`` runs, or later while ``min_seconds`` has not passed,
    or earlier (but after at least 5 runs) once ``max_seconds`` has passed.
    """
    n = len(sessions)
    total = config.warmup + config.iters
    times: list[list[float]] = [[] for _ in sessions]
    start = None
    i = 0
    while True:
        order = range(n) if i % 2 == 0 else range(n - 1, -1, -1)
        warm = i < config.warmup
        if not warm and start is None:
            start = time.perf_counter()
        for k in order:
            dt = sessions[k].timed()
            if not warm:
                times[k].append(dt)
        i += 1
        if progress:
            progress(label, i, max(total, i))
        if start is None:
            continue
        done, elapsed = len(times[0]), time.perf_counter() - start
        if config.max_seconds is not None and done >= min(5, config.iters) and elapsed > config.max_seconds:
            break
        if done >= config.iters and (config.min_seconds is None or elapsed >= config.min_seconds):
            break
        if done >= MAX_RUNS:
            break
    if progress:
        progress(label, max(total, i), max(total, i))
    return times


def run_benchmark(
    model_a: str | os.PathLike,
    model_b: str | os.PathLike | None = None,
    config: BenchConfig | None = None,
    progress: ProgressFn | None = None,
) -> BenchReport:
    """Time ``model_a`` (and ``model_b``, interleaved) for every provider and batch size."""
    config = config or BenchConfig()
    config.validate()
    ma = load_model(model_a)
    names_a = [v.name for v in graph_inputs(ma)]
    if model_b is not None:
        names_b = [v.name for v in graph_inputs(load_model(model_b))]
        if set(names_a) != set(names_b):
            raise InputError(
                f"A and B take different inputs ({', '.join(names_a)} vs {', '.join(names_b)}); "
                "a paired benchmark needs the same feeds"
            )
    batches = list(config.batches)
    if config.inputs is not None:
        check_feed_names(names_a, config.inputs, "--inputs")
        batches = [_batch_of(config.inputs)]
    report = BenchReport(
        model_a=str(model_a),
        file_bytes_a=file_bytes(model_a),
        model_b=str(model_b) if model_b is not None else None,
        file_bytes_b=file_bytes(model_b) if model_b is not None else None,
        settings={
            "providers": list(config.providers),
            "batches": batches,
            "iters": config.iters,
            "warmup": config.warmup,
            "threads": config.threads,
            "max_seconds": config.max_seconds,
            "min_seconds": config.min_seconds,
            "inputs": "npz" if config.inputs is not None else f"random (seed {config.seed})",
            "order": "interleaved, alternating A,B / B,A per pair" if model_b is not None else "single",
            "speedup": "median(A) / median(B)",
        },
        machine=machine_info(),
    )
    for provider in _resolve_providers(config.providers, report.warnings):
        for batch in batches:
            feeds = feeds_for(ma, config, batch)
            sessions = [_open(model_a, provider, config.threads, feeds, report.warnings)]
            if model_b is not None:
                sessions.append(_open(model_b, provider, config.threads, feeds, report.warnings))
            used = sessions[0].provider_used
            label = f"{used.replace('ExecutionProvider', '')} batch {batch}"
            logger.info("timing %s", label)
            times = _time_point(sessions, config, label, progress)
            run = BenchRun(
                provider=provider,
                provider_used=used,
                batch=batch,
                io_binding=sessions[0].binding is not None,
                a=latency_stats(times[0], batch),
            )
            if model_b is not None:
                run.b = latency_stats(times[1], batch)
                run.paired = paired_speedup(times[0], times[1])
                if config.fidelity:
                    run.fidelity = _fidelity(sessions[0], sessions[1])
            report.runs.append(run)
            del sessions
    return report
