"""The versions of the libraries that wrote a model, for the JSON reports.

A model written twice from the same input, options and seed is byte-identical on one
machine, but not across library versions (onnxruntime's kernels, numpy's BLAS and
onnx's serializer all move the bytes). A report that records them lets a user, or a
CI gate, tell a changed environment from a changed model.
"""

from __future__ import annotations

import argparse
import functools
import platform
from importlib import metadata

#: distributions the reports name; the optional ones are ``None`` where absent
DISTRIBUTIONS = ("onnxcompress", "onnx", "onnx-ir", "onnxruntime", "onnxruntime-gpu", "numpy", "onnxsim", "torch")


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str | None]:
    """``{"python": ..., distribution: version or None}`` for the process, looked up once."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in DISTRIBUTIONS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def versions_text() -> str:
    """``onnxcompress --version``: ours on the first line, then every library the reports name."""
    v = library_versions()
    rest = ", ".join(f"{k} {v[k] or 'not installed'}" for k in v if k != "onnxcompress")
    return f"onnxcompress {v['onnxcompress']}\n{rest}"


class PrintVersions(argparse.Action):
    """``--version``: print ``versions_text`` on stdout and exit 0 (looked up only when asked)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(versions_text())  # stdout, as argparse's own version action
        parser.exit()
