"""onnxcompress: post-training structural compression for any ONNX model.

The public names are imported on first use (PEP 562), so ``import onnxcompress`` and the
command line start without loading numpy, onnx or onnxruntime; the CLI loads them inside
``main``, where a Ctrl-C is one line and exit 130 rather than a traceback.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from onnxcompress.api import Result, compress, inspect
    from onnxcompress.config import CompressConfig
    from onnxcompress.errors import InputError, OnnxCompressError, ShapeError, VerificationError

_LAZY = {
    "Result": "onnxcompress.api",
    "compress": "onnxcompress.api",
    "inspect": "onnxcompress.api",
    "CompressConfig": "onnxcompress.config",
    "InputError": "onnxcompress.errors",
    "OnnxCompressError": "onnxcompress.errors",
    "ShapeError": "onnxcompress.errors",
    "VerificationError": "onnxcompress.errors",
}

__all__ = [
    "CompressConfig",
    "InputError",
    "OnnxCompressError",
    "Result",
    "ShapeError",
    "VerificationError",
    "compress",
    "inspect",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'onnxcompress' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
