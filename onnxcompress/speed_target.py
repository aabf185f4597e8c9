"""``--target-speedup S``: the least-pruned model whose measured onnxruntime speedup reaches S.

MACs are a prediction of speed, not a measurement: the same MACs run at different speeds
depending on which layers lost channels, the execution provider and the batch size. So the
MACs target is chosen by timing candidates:

1. Each probe allocates a MACs target ``t`` from the measured per-group drift (as
   ``--target-macs t`` does; the sensitivity sweep is shared between probes), emits the
   pruned graph without recovery (the weights do not change the speed) and times it against
   the original: interleaved pairs on the same random feeds, median of the per-pair ratios
   (as ``bench`` and ``check --min-speedup`` do), on ``--provider`` at ``--batch``.
2. The first probe is ``t = 1 / S``; the next ones extrapolate from the measured speedups
   (speed taken as proportional to ``1 / t``) and bisect inside the bracket, until the
   bracket is narrower than ``RESOLUTION`` or ``MAX_PROBES`` probes were timed.
3. The chosen target, the largest ``t`` that reached S, is compressed once more with the
   recovery the user asked for (refit, distill), and the written model is timed again: the
   report shows that measured speedup, its interval, and every probe.

No probe reaching S raises ``BudgetError`` (exit 1) with what was measured.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import replace

import numpy as np

from onnxcompress.errors import BudgetError

logger = logging.getLogger(__name__)

#: Smallest MACs target a probe may ask for.
MIN_TARGET = 0.05
#: Stop once the bracket [largest t that reached S, smallest t that did not] is this narrow.
RESOLUTION = 0.025
MAX_PROBES = 7
#: Time spent on each probe's pairs, and on the written model's final measurement (seconds).
PROBE_SECONDS = 3.0
FINAL_SECONDS = 8.0
MIN_PAIRS = 12
WARMUP = 3


def _save(model, directory: str, name: str) -> str:
    import onnx_ir as ir

    path = os.path.join(directory, name)
    ir.save(model, path, external_data=name + ".data")
    return path


class SpeedMeter:
    """Times candidates against one original on fixed random feeds, one provider, one batch."""

    def __init__(self, original_path: str, model, config, tmp: str) -> None:
        from onnxcompress.bench.runner import batched_shapes
        from onnxcompress.runtime import random_feeds

        self.original = original_path
        self.provider = config.speed_provider
        self.batch = config.speed_batch
        self.feeds = random_feeds(model, batched_shapes(model, config.input_shapes, self.batch), config.seed)
        self.tmp = tmp
        self.count = 0

    def measure(self, candidate, seconds: float) -> dict:
        """Median speedup (original time / candidate time) over interleaved pairs, with its 95% interval."""
        from onnxcompress.speedgate import interleaved_sampler, median_ci, open_pair

        self.count += 1
        path = _save(candidate, self.tmp, f"probe{self.count}.onnx")
        sa, sb = open_pair(self.original, path, self.provider, None, self.feeds)
        sample = interleaved_sampler(sa, sb, warmup=WARMUP)
        a: list[float] = []
        b: list[float] = []
        deadline = time.perf_counter() + seconds
        while len(a) < MIN_PAIRS or time.perf_counter() < deadline:
            ta, tb = sample(MIN_PAIRS, deadline if len(a) >= MIN_PAIRS else float("inf"))
            a += ta
            b += tb
            if len(a) >= 20_000:
                break
        ratios = np.asarray(a) / np.asarray(b)
        low, high = median_ci(ratios, 0.95)
        return {"speedup": float(np.median(ratios)), "low": low, "high": high, "pairs": len(ratios),
                "original_ms": float(np.median(a) * 1e3), "candidate_ms": float(np.median(b) * 1e3)}


def _next_target(fit: tuple[float, float] | None, miss: tuple[float, float] | None, want: float) -> float | None:
    """The next MACs target to time, or None once the bracket is narrow enough.

    ``fit`` is the (target, speedup) of the largest target that reached ``want``, ``miss``
    the smallest that did not."""
    if fit is not None and miss is not None:
        lo, hi = fit[0], miss[0]
        if hi - lo <= RESOLUTION:
            return None
        # interpolate speed ~ 1 / t between the two, kept inside the bracket
        guess = 1.0 / (1.0 / lo + (1.0 / hi - 1.0 / lo) * (fit[1] - want) / max(fit[1] - miss[1], 1e-9))
        return float(np.clip(guess, lo + RESOLUTION / 2, hi - RESOLUTION / 2))
    if fit is not None:  # every probe so far reached S: try keeping more
        t, s = fit
        if t >= 1.0 - 1e-9:
            return None
        return float(min(1.0, max(t + RESOLUTION, t * s / want)))
    assert miss is not None
    t, s = miss
    if t <= MIN_TARGET + 1e-9:
        return None
    return float(max(MIN_TARGET, min(t - RESOLUTION, t * s / want)))


def search_speedup(model_or_path, config, on_stage, compress_fn):
    """Compress to the largest MACs target whose measured speedup is at least ``config.target_speedup``."""
    from onnxcompress.io import load_model
    from onnxcompress.pruning.search_cache import SearchCache

    want = config.target_speedup
    cache = SearchCache()
    probes: list[dict] = []
    fit: tuple[float, float] | None = None
    miss: tuple[float, float] | None = None

    with tempfile.TemporaryDirectory(prefix="onnxcompress-speed-") as tmp:
        if isinstance(model_or_path, (str, os.PathLike)):
            original_path = str(model_or_path)
            model = load_model(model_or_path)
        else:
            model = load_model(model_or_path)
            original_path = _save(model, tmp, "original.onnx")
        meter = SpeedMeter(original_path, model, config, tmp)

        t: float | None = float(np.clip(1.0 / want, MIN_TARGET, 1.0))
        while t is not None and len(probes) < MAX_PROBES:
            t = round(t, 4)
            cfg = replace(config, target_speedup=None, target_macs=t, recover="none", verify=False)
            stage = (lambda name, t=t: on_stage(f"speed probe {len(probes) + 1} (MACs {t:.2f}): {name}")) \
                if on_stage else None
            try:
                result = compress_fn(model_or_path, cfg, on_stage=stage, search_cache=cache)  # one sensitivity sweep
            except BudgetError as exc:  # a target under what the groups can reach: no smaller one will do
                probes.append({"target_macs": t, "macs_kept": None, "speedup": None, "error": str(exc)})
                break
            if on_stage:
                on_stage(f"speed probe {len(probes) + 1} (MACs {t:.2f}): timing on {meter.provider}, batch {meter.batch}")
            m = meter.measure(result.model, PROBE_SECONDS)
            macs = result.report.after.macs / max(result.report.before.macs, 1)
            reached = m["speedup"] >= want
            probes.append({"target_macs": t, "macs_kept": macs, **m, "reached": reached})
            logger.info("speed probe: target %.3f, MACs kept %.3f, speedup %.3f (%s)", t, macs, m["speedup"],
                        "reached" if reached else "short")
            if reached and (fit is None or t > fit[0]):
                fit = (t, m["speedup"])
            if not reached and (miss is None or t < miss[0]):
                miss = (t, m["speedup"])
            if not reached and fit is None and macs > t + RESOLUTION:
                break  # the allocation's floor: every prunable group at its largest ratio, and still short
            t = _next_target(fit, miss, want)

        if fit is None:
            seen = "; ".join(f"MACs {p['macs_kept']:.2f}: {p['speedup']:.2f}x" if p.get("speedup") is not None
                             else f"target {p['target_macs']:.2f}: {p['error']}" for p in probes)
            raise BudgetError(f"--target-speedup {want:g} on {meter.provider} at batch {meter.batch}: no candidate reached "
                              f"it; measured {seen}", measured={"target_speedup": want, "provider": meter.provider,
                                                                "batch": meter.batch, "probes": probes})

        chosen = fit[0]
        cfg = replace(config, target_speedup=None, target_macs=chosen)
        stage = (lambda name: on_stage(f"MACs {chosen:.2f}: {name}")) if on_stage else None
        try:
            result = compress_fn(model_or_path, cfg, on_stage=stage, search_cache=cache)
        except BudgetError as exc:  # the fastest-enough candidate collapsed once recovered and verified
            seen = "; ".join(f"MACs {p['macs_kept']:.2f}: {p['speedup']:.2f}x" for p in probes if p.get("speedup"))
            raise type(exc)(f"{exc} [--target-speedup {want:g} chose MACs target {chosen:.3f}, the least-pruned "
                            f"that measured {fit[1]:.2f}x; timed: {seen}]") from None
        if on_stage:
            on_stage(f"timing the written model on {meter.provider}, batch {meter.batch}")
        final = meter.measure(result.model, FINAL_SECONDS)

    result.report.search = {
        **(result.report.search or {}),
        "target_speedup": want,
        "provider": meter.provider,
        "batch": meter.batch,
        "chosen_target_macs": chosen,
        "speed_probes": probes,
        "measured_speedup": final,
    }
    if final["speedup"] < want:
        result.report.warnings.append(
            f"the written model measured {final['speedup']:.2f}x (95% interval {final['low']:.2f}-{final['high']:.2f}) "
            f"on {meter.provider} at batch {meter.batch}, under --target-speedup {want:g}, where its probe measured "
            f"{fit[1]:.2f}x: the difference is timing noise or the recovery's effect on the graph")
    return result

