"""onnxcompress: post-training structural compression for any ONNX model."""

from __future__ import annotations

from onnxcompress.api import Result, compress, inspect
from onnxcompress.config import CompressConfig
from onnxcompress.errors import InputError, OnnxCompressError, ShapeError, VerificationError

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
