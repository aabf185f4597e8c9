"""How far a compressed model's outputs are from the original's, in terms that predict the task.

Cosine and max-abs alone hid a recognizer at 0% accuracy behind "min cosine 0.925".
So, per output:

- ``rel_l2``: ||got - ref|| / ||ref|| over the whole output;
- ``agreement``: per-position top-1 agreement along the output's class axis, for
  (N, C) scores, (N, T, C) sequences such as CTC, and (N, C, H, W) dense maps;
- ``sequence_agreement``: for outputs with positions besides the batch, the fraction of
  samples whose argmax agrees at *every* position: a sequence decoded from such an
  output (CTC) or a mask reads the same only then. Only up to ``MAX_SEQUENCE_POSITIONS``
  (256) positions a sample: a detector's (N, 3549, 6) anchors are no sequence, and at
  "every position" a good pruned YOLOX scored 0 and was refused as collapsed.
  A **CTC head** is compared as decoded: where every input is a float signal (never token ids)
  and one class (the blank) is the argmax at half or more of the reference's positions, both are
  greedy-decoded (repeats merged, blanks dropped); ``frame_agreement`` keeps the every-position
  figure. A frame moved by one position reads the same text (bench/CTC_AGREEMENT.md).

The class axis is guessed from the rank (2: axis 1; 3: the last axis, as CTC heads are
(N, T, C) or (T, N, C); 4 and up: axis 1) unless ``class_axes`` names it; the report
says which axis was taken. Integer and boolean outputs are compared exactly.

A **probability map** is a float output with one channel ((N, 1, H, W), or (N, H, W, 1))
whose reference values lie in [0, 1]: a text detector's (DB, CRAFT), saliency, matting
or binary segmentation. It has no class axis, and its pixels are mostly background, so
agreement and relative L2 both miss a map whose foreground vanished. It is binarized at
a threshold (``MAP_THRESHOLD``, or ``map_thresholds[name]``) and scored by the IoU and F1
of the foreground and the foreground recall.

A detector's **box regression** beside such scores, a float (N, A, K) output whose first two
axes match a multi-label score output's (N, A, classes), is no sequence either: its last axis
holds box offsets or distribution bins (PicoDet's 4 sides x 8 bins), not classes, and at
background anchors it is never read. It is judged only at the anchors where the original is
confident (a class score over the map threshold), by the mean cosine of those rows
(``anchor_cosine``); ``--class-axis`` on the output overrides this.

A **box-and-score head** (YOLO's (N, 4 + classes, anchors) or (N, anchors, 5 + classes), one
output) is split first into ``NAME[boxes]`` and ``NAME[scores]`` (``box_score_heads``), which are
then judged as above: the scores as a map, the boxes at the confident anchors.

An output with **one probability per sample** ((N,), (N, 1): a sigmoid's yes or no, such as a
voice-activity model's speech probability) has no class axis, and a cosine per sample would be
its sign: its decisions at ``DECISION_THRESHOLD`` are compared (``agreement``), and its cosine is
taken over the batch's column. A streaming VAD pruned to half never said "speech" again, with
every cosine at 1.0.

``collapsed`` is the floor under every written model: the task figure (sequence
agreement for sequences, per-position agreement for class scores and maps, map F1 for
probability maps, mean cosine otherwise) below half of what the original scores against
itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from onnxcompress.blockwise import cosines, difference_stats
from onnxcompress.box_score_heads import box_score_fields, scores_name, split_heads
from onnxcompress.errors import VerificationError


#: default binarization threshold of probability maps
MAP_THRESHOLD = 0.5
#: the threshold a one-probability-per-sample output's decision is read at
DECISION_THRESHOLD = 0.5
#: the floor: a written model's task figure against the original must be at least this
#: (the original scores 1.0 against itself)
FLOOR = 0.5


def off_on_maps(maps: list[str]) -> str:
    """Why a perturbation default is off (the refit's and distillation's): the first of ``maps``,
    the outputs that are probability maps or per-anchor scores (``is_probability_map``)."""
    return f"off by default on detectors and segmenters: output {maps[0]!r} is a probability map or per-anchor scores"


def is_probability_map(a: np.ndarray) -> bool:
    """A float output of values in [0, 1] that is a map, not a distribution over classes.

    - a one-channel (N, 1, H, W) or (N, H, W, 1) map (DBNet);
    - independent per-class scores of rank 3 or more, (N, anchors, classes), whose rows do
      not sum to 1 (a detector's sigmoid class scores): most anchors are background, where
      the argmax of near-equal low scores means nothing, so they are judged as a map too.

    A rank-3 output whose last axis sums to 1 is a sequence of distributions (CTC), never a map.
    """
    if not np.issubdtype(a.dtype, np.floating) or a.ndim < 3 or a.size == 0 or a.size // a.shape[0] < 4:
        return False
    if not in_unit_range(a):
        return False
    if a.ndim >= 4 and (a.shape[1] == 1 or (a.ndim == 4 and a.shape[-1] == 1)):
        return True
    if a.shape[-1] < 2:
        return False
    sums = a.reshape(-1, a.shape[-1]).sum(axis=1, dtype=np.float64)
    return bool(np.median(np.abs(sums - 1.0)) > 0.05)


def in_unit_range(a: np.ndarray) -> bool:
    """Every value of ``a`` in [0, 1] (a sigmoid computed without fusion can round to 1.0000001)."""
    return bool(np.nanmin(a) >= -1e-4 and np.nanmax(a) <= 1.0 + 1e-4)


def map_scores(ref: np.ndarray, got: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """IoU, F1 and foreground recall of ``got``'s binarized map against ``ref``'s, over all pixels."""
    r, g = ref > threshold, got > threshold
    inter = float(np.count_nonzero(r & g))
    nr, ng = float(np.count_nonzero(r)), float(np.count_nonzero(g))
    union = nr + ng - inter
    iou = inter / union if union else 1.0
    f1 = 2 * inter / (nr + ng) if nr + ng else 1.0
    recall = inter / nr if nr else 1.0
    return iou, f1, recall


#: positions per sample up to which "every position agrees" is a task figure (CTC reads: 24-80)
MAX_SEQUENCE_POSITIONS = 256


def guess_class_axis(a: np.ndarray) -> int | None:
    """The axis of class scores in a float output, or None when it has none."""
    if not np.issubdtype(a.dtype, np.floating) or a.ndim < 2:
        return None
    axis = a.ndim - 1 if a.ndim == 3 else 1
    return axis if a.shape[axis] >= 2 else None


@dataclass
class OutputFidelity:
    cosine_min: float
    max_abs_diff: float
    rel_l2: float
    class_axis: int | None = None
    agreement: float | None = None
    sequence_agreement: float | None = None
    cosine_mean: float = 1.0
    #: probability maps: the threshold, and IoU / F1 / recall of the binarized foreground
    map_threshold: float | None = None
    map_iou: float | None = None
    map_f1: float | None = None
    map_recall: float | None = None
    #: box regression beside a score map: mean cosine over the original's confident anchors
    anchor_cosine: float | None = None
    anchors: int | None = None
    #: CTC heads: the blank the sequences were decoded with, and the every-position agreement
    ctc_blank: int | None = None
    frame_agreement: float | None = None
    #: one probability per sample: the threshold its decision is read at (``agreement`` is the decisions')
    decision_threshold: float | None = None
    rank: int = 0

    def task_figure(self) -> tuple[float, str]:
        """The figure the floor and budgets judge this output by, and its name."""
        if self.map_f1 is not None:
            return self.map_f1, "map F1"
        if self.anchor_cosine is not None:
            return self.anchor_cosine, "cosine at confident anchors"
        if self.sequence_agreement is not None and self.rank == 3:
            return self.sequence_agreement, "sequence agreement" + (" (CTC-decoded)" if self.ctc_blank is not None else "")
        if self.decision_threshold is not None:
            return self.agreement, "decision agreement"
        if self.agreement is not None:
            return self.agreement, "top-1 agreement"
        return self.cosine_mean, "mean cosine"

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d.pop("rank")
        for k in ("map_threshold", "map_iou", "map_f1", "map_recall", "anchor_cosine", "anchors", "ctc_blank",
                  "frame_agreement", "decision_threshold"):
            if d[k] is None:
                d.pop(k)
        return d


@dataclass
class Fidelity:
    """Agreement of two models' outputs on the same inputs."""

    cosine_min: float
    max_abs_diff: float
    #: top-1 agreement of (N, C) class scores (the lowest over such outputs)
    top1_agreement: float | None = None
    #: the lowest per-position top-1 agreement over every output with a class axis
    agreement: float | None = None
    rel_l2_max: float = 0.0
    per_output: dict[str, OutputFidelity] = field(default_factory=dict)
    #: "calibration" (real inputs) or "random" (does not predict accuracy)
    inputs: str = "random"
    samples: int = 0
    #: the compared model's outputs, kept for further comparisons (not reported)
    outputs: dict | None = None

    @property
    def sequence_agreement(self) -> float | None:
        vals = [o.sequence_agreement for o in self.per_output.values() if o.sequence_agreement is not None]
        return min(vals) if vals else None

    def _lowest(self, key: str) -> float | None:
        vals = [getattr(o, key) for o in self.per_output.values() if getattr(o, key) is not None]
        return min(vals) if vals else None

    @property
    def map_f1(self) -> float | None:
        return self._lowest("map_f1")

    def first_under(self, line: float) -> str | None:
        """The first output whose task figure is under ``line``, as "output 'NAME': FIGURE VALUE", or None."""
        for name, o in self.per_output.items():
            value, what = o.task_figure()
            if value < line:
                return f"output {name!r}: {what} {value:.3f}"
        return None

    def collapsed(self) -> str | None:
        """Why this model is dead against the original (a task figure under ``FLOOR``), or None."""
        why = self.first_under(FLOOR)
        return None if why is None else f"{why} against the original (floor {FLOOR})"

    def to_dict(self) -> dict:
        d = {
            "inputs": self.inputs,
            "samples": self.samples,
            "cosine_min": self.cosine_min,
            "max_abs_diff": self.max_abs_diff,
            "top1_agreement": self.top1_agreement,
            "agreement": self.agreement,
            "sequence_agreement": self.sequence_agreement,
            "rel_l2_max": self.rel_l2_max,
            **({k: self._lowest(k) for k in ("map_iou", "map_f1", "map_recall")} if self.map_f1 is not None else {}),
            **({"anchor_cosine": self._lowest("anchor_cosine")} if self._lowest("anchor_cosine") is not None else {}),
            "per_output": {k: v.to_dict() for k, v in self.per_output.items()},
        }
        if self.inputs == "random":
            d["note"] = "measured on random inputs: this does not predict accuracy on real data (give --calib)"
        return d


def compare_output(
    a: np.ndarray, b: np.ndarray, class_axis: int | None = None, map_threshold: float | None = None,
    confident: np.ndarray | None = None, feature: bool = False, ctc: bool = False,
) -> OutputFidelity:
    """Fidelity of one output ``b`` against the reference ``a`` (same shape).

    ``confident`` (a boolean (N, A) mask) marks ``a`` as box regression beside a score map:
    it is judged by the cosine of its rows at those anchors only. A ``feature`` output (hidden
    states, embeddings) is judged by cosine alone, unless ``class_axis`` is given. ``ctc``: a
    sequence whose reference has a dominant class (the blank) is compared greedy-decoded.
    """
    if not np.issubdtype(a.dtype, np.floating):
        same = bool(np.array_equal(a, b))
        return OutputFidelity(cosine_min=1.0 if same else 0.0, max_abs_diff=0.0 if same else float("inf"),
                              rel_l2=0.0 if same else 1.0, cosine_mean=1.0 if same else 0.0, rank=a.ndim)
    # one value per sample: a cosine per sample would be its sign, so the batch's column is compared
    scalar = a.ndim >= 1 and a.size == a.shape[0]
    cos, max_abs, diff_norm, ref_norm = difference_stats(*((a.reshape(-1), b.reshape(-1)) if scalar else (a, b)))
    out = OutputFidelity(
        cosine_min=float(cos.min()) if cos.size else 1.0,
        max_abs_diff=max_abs,
        rel_l2=diff_norm / ref_norm if ref_norm > 0 else float(diff_norm > 0),
        cosine_mean=float(cos.mean()) if cos.size else 1.0,
        rank=a.ndim,
    )
    if feature and class_axis is None:
        return out
    if confident is not None:
        ra = a[confident].astype(np.float64)
        rb = b[confident].astype(np.float64)
        out.anchors = int(ra.shape[0])
        out.anchor_cosine = float(cosines(ra, rb).mean()) if ra.shape[0] else 1.0
        return out
    if class_axis is None and (map_threshold is not None or is_probability_map(a)):
        out.map_threshold = MAP_THRESHOLD if map_threshold is None else map_threshold
        out.map_iou, out.map_f1, out.map_recall = map_scores(a, b, out.map_threshold)
        return out
    if class_axis is None and scalar and a.size and in_unit_range(a) and not _distribution(a):
        # one probability per sample (a sigmoid's yes or no: speech, a match): judged by its decision
        same = (a > DECISION_THRESHOLD) == (b > DECISION_THRESHOLD)
        out.decision_threshold, out.agreement = DECISION_THRESHOLD, float(same.mean())
        return out
    axis = guess_class_axis(a) if class_axis is None else class_axis % a.ndim
    if axis is not None and a.shape[axis] >= 2:
        ids_a, ids_b = np.argmax(a, axis=axis), np.argmax(b, axis=axis)
        same = ids_a == ids_b
        out.class_axis = axis
        out.agreement = float(same.mean()) if same.size else 1.0
        if same.ndim >= 2 and same[0].size <= MAX_SEQUENCE_POSITIONS:
            # Sequences and small maps: a sample reads the same only if every position agrees.
            # Past a few hundred positions (a detector's thousands of anchors, a segmentation map)
            # one differing position is not a different reading: those are judged per position.
            out.sequence_agreement = float(same.reshape(same.shape[0], -1).all(axis=1).mean())
            blank = _dominant_class(ids_a) if ctc and same.ndim == 2 else None
            if blank is not None:
                out.ctc_blank, out.frame_agreement = blank, out.sequence_agreement
                out.sequence_agreement = float(np.mean([ctc_decode(x, blank) == ctc_decode(y, blank)
                                                        for x, y in zip(ids_a, ids_b)]))
    return out


def _distribution(a: np.ndarray) -> bool:
    """A rank-1 output summing to 1: one sample's softmax from a model without a batch axis, not
    one probability per sample."""
    return a.ndim == 1 and abs(float(a.sum(dtype=np.float64)) - 1.0) < 1e-3


def ctc_decode(ids: np.ndarray, blank: int) -> tuple[int, ...]:
    """Greedy CTC reading of one sample's per-position argmax: repeats merged, then blanks dropped."""
    keep = np.ones(len(ids), dtype=bool)
    keep[1:] = ids[1:] != ids[:-1]
    return tuple(int(i) for i in ids[keep & (ids != blank)])


def signal_inputs(feeds) -> bool:
    """Whether every input of ``feeds`` (a dict, or a list of them) is a float of rank 2 or more (an
    image, audio, a spectrogram; never token ids): only such models' sequences are read as CTC."""
    first = (feeds[0] if feeds else {}) if isinstance(feeds, (list, tuple)) else feeds
    vals = [np.asarray(v) for v in (first or {}).values()]
    return bool(vals) and all(np.issubdtype(v.dtype, np.floating) and v.ndim >= 2 for v in vals)


def _dominant_class(ids: np.ndarray) -> int | None:
    """A CTC head's blank: the class that is the argmax at half or more of the reference's (N, T)
    positions; None when no class dominates."""
    values, counts = np.unique(ids, return_counts=True)
    return int(values[counts.argmax()]) if counts.max() * 2 >= ids.size else None


def confident_anchors(
    ref: dict[str, np.ndarray], class_axes: dict[str, int], map_thresholds: dict[str, float]
) -> dict[str, np.ndarray]:
    """Box regression outputs beside a multi-label score output, with the anchors to judge them at.

    An (N, A, K) float output that is not itself a map, and whose (N, A) match a score output's
    (N, A, classes), maps to the (N, A) mask of anchors where the original's best class score
    is over that output's map threshold. Outputs the user gave a class axis are left out.
    """
    scores = {n: a for n, a in ref.items() if a.ndim == 3 and n not in class_axes
              and (n in map_thresholds or is_probability_map(a))}
    found: dict[str, np.ndarray] = {}
    for name, a in ref.items():
        if (name in scores or name in class_axes or name in map_thresholds or a.ndim != 3
                or not np.issubdtype(a.dtype, np.floating)):
            continue
        for sname, s in scores.items():
            if s.shape[:2] == a.shape[:2]:
                found[name] = s.max(axis=-1) > map_thresholds.get(sname, MAP_THRESHOLD)
                break
    return found


def compare_outputs(
    ref: dict[str, np.ndarray],
    got: dict[str, np.ndarray],
    allow_shape_change: bool = False,
    class_axes: dict[str, int] | None = None,
    inputs: str = "random",
    map_thresholds: dict[str, float] | None = None,
    features: frozenset[str] = frozenset(),
    signals: bool = False,
) -> Fidelity:
    """Per-output and overall fidelity of ``got`` against ``ref``.

    With ``allow_shape_change`` (pruned graph outputs) outputs that changed shape are skipped.
    ``features``: outputs judged by cosine only (``feature_outputs``). ``signals``: every model
    input is a float signal (``signal_inputs``), so a sequence output with a dominant blank is
    read as a CTC head.
    """
    class_axes = class_axes or {}
    map_thresholds = map_thresholds or {}
    heads = {n: f for n, a in ref.items() if n not in class_axes and n not in features and n in got
             and got[n].shape == a.shape and (f := box_score_fields(a)) is not None}
    if heads:  # YOLO's boxes and scores in one output: judged apart (box_score_heads)
        ref, got = split_heads(ref, heads), split_heads(got, heads)
        map_thresholds = {**map_thresholds, **{scores_name(n): map_thresholds.get(n, MAP_THRESHOLD) for n in heads}}
    per: dict[str, OutputFidelity] = {}
    samples = 0
    confident = confident_anchors(ref, class_axes, map_thresholds)
    for name, a in ref.items():
        b = got[name]
        if a.shape != b.shape:
            if allow_shape_change:
                continue
            raise VerificationError(f"output {name!r} changed shape: {a.shape} -> {b.shape}")
        per[name] = compare_output(a, b, class_axes.get(name), map_thresholds.get(name), confident.get(name),
                                   feature=name in features, ctc=signals and name not in features)
        samples = max(samples, a.shape[0] if a.ndim else 1)
    agreements = [o.agreement for o in per.values() if o.agreement is not None]
    top1 = [o.agreement for n, o in per.items()
            if o.agreement is not None and ref[n].ndim == 2 and o.decision_threshold is None]
    return Fidelity(
        cosine_min=min((o.cosine_min for o in per.values()), default=1.0),
        max_abs_diff=max((o.max_abs_diff for o in per.values()), default=0.0),
        top1_agreement=min(top1) if top1 else None,
        agreement=min(agreements) if agreements else None,
        rel_l2_max=max((o.rel_l2 for o in per.values()), default=0.0),
        per_output=per, inputs=inputs, samples=samples,
    )


def drift_of(fidelity: dict) -> tuple[float, str]:
    """The budgeted drift of a verify step's fidelity section, and which metric it is."""
    if fidelity.get("map_f1") is not None:
        # A probability map's pixels are mostly background: agreement would hide a lost foreground.
        others = [1.0 - fidelity[k] for k in ("sequence_agreement", "agreement", "anchor_cosine")
                  if fidelity.get(k) is not None]
        d = max([1.0 - fidelity["map_f1"], *others])
        return d, "1 - map F1 (held out)" if not others else "max(1 - map F1, 1 - agreement) (held out)"
    if fidelity.get("sequence_agreement") is not None:
        return 1.0 - fidelity["sequence_agreement"], "1 - sequence agreement (held out)"
    if fidelity.get("agreement") is not None:
        kinds = [o.get("decision_threshold") is not None for o in (fidelity.get("per_output") or {}).values()
                 if o.get("agreement") is not None]
        name = "decision" if kinds and all(kinds) else "top-1"
        return 1.0 - fidelity["agreement"], f"1 - {name} agreement (held out)"
    return float(fidelity.get("rel_l2_max", 0.0)), "relative L2 (held out)"
