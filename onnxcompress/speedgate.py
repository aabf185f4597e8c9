"""A speed gate that knows its own noise: decide ``speedup >= X`` from a confidence interval.

Each pair runs the original (A) and the compressed model (B) back to back, alternating
which goes first, so machine drift lands on both; the per-pair ratio a_i / b_i is the
sample. The gate looks at the median of those ratios and its distribution-free
confidence interval (binomial order statistics: no normality assumed, and the long
right tail of a busy machine cannot drag it):

- PASS when the interval's lower bound is >= X (faster by at least X, shown);
- FAIL when its upper bound is < X (slower than X, shown);
- otherwise inconclusive: twice as many pairs, and look again, until ``max_seconds``.

Looking several times inflates the error rate (optional stopping), so each of at most
``max_looks`` looks uses the Bonferroni level ``1 - (1 - confidence) / max_looks``: the
whole sequence errs with probability at most ``1 - confidence`` (pairs taken as
independent, which the interleaving approximates).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from onnxcompress.errors import InputError

logger = logging.getLogger(__name__)

DEFAULT_CONFIDENCE = 0.95
#: Looks at n, 2n, 4n, ... pairs; 8 looks take the first look's 30 pairs to 3840.
MAX_LOOKS = 8
MAX_PAIRS = 20_000

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"

#: (a_seconds, b_seconds) of up to ``k`` more pairs, stopping early once ``deadline``
#: (a ``clock`` time) has passed, after at least one pair.
Sampler = Callable[[int, float], tuple[list[float], list[float]]]


def median_ci(samples: Sequence[float], confidence: float) -> tuple[float, float]:
    """Distribution-free interval for the median: order statistics ``(j, n + 1 - j)``.

    ``j`` is the largest rank with P(Binomial(n, 1/2) <= j - 1) <= (1 - confidence) / 2,
    so the interval covers the true median with probability >= ``confidence`` for any
    continuous distribution. Too few samples for that level: ``(-inf, inf)``.
    """
    x = np.sort(np.asarray(samples, dtype=np.float64))
    n = x.size
    tail = (1.0 - confidence) / 2.0
    cdf, j = 0.0, 0
    log_half_n = -n * math.log(2.0)
    for i in range((n + 1) // 2):
        cdf += math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half_n)
        if cdf > tail:
            break
        j = i + 1  # P(Bin <= j - 1) <= tail
    if j == 0:
        return -math.inf, math.inf
    return float(x[j - 1]), float(x[n - j])


@dataclass
class SpeedDecision:
    """One look: the median per-pair ratio, its interval, and what it says about ``threshold``."""

    verdict: str  # pass | fail | inconclusive
    median: float
    low: float
    high: float
    pairs: int
    confidence: float

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("low", "high"):
            if not math.isfinite(d[k]):
                d[k] = None  # unbounded: too few pairs for this confidence
        return d


def decide(ratios: Sequence[float], threshold: float, confidence: float) -> SpeedDecision:
    """PASS if the interval's lower bound >= ``threshold``, FAIL if its upper bound < it."""
    r = np.asarray(ratios, dtype=np.float64)
    if r.size == 0:
        return SpeedDecision(INCONCLUSIVE, math.nan, -math.inf, math.inf, 0, confidence)
    low, high = median_ci(r, confidence)
    verdict = PASS if low >= threshold else FAIL if high < threshold else INCONCLUSIVE
    return SpeedDecision(verdict, float(np.median(r)), low, high, int(r.size), confidence)


@dataclass
class SpeedGateResult:
    """The whole sequence of looks and the final verdict (inconclusive resolved by policy)."""

    threshold: float
    final: SpeedDecision
    passed: bool
    on_inconclusive: str
    confidence: float
    looks: list[SpeedDecision] = field(default_factory=list)
    seconds: float = 0.0
    #: ratio of medians, the headline ``bench`` reports
    ratio_of_medians: float | None = None
    a_p50_ms: float | None = None
    b_p50_ms: float | None = None
    #: where it ran: provider asked and used, batch, IOBinding
    setup: dict = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        v = self.final.verdict
        return v if v != INCONCLUSIVE else f"{INCONCLUSIVE} -> {PASS if self.passed else FAIL}"

    def summary(self) -> str:
        """``95% CI [lo, hi], N pairs in S s: verdict``: the value itself is the median."""
        lo, hi = (_f(x) for x in (self.final.low, self.final.high))
        s = f"{self.confidence:.0%} CI [{lo}, {hi}], {self.final.pairs} pairs in {self.seconds:.1f} s: {self.verdict}"
        if self.final.verdict == INCONCLUSIVE:
            s += f" (--on-inconclusive {self.on_inconclusive})"
        return s

    def to_dict(self) -> dict:
        return {
            "threshold": self.threshold,
            "verdict": self.final.verdict,
            "passed": self.passed,
            "on_inconclusive": self.on_inconclusive,
            "median": self.final.median,
            "ci_low": self.final.to_dict()["low"],
            "ci_high": self.final.to_dict()["high"],
            "confidence": self.confidence,
            "confidence_per_look": self.final.confidence,
            "pairs": self.final.pairs,
            "looks": [lk.to_dict() for lk in self.looks],
            "seconds": self.seconds,
            "ratio_of_medians": self.ratio_of_medians,
            "a_p50_ms": self.a_p50_ms,
            "b_p50_ms": self.b_p50_ms,
            **self.setup,
        }


