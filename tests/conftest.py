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
