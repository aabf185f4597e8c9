"""Label-free fine-tuning support (the optional ``finetune`` extra: needs torch).

``GraphModule`` executes an ONNX graph with differentiable torch ops and trains its
initializers in place, so a pruned model can be distilled against the original without
re-exporting it. Nothing else in the package imports this subpackage at module level, and
importing the subpackage itself does not import torch: the names below load on first use,
so a missing torch surfaces as an ImportError there (and test collection still works).
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "GraphModule": "graph_module", "apply_state_arrays": "graph_module",
    "default_trainable": "graph_module", "unsupported_ops": "graph_module",
    "UnsupportedGraph": "ops",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
