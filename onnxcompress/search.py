"""Target-driven compression under a budget: the most compressed model that still fits it.

Two budgets:
- ``--max-drift D``: the held-out drift measured by the verify step on the calibration
  data, on the task-aware metric: 1 - sequence agreement for outputs with positions
  (CTC, dense maps), else 1 - top-1 agreement, else the relative L2 error;
- ``--eval FILE --max-accuracy-drop X``: the accuracy lost on labelled data
  (classification or CTC sequences, see ``accuracy``).

Each probe is a full compression (prune, recover, verify); the per-group sensitivity
measurement is shared between probes.
- With ``--target-macs F``: F is tried first, then relaxed by 0.1 until the budget fits.
- Without: a bisection over the MACs fraction finds the smallest that fits (resolution 0.05).
A result over budget is never returned: ``BudgetError`` carries the numbers measured.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import replace

from onnxcompress.errors import BudgetError, CollapseError
from onnxcompress.fidelity import drift_of

logger = logging.getLogger(__name__)

STEP = 0.05


class _Budget:
    """Measures one candidate against the budget the config asks for."""

    def __init__(self, model_or_path, config) -> None:
        self.labelled = None
        if config.max_accuracy_drop is not None:
            from onnxcompress.accuracy import accuracy, load_labelled
            from onnxcompress.io import load_model

            self.labelled = load_labelled(config.eval, load_model(model_or_path))
            self.accuracy = accuracy
            self.original = accuracy(model_or_path if not hasattr(model_or_path, "graph") else _proto(model_or_path),
                                     self.labelled)
            self.limit = config.max_accuracy_drop
            self.metric = f"accuracy drop on {os.path.basename(config.eval)} ({len(self.labelled)} labelled samples)"
        else:
            self.limit = config.max_drift
            self.metric = ""

    def measure(self, result) -> float:
        if self.labelled is None:
            d, self.metric = drift_of(result.report.fidelity or {})
            return d
        with tempfile.TemporaryDirectory(prefix="onnxcompress-") as tmp:
            path = os.path.join(tmp, "candidate.onnx")
            import onnx_ir as ir

            ir.save(result.model, path, external_data="candidate.onnx.data")
            return self.original - self.accuracy(path, self.labelled)


def _proto(model):
    import onnx_ir as ir

    return ir.to_proto(model)


def search_under_budget(model_or_path, config, on_stage, compress_fn):
    from onnxcompress.pruning.search_cache import SearchCache

    budget = _Budget(model_or_path, config)
    cache = SearchCache()
    probes: list[dict] = []
    best = None

    def probe(target: float) -> bool:
        nonlocal best
        cfg = replace(config, target_macs=target, max_drift=None, max_accuracy_drop=None, eval=None)
        stage = (lambda name: on_stage(f"target {target:.2f}: {name}")) if on_stage else None
        try:
            result = compress_fn(model_or_path, cfg, on_stage=stage, search_cache=cache)  # one sensitivity sweep
        except CollapseError as exc:  # under the floor: over any budget
            probes.append({"target_macs": target, "macs_kept": None, "value": None, "fits": False, "collapsed": str(exc)})
            logger.info("target %.2f: collapsed", target)
            return False
        d = budget.measure(result)
        macs = result.report.after.macs / max(result.report.before.macs, 1)
        fits = d <= budget.limit + 1e-12
        probes.append({"target_macs": target, "macs_kept": macs, "value": d, "fits": fits})
        logger.info("target %.2f: MACs kept %.3f, %s %.4f", target, macs, budget.metric, d)
        if fits and (best is None or macs < best[1]):
            best = (result, macs)
        return fits

    if config.target_macs is not None:
        t = config.target_macs
        while not probe(t) and t < 1.0:
            t = min(1.0, round(t + 2 * STEP, 4))
        stopped = "the MAC target" if probes[0]["fits"] else "the budget (target relaxed)"
    else:
        lo, hi = 0.0, 1.0
        if probe(hi):
            while hi - lo > STEP + 1e-9:
                mid = round((lo + hi) / 2, 4)
                if probe(mid):
                    hi = mid
                else:
                    lo = mid
        stopped = "the budget"
    if best is None:
        seen = ", ".join(f"MACs {p['macs_kept']:.2f}: {p['value']:.4f}" if not p.get("collapsed")
                         else f"target {p['target_macs']:.2f}: collapsed" for p in probes)
        raise BudgetError(f"no candidate met the budget ({budget.metric} <= {budget.limit}); measured {seen}",
                          measured={"budget": {"metric": budget.metric, "limit": budget.limit}, "probes": probes})
    result = best[0]
    result.report.search = {
        **(result.report.search or {}),
        "budget": {"metric": budget.metric, "limit": budget.limit,
                   **({"original_accuracy": budget.original} if budget.labelled is not None else {})},
        "probes": probes,
        "stopped_by": stopped,
    }
    return result
