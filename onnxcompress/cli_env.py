"""The process around one CLI command: signals, usage errors, logs and what reaches the terminal.

- SIGTERM becomes an exception (``Terminated``) in the main thread, so the cleanup that
  runs for Ctrl-C (temporary files, see ``paths.Staging``) runs for it too; every signal
  is recorded, only the first one raises (a second must not cut the cleanup short), and
  one swallowed by a finaliser is still reported: a signal at any stage is one line and
  exit 130 (SIGINT) or 143 (SIGTERM);
- argparse's usage errors become our ``InputError``: one line and exit 2, not six;
- logs: other libraries' records and Python warnings appear with --debug only, and our
  own are held until the command ends, printed after one that completed and dropped
  after one that failed, whose one error line is then all that stderr holds;
- messages are printed with control characters escaped (``clean``), so a newline or an
  ANSI escape in a path or an input name cannot reach the terminal raw;
- numpy is asked not to mark its big arrays for transparent huge pages (``no_huge_pages``).

Only light standard modules are imported here: the CLI must start before numpy and onnx
load, so that a Ctrl-C while they load is still one line.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import unicodedata
from collections.abc import Iterator

from onnxcompress.errors import InputError


class UsageError(InputError):
    """A command line argparse rejected (one line, exit 2, like every bad input)."""


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that cleanup runs as it does for Ctrl-C."""


#: the signals received during the current command, in order (``main`` clears it)
_received: list[int] = []


def note_signal(signum: int) -> bool:
    """Record ``signum``; True when it is the command's first signal (the one that stops it)."""
    _received.append(signum)
    return len(_received) == 1


def received_signal() -> int | None:
    """The first signal the current command received, or None."""
    return _received[0] if _received else None


def clear_signals() -> None:
    _received.clear()


def raise_if_signalled() -> None:
    """Raise the exception a received signal stands for, if one arrived and was lost.

    A signal's exception can be swallowed when it lands inside a finaliser (Python prints
    it as "Exception ignored" and carries on); a command checks here before its outputs
    are committed, so an interrupted command still writes nothing.
    """
    sig = received_signal()
    if sig == signal.SIGTERM:
        raise Terminated()
    if sig is not None:
        raise KeyboardInterrupt


def signal_exit(sig: int) -> tuple[int, str]:
    """The exit code and the one line for a command stopped by ``sig``."""
    return (143, "terminated") if sig == signal.SIGTERM else (130, "interrupted")


def _on_sigterm(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup short
    if note_signal(signum):
        raise Terminated()


def _unraisable(hook):
    """``sys.unraisablehook`` that drops a signal's exception swallowed in a finaliser.

    The signal is recorded (``received_signal``) and reported once, as one line, when the
    command ends; without this Python prints a traceback for it and carries on.
    """
    def quiet(unraisable) -> None:
        if isinstance(unraisable.exc_value, (KeyboardInterrupt, Terminated)):
            return
        hook(unraisable)

    return quiet


def _argparse_error(self: argparse.ArgumentParser, message: str) -> None:
    raise UsageError(f"{message} (see '{self.prog} --help')")


_BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    if unicodedata.category(ch) not in ("Cc", "Zl", "Zp") and ch not in _BIDI:
        return ch
    return _ESCAPES.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")


def clean(text: str, keep_newlines: bool = False) -> str:
    """``text`` with control characters escaped, so a path or a name cannot move the cursor or recolour.

    ``keep_newlines`` leaves line breaks alone (multi-line text on stdout); every other control
    character, ESC among them, is still escaped.
    """
    if keep_newlines:
        return "\n".join("".join(_escape(ch) for ch in line) for line in text.split("\n"))
    return "".join(_escape(ch) for ch in text)


def say(message: str) -> None:
    """One line on stderr, prefixed with the program's name."""
    print("onnxcompress: " + clean(message), file=sys.stderr)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


class _OwnRecords(logging.Filter):
    """Lets through this package's records only (third-party ones wait for --debug)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name == "onnxcompress" or record.name.startswith("onnxcompress.")


class _HeldRecords(logging.Handler):
    """Holds log records until ``finish``: handed to ``target`` when kept, else dropped."""

    def __init__(self, target: logging.Handler) -> None:
        super().__init__()
        self.target = target
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def finish(self, keep: bool) -> None:
        records, self.records = self.records, []
        for record in records if keep else ():
            self.target.handle(record)


_handler: logging.Handler | None = None


def setup_logging(debug: bool, level: int = logging.WARNING) -> None:
    """Our logs at ``level`` on stderr, held until the command ends; other libraries' logs and
    Python warnings only with --debug, which streams everything as it comes.

    onnx-ir, onnxsim and the like log and warn about models they dislike; those lines, and
    our own warnings, would otherwise come before the one-line error of a failed command.
    (onnxruntime's own log follows the root logger: ``runtime.default_log_severity``.) Calling it again
    reconfigures.
    """
    global _handler
    root = logging.getLogger()
    held = _handler.records if isinstance(_handler, _HeldRecords) else []
    if _handler is not None:
        root.removeHandler(_handler)
    stream = logging.StreamHandler()
    stream.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if debug:
        _handler = stream
    else:
        _handler = _HeldRecords(stream)
        _handler.records = held
        _handler.addFilter(_OwnRecords())
    root.addHandler(_handler)
    root.setLevel(logging.DEBUG if debug else level)
    logging.captureWarnings(True)


@contextlib.contextmanager
def no_huge_pages() -> Iterator[None]:
    """Import numpy without its ``madvise(MADV_HUGEPAGE)`` on big arrays, unless the user set it.

    Where the kernel's THP defrag setting is ``madvise`` (a common default), every weight-sized
    allocation numpy marks may stall in direct memory compaction. On the 2.3 GB model of
    ``bench/SCALE.md`` that made the BatchNorm fold 3.9 s instead of 1.3 s (``sys`` time).
    numpy reads ``NUMPY_MADVISE_HUGEPAGE`` once, at import: an already imported numpy keeps
    its setting, and the variable is restored afterwards.
    """
    added = "numpy" not in sys.modules and "NUMPY_MADVISE_HUGEPAGE" not in os.environ
    if added:
        os.environ["NUMPY_MADVISE_HUGEPAGE"] = "0"
    try:
        yield
    finally:
        if added:
            os.environ.pop("NUMPY_MADVISE_HUGEPAGE", None)


@contextlib.contextmanager
def command_environment(debug: bool, level: int) -> Iterator[None]:
    """For one command: SIGTERM as ``Terminated``, argparse errors as ``UsageError``, logs held.

    Everything is restored on the way out, so ``main`` can be called in-process repeatedly.
    """
    in_main = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    old_error = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = _argparse_error  # type: ignore[method-assign]
    old_unraisable = sys.unraisablehook
    sys.unraisablehook = _unraisable(old_unraisable)
    root = logging.getLogger()
    old_level = root.level
    completed = False
    try:
        setup_logging(debug, level)
        yield
        completed = True
    finally:
        argparse.ArgumentParser.error = old_error  # type: ignore[method-assign]
        sys.unraisablehook = old_unraisable
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        if isinstance(_handler, _HeldRecords):
            _handler.finish(keep=completed)
        if _handler is not None:
            root.removeHandler(_handler)
        root.setLevel(old_level)
        logging.captureWarnings(False)
