"""Gates of ``onnxcompress check``: one measured quantity against one threshold.

A ``Criterion`` is always reported; it is a gate only when the user gave its threshold
(``passed`` is None otherwise). A quantity that could not be measured fails its gate,
with the reason as its message.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

NOT_RUN = "not measured: the compressed model did not run"


@dataclass
class Criterion:
    """One measured quantity; ``passed`` is None when the user set no threshold for it."""

    name: str
    label: str
    value: float | None
    threshold: float | None = None
    op: str = ""  # ">=" or "<=" when gated
    passed: bool | None = None
    message: str = ""
    #: extra figures behind the value (the speed gate's interval and looks)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def gated(self) -> bool:
        return self.passed is not None

    def to_dict(self) -> dict:
        return asdict(self)


def gate(name: str, label: str, value: float | None, threshold: float | None, op: str, message: str = "") -> Criterion:
    """A criterion, judged when ``threshold`` is set: ``value op threshold`` (None fails)."""
    c = Criterion(name=name, label=label, value=value, threshold=threshold, op=op if threshold is not None else "")
    c.message = message
    if threshold is not None:
        c.passed = value is not None and (value >= threshold if op == ">=" else value <= threshold)
    return c


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.6g}"


def describe(c: Criterion) -> str:
    """``label = value (required op threshold): message``, one line."""
    s = f"{c.label} = {fmt(c.value)}"
    if c.gated:
        s += f" (required {c.op} {fmt(c.threshold)})"
    if c.message:
        s += f": {c.message}"
    return s


@dataclass
class ModelFigures:
    """What a deployment pays for: parameters, MACs (at the checked input shapes), bytes on disk."""

    params: int | None = None
    macs: int | None = None
    file_bytes: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def model_figures(path: str | os.PathLike, shapes: dict[str, tuple[int, ...]]) -> tuple[ModelFigures, str]:
    """Figures for the file at ``path`` (external data included in its size) and why any is missing."""
    from onnxcompress.api import inspect
    from onnxcompress.io import file_bytes

    fig = ModelFigures(file_bytes=file_bytes(path))
    try:
        r = inspect(path, {k: tuple(v) for k, v in shapes.items()})
    except Exception as exc:  # noqa: BLE001 - reported as the reason the gate could not measure
        return fig, f"not measured: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    fig.params, fig.macs = r.params, r.macs
    return fig, ""


def ratio(a: float | None, b: float | None) -> float | None:
    return b / a if a and b is not None else None


def size_criteria(
    before: ModelFigures, after: ModelFigures, why: str, max_macs_ratio: float | None,
    max_params_ratio: float | None, max_size_mb: float | None,
) -> list[Criterion]:
    """MACs and params kept (fractions of the original) and the compressed file's size in MB (10^6 bytes)."""
    out = []
    for name, label, a, b, thr in (
        ("max_macs_ratio", "MACs ratio (kept)", before.macs, after.macs, max_macs_ratio),
        ("max_params_ratio", "params ratio (kept)", before.params, after.params, max_params_ratio),
    ):
        value = ratio(a, b)
        msg = why if value is None and (a is None or b is None) else "the original has 0 of them" if value is None else ""
        out.append(gate(name, label, value, thr, "<=", msg))
    mb = after.file_bytes / 1e6 if after.file_bytes is not None else None
    out.append(gate("max_size_mb", "file size, MB (with external data)", mb, max_size_mb, "<="))
    return out
