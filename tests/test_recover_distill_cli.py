"""--recover distill without the finetune extra, and what auto chooses: no torch needed."""

from __future__ import annotations

import numpy as np
import pytest

from onnxcompress.cli import main
from onnxcompress.config import CompressConfig
from onnxcompress.pruning import distill_step

from conftest import MODELS

DIGITS = str(MODELS / "digits_cnn.onnx")


def test_distill_without_the_extra_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(distill_step, "backend_available", lambda: False)
    calib = tmp_path / "c.npz"
    np.savez(calib, input=np.load(MODELS / "digits_eval.npz")["x"][:32])
    assert main([DIGITS, "--calib", str(calib), "--recover", "distill", "-o", str(tmp_path / "o.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'onnxcompress[finetune]'" in err[0]
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("available, env, expected", [(False, "", "refit"), (True, "", "distill"), (True, "refit", "refit")])
def test_auto_recovery_is_distill_only_where_the_backend_is(monkeypatch, available, env, expected):
    monkeypatch.setattr(distill_step, "backend_available", lambda: available)
    monkeypatch.setenv("ONNXCOMPRESS_AUTO_RECOVER", env)
    assert CompressConfig().resolved_recover(True) == expected
    assert CompressConfig().resolved_recover(False) == "none"
    assert CompressConfig(recover="refit").resolved_recover(True) == "refit"
