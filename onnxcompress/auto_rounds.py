"""``--allocation-rounds auto``: one allocation or two rounds, whichever the held-out split prefers.

A second allocation round (``pruning.rounds``) rescued PP-OCRv6 rec (0.926 -> 0.986 at 0.8 of
the MACs) and cost other models points off their calibration data (bench/ALLOCATION_ROUNDS.md).
So ``auto`` compresses both ways, the two sharing one sensitivity sweep of the unpruned model
(``SearchCache``; the second round sweeps the pruned model again), and keeps the one with the
lower held-out drift on the task-aware metric (``fidelity.drift_of``); a tie keeps the single
allocation. The report's ``search.rounds_choice`` gives both figures.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from onnxcompress.errors import CollapseError
from onnxcompress.fidelity import drift_of

logger = logging.getLogger(__name__)

#: the candidates, in order of preference on a tie
CANDIDATES = (1, 2)


def applies(config) -> bool:
    """``auto`` decides something only for a calibrated ``--target-macs`` run in remove mode."""
    return config.allocation_rounds == "auto" and config.calib is not None and config.target_macs is not None \
        and config.mode == "remove"


def choose_rounds(model_or_path, config, on_stage, compress_fn):
    """The better of one allocation and two rounds on held-out data (see the module docstring)."""
    from onnxcompress.pruning.search_cache import SearchCache

    cache = SearchCache()
    tried: list[dict] = []
    best = None
    collapsed: CollapseError | None = None
    for n in CANDIDATES:
        cfg = replace(config, allocation_rounds=n)
        stage = (lambda name, n=n: on_stage(f"{n} round{'s' if n > 1 else ''}: {name}")) if on_stage else None
        try:
            result = compress_fn(model_or_path, cfg, on_stage=stage, search_cache=cache)
        except CollapseError as exc:  # under the floor: the other candidate may not be
            collapsed = collapsed or exc
            tried.append({"rounds": n, "held_out_drift": None, "collapsed": str(exc)})
            continue
        d, metric = drift_of(result.report.fidelity or {})
        macs = result.report.after.macs / max(result.report.before.macs, 1)
        tried.append({"rounds": n, "held_out_drift": d, "metric": metric, "macs_kept": macs})
        logger.info("%d round(s): held-out %s %.4f, MACs kept %.3f", n, metric, d, macs)
        if best is None or d < best[1]:
            best = (result, d, n)
    if best is None:
        collapsed.measured = {"rounds_choice": tried}  # both candidates, for the refusal's --report
        raise collapsed
    result, _, n = best
    result.report.search = {**(result.report.search or {}), "rounds_choice": {"chosen": n, "candidates": tried}}
    return result
