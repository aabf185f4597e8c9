"""Pruning with real inputs: data-aware scores, error-driven allocation, recovery.

``CalibratedPruning`` wraps one pruning pass's use of calibration data:

1. ``prepare``: one pass over the fit split collects per-feature statistics at every
   consumer of prunable channels (``activations``);
2. ``scores``: the data-aware importance of every atom;
3. ``allocate``: with a MAC target, the measured ε per group and ratio
   (``sensitivity``) decides how many atoms each group loses;
4. ``compensate``: the applier folds removed channels' calibrated means into biases;
5. ``recover``: the consumers are refit by ridge least squares, kept only where the
   held-out error drops, and the end-to-end drift is measured before and after.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from onnxcompress._ir_utils import is_const
from onnxcompress.channels.state import AnalysisResult
from onnxcompress.fidelity import off_on_maps
from onnxcompress.pruning.activations import FeatureStats, collect_stats, consumer_slots, data_aware_scores, unread_outputs
from onnxcompress.pruning.plan import Group, Plan, macs_kept, weakest_atoms
from onnxcompress.channels.rules import consumer_of
from onnxcompress.pruning.recover import Consumer, first_samples, refit
from onnxcompress.pruning.rounds import Teacher
from onnxcompress.pruning.allocation import allocate
from onnxcompress.pruning.sensitivity import (
    GroupSensitivity,
    MaskedModel,
    DriftReference,
    measure,
    sensitivity_sample_count,
)
from onnxcompress.runtime import Session
from onnxcompress.pruning.search_cache import SearchCache


@dataclass
class CalibratedPruning:
    model: ir.Model
    analysis: AnalysisResult
    shapes: dict
    fit: list[dict[str, np.ndarray]]
    held: list[dict[str, np.ndarray]]
    recover: str  # none | bias | refit | distill
    cache: SearchCache = field(default_factory=SearchCache)
    stats: dict[str, FeatureStats] = field(default_factory=dict)
    reference: ir.Model | None = None
    #: what the refit, the drift and distillation compare with: the original model, which is the
    #: ``reference`` in a single round (``pruning.rounds``)
    teacher: Teacher | None = None
    report: dict = field(default_factory=dict)
    #: output name -> binarization threshold of a probability map (see ``fidelity``)
    map_thresholds: dict[str, float] = field(default_factory=dict)
    #: settings of ``recover="distill"`` (a ``finetune.distill.DistillConfig``)
    distill: object | None = None
    #: how each group's drift curve is obtained: "sweep" (measured, groups x ratios runs) or
    #: "taylor" (first-order estimate from backward passes, ``pruning.taylor``; needs torch)
    estimate: str = "sweep"
    #: perturbed copies of this share of the refit's fit samples join its least squares
    #: (``finetune.augment.perturbed_copies``; 0: the calibration samples only; the CLI passes
    #: ``None`` by default: ``config.REFIT_AUGMENT``, or 0 where an output is a probability map
    #: or per-anchor scores, as a detector's; helpers that never refit leave it at 0)
    refit_augment: float | None = 0.0
    seed: int = 0
    warnings: list[str] = field(default_factory=list)

    def prepare(self) -> None:
        t = time.perf_counter()
        self.reference = self.model.clone()
        if self.teacher is None:
            self.teacher = Teacher.of(self.reference, self.model)
        values = {s.node.inputs[0].name: self.analysis.info[s.node.inputs[0]].axes[0] for s in consumer_slots(self.analysis)}
        values.update(unread_outputs(self.analysis))
        self.stats = collect_stats(self.reference, self.fit, values) if values else {}
        self.report["statistics_s"] = time.perf_counter() - t
        self.report["consumers_measured"] = len(self.stats)

    def scores(self, roots: np.ndarray) -> tuple[np.ndarray, set[int]]:
        return data_aware_scores(self.analysis, roots, self.stats, variance=self.recover != "none")

    def allocate(
        self, groups: list[Group], scores: dict[int, float], roots: np.ndarray, macs_per_atom: dict, total_macs: float,
        target: float, round_to: int, progress=None,
    ) -> dict[tuple[int, ...], int]:
        """Kept atoms per group for a MAC target, from measured ε per MAC saved."""
        if self.cache.sensitivity is None:
            t = time.perf_counter()
            masked = MaskedModel(self.reference, self.analysis, self.stats, self.shapes)
            sample = first_samples(self.fit, sensitivity_sample_count(self.fit))
            self.cache.sensitivity = None
            if self.estimate == "taylor":
                from onnxcompress.pruning.taylor import TaylorUnavailable, estimate

                try:
                    self.cache.sensitivity = estimate(masked, self.reference, groups, scores, roots, sample,
                                                      macs_per_atom, round_to, progress=progress)
                    self.cache.estimate = "taylor"
                except TaylorUnavailable as exc:
                    self.warnings.append(f"--sensitivity-estimate taylor: {exc}; measured by the forward sweep instead")
            if self.cache.sensitivity is None:
                self.cache.sensitivity = measure(masked, groups, scores, roots, sample, macs_per_atom, round_to,
                                                 progress=progress, map_thresholds=self.map_thresholds)
                self.cache.estimate = "sweep"
            self.cache.sensitivity_s = time.perf_counter() - t
        # Savings are not additive (a conv shrinks with both its input and output groups), so the
        # plan's MACs are recomputed exactly and the allocation target tightened until they fit.
        goal, tries = target, []
        for attempt in range(12):
            removed, est = allocate(self.cache.sensitivity, total_macs, goal)
            gone = np.zeros(len(roots), dtype=bool)
            for g in groups:
                gone[weakest_atoms(g, scores, removed.get(g.key, 0))] = True
            actual = macs_kept(self.analysis, roots, gone, self.shapes)
            tries.append({"allocation_target": goal, "macs_kept": actual})
            if actual <= target + 1e-9:
                break
            # The allocation moves in steps of whole groups: push harder when it does not move.
            goal -= max(actual - target, 0.005 * 2 ** attempt)
        self.report["allocation"] = {
            "target_macs": target,
            "estimated_macs_kept": actual,
            "allocation_rounds": tries,
            "sensitivity_s": self.cache.sensitivity_s,
            "sensitivity_estimate": self.cache.estimate,
            "groups": [{**g.to_dict(), "removed": removed[g.key]} for g in self.cache.sensitivity],
        }
        return {g.key: len(g.atoms) - removed.get(g.key, 0) for g in groups}

    def compensate(self, app) -> None:
        if self.recover == "none":
            return
        for s in consumer_slots(self.analysis):
            st = self.stats.get(s.node.inputs[0].name)
            if st is not None:
                app.input_means[s.node.inputs[0]] = st.mean

    def finish(self, model: ir.Model, plan: Plan, progress=None, distill_progress=None) -> None:
        """Refit (``recover="refit"``) and measure end-to-end drift on the held-out split."""
        teacher = self.teacher.model
        ref = DriftReference(Session(teacher).run_all(self.held), self.map_thresholds)  # judges every stage below
        before = ref(Session(model).run_all(self.held))
        layers: list[dict] = []
        consumers = self._consumers(model, plan)
        if self.recover in ("refit", "distill"):
            t = time.perf_counter()
            augment, augmented, why_not = self._refit_augment(list(ref.map_threshold))
            layers = refit(model, teacher, consumers, self.fit, self.held, progress=progress, augment=augment)
            self.report["refit_s"] = time.perf_counter() - t
        after = ref(Session(model).run_all(self.held)) if layers else before
        self.report["recovery"] = {
            "method": self.recover,
            "drift_metric": "relative L2 of all outputs (or 1 - F1 of a probability map or of a YOLO head's scores, "
                            "if larger) vs the unpruned model, held-out calibration split",
            "drift_before_refit": before,
            "drift_after_refit": after,
            "refit_augment": augmented if layers else [],
            "layers": layers,
        }
        if layers and why_not:
            self.report["recovery"]["refit_augment_off"] = why_not
        if self.recover == "distill":
            from onnxcompress.config import DISTILL_AUGMENT, DISTILL_AVERAGE
            from onnxcompress.pruning.distill_step import run_distillation, with_defaults

            t = time.perf_counter()
            cfg, why_not = with_defaults(self.distill, list(ref.map_threshold), DISTILL_AUGMENT, DISTILL_AVERAGE)
            outcome = run_distillation(model, teacher, consumers, self.fit, self.held, cfg, distill_progress)
            if why_not:
                outcome["defaults_off"] = why_not
            self.report["distill_s"] = time.perf_counter() - t
            self.report["recovery"]["distill"] = outcome
            if outcome.get("warning"):
                self.warnings.append(outcome["warning"])
            elif outcome["kept"] == "distill":
                self.report["recovery"]["drift_after_distill"] = ref(Session(model).run_all(self.held))

    def _refit_augment(self, maps: list[str]):  # maps: the outputs judged as probability maps
        """(the refit's ``augment`` callable or None, the inputs it perturbs, why the default is off here):
        image-like float inputs only (rank 4 with an 8x8 map or larger; token ids, embeddings and masks
        never). The default (``refit_augment`` None) is ``config.REFIT_AUGMENT``, and 0 where one of the
        original's outputs is a probability map or per-anchor class scores: a detector's or a
        segmenter's. With ``--calib-augment`` the fit samples are perturbed already, and the copies again."""
        share, why_not = self.refit_augment, None
        if share is None:
            from onnxcompress.config import REFIT_AUGMENT

            share = REFIT_AUGMENT
            if maps:
                share, why_not = 0.0, f"{off_on_maps(maps)} (--refit-augment 1 turns it on)"
        if share <= 0 or not self.fit:
            return None, [], why_not
        from onnxcompress.finetune.augment import image_like, input_ranges, perturbed_copies

        ranges = {k: r for k, r in input_ranges(self.fit).items() if image_like(self.fit[0][k])}
        if not ranges:
            return None, [], why_not
        rng = np.random.default_rng([self.seed, 2])
        return (lambda batches: perturbed_copies(batches, rng, share, ranges)), sorted(ranges), why_not

    def _consumers(self, model: ir.Model, plan: Plan) -> list[Consumer]:
        """Layers to refit, in order: every consumer of removed channels, and every later weight
        layer too, since the drift reaches them through what was not pruned (each is kept only
        where it lowers its held-out error). Each is matched to the teacher (the original), with
        the output channels removed in this and every earlier round dropped from its target."""
        touched = {id(s.node) for s in self.analysis.slots if s.role == "in" and plan.removed[s.ids].any()}
        out_keep = {id(s.node): ~plan.removed[s.ids] for s in self.analysis.slots if s.role == "out"}
        out, started = [], False
        for n in model.graph:
            started = started or id(n) in touched
            hooks = consumer_of(n)
            weight = hooks is not None and hooks.refit_reason(n) is None and len(n.inputs) > 1 and is_const(n.inputs[1])
            name = self.teacher.name(n)
            if name is not None and (id(n) in touched or (started and weight)):
                try:
                    out.append(Consumer(n, self.teacher.keep(n, out_keep.get(id(n))), name))
                except ValueError:
                    continue  # its channels no longer line up with the original's: not refit
        return out