def _f(x: float) -> str:
    return "-inf" if x == -math.inf else "inf" if x == math.inf else f"{x:.4g}"


def sequential_gate(
    sample: Sampler,
    threshold: float,
    *,
    first_pairs: int = 30,
    max_seconds: float = 60.0,
    confidence: float = DEFAULT_CONFIDENCE,
    on_inconclusive: str = FAIL,
    max_looks: int = MAX_LOOKS,
    clock: Callable[[], float] = time.perf_counter,
) -> SpeedGateResult:
    """Take pairs in doubling rounds until the interval clears ``threshold`` or time runs out."""
    if on_inconclusive not in (PASS, FAIL):
        raise InputError(f"--on-inconclusive: expected pass or fail, got {on_inconclusive!r}")
    per_look = 1.0 - (1.0 - confidence) / max_looks
    start = clock()
    deadline = start + max_seconds
    a: list[float] = []
    b: list[float] = []
    looks: list[SpeedDecision] = []
    for k in range(max_looks):
        want = min(first_pairs * 2**k, MAX_PAIRS) - len(a)
        ta, tb = sample(want, deadline)
        a += ta
        b += tb
        d = decide(np.asarray(a) / np.asarray(b), threshold, per_look)
        looks.append(d)
        logger.info("speed look %d: %s", k + 1, d)
        if d.verdict != INCONCLUSIVE or clock() >= deadline or len(a) >= MAX_PAIRS:
            break
    final = looks[-1]
    passed = final.verdict == PASS or (final.verdict == INCONCLUSIVE and on_inconclusive == PASS)
    return SpeedGateResult(
        threshold=threshold,
        final=final,
        passed=passed,
        on_inconclusive=on_inconclusive,
        confidence=confidence,
        looks=looks,
        seconds=clock() - start,
        ratio_of_medians=float(np.median(a) / np.median(b)) if a else None,
        a_p50_ms=float(np.median(a) * 1e3) if a else None,
        b_p50_ms=float(np.median(b) * 1e3) if b else None,
    )


def open_pair(
    model: str | os.PathLike, compressed: str | os.PathLike, provider: str, threads: int | None, feeds: dict
):
    """Timed sessions for both models; on CUDA, bound with IOBinding, and CUDA or an error."""
    from onnxcompress.bench.runner import TimedSession
    from onnxcompress.runtime import PROVIDERS, available_providers

    if provider not in PROVIDERS:
        raise InputError(f"--provider: expected one of {', '.join(PROVIDERS)}, got {provider!r}")
    available = available_providers()
    if provider == "cuda" and PROVIDERS["cuda"] not in available:
        raise InputError(
            f"--provider cuda: this onnxruntime has no CUDA execution provider (available: {', '.join(available)}); "
            "install onnxruntime-gpu, or gate with --provider cpu"
        )
    sessions = []
    for path in (model, compressed):
        try:
            s = TimedSession(path, provider, threads, feeds)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"onnxruntime cannot open {path} on {provider}: {str(exc).splitlines()[0]}") from exc
        if s.provider_used != PROVIDERS[provider]:
            raise InputError(f"--provider {provider}: onnxruntime ran {path} on {s.provider_used}; not timing that")
        sessions.append(s)
    return sessions


def interleaved_sampler(sa, sb, warmup: int, clock: Callable[[], float] = time.perf_counter) -> Sampler:
    """A ``Sampler`` over two timed sessions: pairs alternate A,B and B,A; warm-up runs first."""
    for _ in range(warmup):
        sa.run()
        sb.run()
    count = [0]

    def sample(k: int, deadline: float) -> tuple[list[float], list[float]]:
        a: list[float] = []
        b: list[float] = []
        while len(a) < k:
            if count[0] % 2 == 0:
                ta = sa.timed()
                tb = sb.timed()
            else:
                tb = sb.timed()
                ta = sa.timed()
            count[0] += 1
            a.append(ta)
            b.append(tb)
            if clock() >= deadline:
                break
        return a, b

    return sample
