"""Sequence-level distillation of CTC heads: the student learns the teacher's *reading*.

A CTC recognizer's per-position KL is dominated by its blank positions (most of them), and a
student can lower it while reading more samples differently: on ddddocr at 0.6x the held-out
loss fell by a third over 200 steps while the decoded disagreement rose. This term decodes the
teacher's output greedily (the same reading ``fidelity`` judges by: repeats merged, blanks
dropped) and adds the CTC loss of the student's output against that label sequence, so every
alignment of the right reading is rewarded and none of a wrong one.

A head is trained so where ``fidelity`` judges it so, with the same blank: a float signal
input, a sequence output of 4 to ``MAX_SEQUENCE_POSITIONS`` positions with a class axis (not a
boundary feature), and one class (the blank) the teacher's argmax at half or more of the
held-out positions. A classifier's (N, 1, C) output or a detector's thousands of anchors are not.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from onnxcompress.fidelity import MAX_SEQUENCE_POSITIONS, compare_output, ctc_decode
from onnxcompress.output_join import batch_axis


@dataclass(frozen=True)
class CtcHead:
    """Where a CTC head keeps its samples, positions and classes, and its blank class."""

    batch_axis: int
    class_axis: int
    #: None until ``with_judged_blanks`` reads it on the held-out split
    blank: int | None = None

    def time_axis(self) -> int:
        return ({0, 1, 2} - {self.batch_axis, self.class_axis}).pop()


def find_ctc_heads(kinds: dict, one: dict[str, np.ndarray], two: dict[str, np.ndarray] | None,
                   batch_axes: dict[str, int] | None = None, features: frozenset[str] = frozenset()) -> dict[str, CtcHead]:
    """Candidate CTC heads (blank not yet known), from the teacher's targets on one sample (``one``)
    and on two (``two``: the axis that grows is the samples axis), or, for a fixed-batch model,
    from the axes its student stacks samples on (``batch_axes``), else its first axis of size 1
    (``output_join.batch_axis``, as the held-out judge finds it).

    ``kinds``: per output (loss kind, class axis); ``features``: boundary features, never heads."""
    heads = {}
    for name, (kind, axis) in kinds.items():
        t = one.get(name)
        if kind not in ("probs", "logits") or t is None or t.ndim != 3 or axis is None or name in features:
            continue
        if two is not None and name in two:
            batch = batch_axis([t.shape, two[name].shape], [1, 2])
        elif batch_axes is not None and name in batch_axes:
            batch = batch_axes[name]
        else:
            batch = batch_axis([t.shape], [1])
        if batch is None or batch == axis:
            continue
        head = CtcHead(batch, axis)
        if 4 <= t.shape[head.time_axis()] <= MAX_SEQUENCE_POSITIONS:
            heads[name] = head
    return heads


def with_judged_blanks(heads: dict[str, CtcHead], reference: dict[str, np.ndarray],
                       class_axes: dict[str, int]) -> dict[str, CtcHead]:
    """The heads ``fidelity`` reads as CTC on the teacher's held-out outputs (``reference``,
    batch-first), each with the blank it reads them by; the others are dropped."""
    out = {}
    for name, head in heads.items():
        ref = reference[name]
        blank = compare_output(ref, ref, class_axes.get(name), ctc=True).ctc_blank
        if blank is not None:
            out[name] = replace(head, blank=blank)
    return out


def _readings_ids(t: np.ndarray, head: CtcHead) -> np.ndarray:
    """(samples, positions) argmax class ids of one output."""
    ids = np.argmax(t, axis=head.class_axis)  # two axes left, in their original order
    batch_first = head.batch_axis < head.time_axis()
    return ids if batch_first else ids.T


def reading_loss(head: CtcHead, kind: str, s: torch.Tensor, t: np.ndarray) -> torch.Tensor:
    """CTC loss of the student's output ``s`` against the teacher's greedy reading of ``t``."""
    logp = torch.log(s.clamp_min(1e-8)) if kind == "probs" else F.log_softmax(s, dim=head.class_axis)
    tnc = logp.permute(head.time_axis(), head.batch_axis, head.class_axis).float()
    labels = [ctc_decode(row, head.blank) for row in _readings_ids(t, head)]
    targets = torch.tensor([c for lab in labels for c in lab], dtype=torch.long)
    lengths = torch.tensor([len(lab) for lab in labels], dtype=torch.long)
    steps = torch.full((tnc.shape[1],), tnc.shape[0], dtype=torch.long)
    return F.ctc_loss(tnc, targets.to(tnc.device), steps, lengths, blank=head.blank, reduction="mean", zero_infinity=True)
