"""Exception types. The CLI turns any of them into one line on stderr and exit code 2."""

from __future__ import annotations


class OnnxCompressError(Exception):
    """Base class for every error this package raises on purpose."""


class InputError(OnnxCompressError):
    """The user's input is unusable: missing file, not ONNX, malformed graph, bad option."""


class ShapeError(InputError):
    """A shape could not be resolved: a symbolic dim without --input-shape, or a bad spec."""


class BudgetError(OnnxCompressError):
    """No candidate met the accuracy/drift budget; nothing was written (exit code 1).

    ``report``: the refused model's report where there is one (a collapsed model's), and
    ``measured``: what the search measured (its probes), for the CLI's refusal ``--report``."""

    def __init__(self, message: str, report=None, measured: dict | None = None) -> None:
        super().__init__(message)
        self.report = report
        self.measured = measured


class CollapseError(BudgetError):
    """The compressed model's held-out task figure fell under the floor; nothing was written (exit 1)."""


class VerificationError(OnnxCompressError):
    """The compressed model failed a check (checker, session, run). Nothing was written."""
