"""Target-driven compression under a budget: the most compressed model whose held-out drift fits.

Drift is measured by the verify step on the held-out calibration split, on the task-aware
metric: 1 - sequence agreement for outputs with positions (CTC, dense maps), else
1 - top-1 agreement, else the relative L2 error. Each probe is a full compression
(prune, recover, verify); the per-group sensitivity measurement is shared between probes.

- With ``--target-macs F``: F is tried first, then relaxed by 0.05 until the drift fits.
- Without: a bisection over the MACs fraction finds the smallest that fits (resolution 0.05).
A result over budget is never returned: ``BudgetError`` carries the numbers measured.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from onnxcompress.errors import BudgetError

logger = logging.getLogger(__name__)

STEP = 0.05


def drift_of(fidelity: dict) -> tuple[float, str]:
    """The budgeted drift of a verify step's fidelity section, and which metric it is."""
    if fidelity.get("sequence_agreement") is not None:
        return 1.0 - fidelity["sequence_agreement"], "1 - sequence agreement"
    if fidelity.get("agreement") is not None:
        return 1.0 - fidelity["agreement"], "1 - top-1 agreement"
    return float(fidelity.get("rel_l2_max", 0.0)), "relative L2"


def search_under_budget(model_or_path, config, on_stage, compress_fn):
    from onnxcompress.pruning.calibrated import SearchCache

    budget = config.max_drift
    cache = SearchCache()
    probes: list[dict] = []
    best = None

    def probe(target: float):
        nonlocal best
        cfg = replace(config, target_macs=target, max_drift=None)
        cfg._search_cache = cache  # shared sensitivity measurements
        stage = (lambda name: on_stage(f"target {target:.2f}: {name}")) if on_stage else None
        result = compress_fn(model_or_path, cfg, on_stage=stage)
        d, metric = drift_of(result.report.fidelity or {})
        macs = result.report.after.macs / max(result.report.before.macs, 1)
        probes.append({"target_macs": target, "macs_kept": macs, "drift": d, "metric": metric, "fits": d <= budget})
        logger.info("target %.2f: MACs kept %.3f, drift %.4f (%s)", target, macs, d, metric)
        if d <= budget and (best is None or macs < best[1]):
            best = (result, macs)
        return d <= budget

    if config.target_macs is not None:
        t = config.target_macs
        while not probe(t) and t < 1.0:
            t = min(1.0, round(t + 2 * STEP, 4))
        stopped = "the MAC target" if probes[0]["fits"] else "the drift budget (target relaxed)"
    else:
        lo, hi = 0.0, 1.0
        if not probe(hi):
            pass
        else:
            while hi - lo > STEP + 1e-9:
                mid = round((lo + hi) / 2, 4)
                if probe(mid):
                    hi = mid
                else:
                    lo = mid
        stopped = "the drift budget"
    if best is None:
        seen = ", ".join(f"MACs {p['macs_kept']:.2f}: drift {p['drift']:.4f}" for p in probes)
        raise BudgetError(f"no candidate met --max-drift {budget} ({probes[0]['metric']}); measured {seen}")
    result = best[0]
    result.report.search = {
        **(result.report.search or {}),
        "budget_max_drift": budget,
        "metric": probes[0]["metric"],
        "probes": probes,
        "stopped_by": stopped,
    }
    return result
