"""Moved to ``onnxcompress._ir_utils``; kept only until every importer is updated."""

from onnxcompress._ir_utils import const_array, const_tensor, is_const, is_std  # noqa: F401
