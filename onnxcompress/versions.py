"""The versions of the libraries that wrote a model, for the JSON reports.

A model written twice from the same input, options and seed is byte-identical on one
machine, but not across library versions (onnxruntime's kernels, numpy's BLAS and
onnx's serializer all move the bytes). A report that records them lets a user, or a
CI gate, tell a changed environment from a changed model.
"""

from __future__ import annotations

import functools
import platform
from importlib import metadata

#: the libraries the reports name besides onnxcompress itself; optional ones are ``None`` where absent
DISTRIBUTIONS = ("onnx", "onnx-ir", "onnxruntime", "onnxruntime-gpu", "numpy", "onnxsim", "torch")


@functools.lru_cache(maxsize=1)
def _looked_up() -> tuple[tuple[str, str | None], ...]:
    from onnxcompress import __version__  # the code that runs, even from a checkout not installed

    out: list[tuple[str, str | None]] = [("python", platform.python_version()), ("onnxcompress", __version__)]
    for name in DISTRIBUTIONS:
        try:
            out.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            out.append((name, None))
    return tuple(out)


def library_versions() -> dict[str, str | None]:
    """``{"python": ..., "onnxcompress": ..., library: version or None}``, looked up once per process
    (a new dict each call, so a report that edits its copy changes no other)."""
    return dict(_looked_up())


def versions_text() -> str:
    """What ``onnxcompress --version`` prints: ours on the first line, then every library the reports name."""
    v = library_versions()
    rest = ", ".join(f"{k} {v[k] or 'not installed'}" for k in v if k != "onnxcompress")
    return f"onnxcompress {v['onnxcompress']}\n{rest}"
