"""Distillation's defaults off the calibration data: on for image models, off on detectors and segmenters."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from onnxcompress.config import DISTILL_AUGMENT, DISTILL_AVERAGE
from onnxcompress.pruning.distill_step import backend_available, with_defaults


@dataclass
class _Cfg:  # the two fields of finetune.distill.DistillConfig that with_defaults reads (no torch here)
    augment: float | None = None
    average: float | None = None


def test_defaults_are_on_for_a_model_without_probability_maps():
    cfg, why = with_defaults(_Cfg(), [], DISTILL_AUGMENT, DISTILL_AVERAGE)
    assert (cfg.augment, cfg.average, why) == (DISTILL_AUGMENT, DISTILL_AVERAGE, None)
    assert (DISTILL_AUGMENT, DISTILL_AVERAGE) == (1.0, 0.95)


def test_defaults_are_off_on_a_probability_map_and_the_reason_names_it():
    cfg, why = with_defaults(_Cfg(), ["prob"], DISTILL_AUGMENT, DISTILL_AVERAGE)
    assert (cfg.augment, cfg.average) == (0.0, 0.0)
    assert "'prob' is a probability map" in why and why.startswith("--distill-augment and --distill-average are")


def test_given_values_are_kept_whatever_the_outputs():
    for maps in ([], ["prob"]):
        cfg, why = with_defaults(_Cfg(0.5, 0.9), maps, DISTILL_AUGMENT, DISTILL_AVERAGE)
        assert (cfg.augment, cfg.average, why) == (0.5, 0.9, None)
    # one given: the other still follows the rule
    cfg, why = with_defaults(_Cfg(augment=0.25), ["prob"], DISTILL_AUGMENT, DISTILL_AVERAGE)
    assert (cfg.augment, cfg.average) == (0.25, 0.0) and why.startswith("--distill-average is off by default")
    assert with_defaults(None, [], DISTILL_AUGMENT, DISTILL_AVERAGE) == (None, None)


@pytest.mark.skipif(not backend_available(), reason="needs the finetune extra (torch): pip install 'onnxcompress[finetune]'")
def test_a_detector_distills_on_the_given_samples_by_default(tmp_path):
    """A DBNet-like detector (a sigmoid map output): no perturbed minibatches, no weight average,
    and the report says why; an explicit --distill-augment perturbs it as elsewhere."""
    import onnxcompress as oc

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
    from test_dense_maps import db_like

    model = db_like(tmp_path / "db.onnx")
    x = np.random.default_rng(0).uniform(0, 1, (48, 3, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    runs = {share: oc.compress(model, oc.CompressConfig(target_macs=0.7, calib=str(tmp_path / "calib.npz"),
                                                        recover="distill", distill_steps=5, distill_augment=share))
            .report.recovery["distill"] for share in (None, 1.0)}
    assert (runs[None]["augment"], runs[None]["average"], runs[None]["held_out_perturbed"]) == (0.0, 0.0, 0)
    assert "'prob' is a probability map" in runs[None]["defaults_off"]
    assert runs[1.0]["augment"] == 1.0 and runs[1.0]["held_out_perturbed"] > 0 and runs[1.0]["average"] == 0.0
    assert runs[1.0]["defaults_off"].startswith("--distill-average is off by default")
