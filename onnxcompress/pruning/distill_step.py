"""Recovery's last step: distillation, when the ``finetune`` extra (torch) is installed.

This module stays importable without torch: it checks the backend, picks the boundary
features from the refit's consumers, and turns every reason not to distill (no torch, an
op the backend cannot run) into a warning that keeps the refit, never a crash.
"""

from __future__ import annotations

import importlib.util
import logging

import numpy as np
import onnx_ir as ir

logger = logging.getLogger(__name__)

EXTRA_HINT = "pip install 'onnxcompress[finetune]'"


def backend_available() -> bool:
    """Whether the differentiable backend (torch) can be imported, without importing it."""
    return importlib.util.find_spec("torch") is not None


def boundary_features(model: ir.Model, consumers) -> list:
    """(student, teacher, kept channels) for the outputs of the layers that lost input channels.

    Only a layer whose output is the same tensor in both graphs counts (a MatMul followed by a
    folded bias is not). Channels the layer itself lost as a producer are dropped from the teacher's.
    """
    from onnxcompress.channels.rules import consumer_of
    from onnxcompress.finetune.distill import MAX_FEATURES, Feature

    out = []
    for c in consumers:
        name = c.node.outputs[0].name
        hooks = consumer_of(c.node)
        if name != c.ref_output or hooks is None:
            continue
        keep = None if c.out_keep is None or bool(np.all(c.out_keep)) else np.asarray(c.out_keep)
        if keep is not None and not hooks.channels_first:
            continue  # a Gemm/MatMul's channels lie on its last axis: only channel-first drops are taken
        out.append(Feature(name, c.ref_output, keep))
    return evenly(out, MAX_FEATURES)


def with_defaults(cfg, maps: list[str], augment: float, average: float):
    """(``cfg`` with the perturbed share and the weight average resolved where not given (None), why
    they are off): ``augment`` and ``average`` (the CLI's ``config.DISTILL_AUGMENT`` and
    ``DISTILL_AVERAGE``), or 0 on detectors and segmenters (an output in ``maps`` is a probability
    map or per-anchor scores), as the refit's perturbations are (``CalibratedPruning._refit_augment``).
    A None ``cfg`` stays None: ``run_distillation`` then uses ``DistillConfig()``, whose own defaults
    are 0 and 0 (the Python class keeps them; the CLI and ``compress()`` always pass a config)."""
    if cfg is None or (cfg.augment is not None and cfg.average is not None):
        return cfg, None
    from dataclasses import replace

    from onnxcompress.fidelity import off_on_maps

    unset = [flag for flag, v in (("--distill-augment", cfg.augment), ("--distill-average", cfg.average)) if v is None]
    why = f"{' and '.join(unset)} {'is' if len(unset) == 1 else 'are'} {off_on_maps(maps)}" if maps else None
    return replace(cfg, augment=cfg.augment if cfg.augment is not None else 0.0 if maps else augment,
                   average=cfg.average if cfg.average is not None else 0.0 if maps else average), why


def run_distillation(model: ir.Model, reference: ir.Model, consumers, fit, held, cfg, progress=None) -> dict:
    """Distill ``model`` (in place) against ``reference``; the report section, with ``warning`` when skipped."""
    if not backend_available():
        return {"kept": "refit", "warning": f"--recover distill needs the finetune extra ({EXTRA_HINT}); the refit is kept"}
    from onnxcompress.finetune import UnsupportedGraph, unsupported_ops
    from onnxcompress.finetune.distill import DistillConfig, Distiller

    cfg = cfg or DistillConfig()
    proto = ir.to_proto(model)
    missing = unsupported_ops(proto)
    if missing:
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(missing.items()))
        return {"kept": "refit", "unsupported_ops": missing,
                "warning": f"distillation skipped: the torch backend cannot run {ops}; the refit is kept"}
    try:
        distiller = Distiller(model, reference, boundary_features(model, consumers), fit, held, cfg)
    except UnsupportedGraph as exc:
        return {"kept": "refit", "warning": f"distillation skipped: {exc}; the refit is kept"}
    if not distiller.module.parameter_names():
        return {"kept": "refit", "train": cfg.train,
                "warning": f"distillation skipped: no weight to train (--distill-train {cfg.train}); the refit is kept"}
    bar = None
    if progress is not None:
        def bar(step, total, loss, drift, eta):
            progress(step, total, f"loss {loss:.4f}, held-out drift {drift:.4f}, ETA {eta:.0f} s")
    return distiller.run(bar)


def evenly(items: list, n: int) -> list:
    """At most ``n`` of ``items``, evenly spaced, the last one always included."""
    if len(items) <= n:
        return items
    idx = sorted({int(round(i)) for i in np.linspace(0, len(items) - 1, n)})
    return [items[i] for i in idx]
