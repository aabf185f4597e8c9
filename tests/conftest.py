from __future__ import annotations

import json
from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parent.parent / "models"


@pytest.fixture(scope="session")
def models_meta() -> dict:
    return json.loads((MODELS / "MODELS.json").read_text())


def model_shapes(meta: dict, name: str) -> dict:
    return {k: tuple(v) for k, v in meta[name]["input_shapes"].items()}


@pytest.fixture
def ext(tmp_path) -> Path:
    """dynamo_ext.onnx (weights in dynamo_ext.onnx.data) copied into a fresh folder."""
    import shutil

    for name in ("dynamo_ext.onnx", "dynamo_ext.onnx.data"):
        shutil.copy(MODELS / name, tmp_path / name)
    return tmp_path / "dynamo_ext.onnx"
