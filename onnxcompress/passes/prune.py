"""The pruning pass: analyse channel groups, plan by importance, then zero or remove."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import LiftConstantsToInitializersPass

from onnxcompress.analysis.shapes import Shape, ShapeOracle
from onnxcompress.channels.analysis import analyse_channels
from onnxcompress.channels.rules import consumer_of
from onnxcompress.config import CompressConfig
from onnxcompress._ir_utils import const_array
from onnxcompress._parallel import parallel_map
from onnxcompress.importance import AGGREGATION, CRITERIA, GLOBAL_NORMALISATION, l1_kept
from onnxcompress.pruning.rounds import round_targets
from onnxcompress.pruning.plan import macs_per_atom
from onnxcompress.pruning.apply import Applier
from onnxcompress.pruning.plan import Plan, head_roots, make_plan, narrow_groups, reported_blockers, rounding_note
from onnxcompress.passes.base import ReportingPass

if TYPE_CHECKING:  # imported when calibration data is given: recovery and sensitivity are not needed otherwise
    from onnxcompress.pruning.calibrated import CalibratedPruning

logger = logging.getLogger(__name__)



@dataclass
class PruneResult:
    groups: dict[str, int]
    blockers: list[dict]
    layers: list[dict]
    pruned_l1_mass: float
    importance: dict
    exactness: dict
    details: dict = field(default_factory=dict)
    calibration: dict | None = None


@dataclass
class _Round:
    """What one prune round leaves: the last round's fill the report (see ``PrunePass.call``)."""

    analysis: object
    plan: Plan
    app: Applier
    calibrated: CalibratedPruning | None
    layers: list[dict]
    mass: float
    total: float | None
    criterion: str
    heads: set


def lossy_removals(analysis, removed: np.ndarray) -> list[dict]:
    """The nodes whose rule said ``Lossy`` and that lost channels: one entry per node and reason."""
    out, seen = [], set()
    for r in analysis.lossy:
        if r.ids.size and removed[r.ids].any() and (r.node, r.reason) not in seen:
            seen.add((r.node, r.reason))
            out.append({"node": r.node, "op": r.op, "reason": r.reason})
    return out


def _exactness_note(mode: str, notes: list[str], lossy: list[dict] = ()) -> str:
    if lossy:
        return (f"{len(lossy)} node(s) lost channels inexactly (lossy rules, justified by calibration and "
                "recovered; listed in the JSON exactness.lossy)")
    if mode == "zero":
        return "zero mode: shapes unchanged"
    if not notes:
        return "remove mode matches zero mode exactly"
    padded = sum("pads its input" in n for n in notes)
    if padded == len(notes):
        return (
            f"remove mode matches zero mode except at the border pixels of {padded} padded conv(s) "
            "(largest deviations in the JSON notes; --exact-borders makes it exact)"
        )
    return f"remove mode deviates from zero mode at {len(notes)} place(s) (see the JSON notes)"


def analyse_for_pruning(model: ir.Model, oracle: ShapeOracle, input_shapes: dict[str, Shape], cfg: CompressConfig):
    """Channel analysis of ``model`` (in place: Constant-node weights become initializers).

    Returns the analysis, the static shapes and the filter tensors (``out`` slots) as numpy.
    """
    # Constant-node weights become initializers, so slicing them is one rule for all.
    LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=1)(model)
    if model.ir_version is not None and model.ir_version < 4:
        listed = set(model.graph.inputs)
        for v in model.graph.initializers.values():
            if v not in listed:
                model.graph.inputs.append(v)
    shapes = oracle.shapes(model, input_shapes)
    analysis = analyse_channels(model, shapes, exclude=cfg.exclude, prune_outputs=cfg.prune_outputs, block_ops=cfg.block_ops,
                                allow_lossy=cfg.calib is not None, attention=cfg.attention)
    tensors = {s.value: const_array(s.value) for s in analysis.slots if s.role == "out"}
    return analysis, shapes, tensors


def _distill_config(cfg: CompressConfig, model: ir.Model):
    """The distillation settings, when distillation will run (its module needs torch)."""
    if cfg.resolved_recover(True) != "distill":
        return None
    from onnxcompress.finetune.distill import DistillConfig

    labelled = None
    if cfg.train_labels:
        from onnxcompress.accuracy import load_labelled

        labelled = load_labelled(cfg.train_labels, model)
    return DistillConfig(seconds=cfg.distill_seconds, steps=cfg.distill_steps, lr=cfg.distill_lr, device=cfg.device,
                         augment=cfg.distill_augment, mix=cfg.distill_mix, step_sizes=cfg.distill_step_sizes,
                         schedule=cfg.distill_schedule,
                         feature_weight=cfg.distill_feature_weight, ctc_weight=cfg.distill_ctc_weight,
                         average=cfg.distill_average, train=cfg.distill_train,
                         temperature=cfg.distill_temperature,
                         seed=cfg.seed, class_axes=dict(cfg.class_axes), map_thresholds=dict(cfg.map_thresholds),
                         labelled=labelled)


class PrunePass(ReportingPass):
    """Structured filter pruning of any ONNX graph (see ``onnxcompress.channels``)."""

    name = "prune"

    def __init__(
        self, config: CompressConfig, input_shapes: dict[str, Shape], oracle: ShapeOracle | None = None, ctx=None
    ) -> None:
        super().__init__()
        self.config = config
        self.input_shapes = input_shapes
        self.oracle = oracle or ShapeOracle()
        self.ctx = ctx
        self.result: PruneResult | None = None

    def publish(self, report) -> None:
        """Pruning's findings go to the report's top level, not only its pass section."""
        from onnxcompress.report import Blocker, LayerChange

        super().publish(report)
        pr = self.result
        if pr is None:
            return
        report.groups = pr.groups
        report.blockers = [Blocker(**b) for b in pr.blockers]
        report.layers = [LayerChange(**c) for c in pr.layers]
        report.pruned_l1_mass = pr.pruned_l1_mass
        report.importance = pr.importance
        report.exactness = pr.exactness
        if pr.calibration is not None:
            report.recovery = pr.calibration.get("recovery")
            report.search = pr.calibration.get("allocation")
            report.passes["prune"]["calibration"] = {k: v for k, v in pr.calibration.items() if k not in ("recovery", "allocation")}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        cfg = self.config
        targets: list[float | None] = [cfg.target_macs]
        if cfg.target_macs is not None and cfg.allocation_rounds > 1 and cfg.mode == "remove" and self._has_calib():
            targets = round_targets(cfg.target_macs, cfg.allocation_rounds)
        teacher, total0, rounds, first_layers, changed, mass_kept = None, None, [], None, False, 1.0
        lossy, exact_notes = [], []  # over every round
        for i, target in enumerate(targets):
            last = i == len(targets) - 1
            r = self._round(model, target, teacher, total0, final=last, first=i == 0)
            total0 = r.total if total0 is None else total0
            first_layers = first_layers or {row["name"]: row["before"] for row in r.layers}
            changed = changed or bool(r.plan.removed.any())
            mass_kept *= 1.0 - r.mass
            lossy += [x for x in lossy_removals(r.analysis, r.plan.removed) if x not in lossy]
            exact_notes += r.app.notes if cfg.mode == "remove" else []
            if len(targets) > 1:
                alloc = r.calibrated.report.get("allocation") or {}
                scale = (r.total or 0.0) / total0 if total0 else 1.0  # the round's model against the original
                rounds.append({"target_macs": target, "estimated_macs_kept": alloc.get("estimated_macs_kept", 1.0) * scale,
                               "sensitivity_s": alloc.get("sensitivity_s"),
                               "groups_pruned": sum(1 for g in r.plan.groups if g.keep < len(g.atoms)),
                               **_round_recovery(r.calibrated)})
            teacher = r.calibrated.teacher if r.calibrated is not None else None
            if not last and rounds and rounds[-1].get("distill_interrupted"):
                raise KeyboardInterrupt  # Ctrl-C in an earlier round's distillation: the target is not reached, write nothing
            if not last:
                for s in r.analysis.slots:
                    if s.role == "out":
                        teacher.record(s.node, ~r.plan.removed[s.ids])
                self.oracle.clear()
        analysis, plan, app, calibrated, layers, criterion, heads = (
            r.analysis, r.plan, r.app, r.calibrated, r.layers, r.criterion, r.heads)
        mass = 1.0 - mass_kept
        for row in layers:
            row["before"] = first_layers.get(row["name"], row["before"])
        if rounds:
            # the MACs targets of every round, as fractions of the original (the groups are the last round's)
            calibrated.report["allocation"].update(target_macs=cfg.target_macs, rounds=rounds,
                                                   sensitivity_s=sum(x["sensitivity_s"] or 0.0 for x in rounds))
        self.warnings[:] = list(dict.fromkeys(self.warnings))
        blockers = reported_blockers(analysis, plan)
        pruned = sum(1 for g in plan.groups if g.keep < len(g.atoms))
        note = rounding_note(plan.groups, cfg.ratio, cfg.round_to) if cfg.target_macs is None else None
        if not plan.groups and not plan.blocked_groups:
            from onnxcompress.pruning.nothing_to_prune import nothing_to_prune

            note = nothing_to_prune(model)
        self.warnings.extend([note] if note else [])
        self.result = PruneResult(
            groups={"total": len(plan.groups) + plan.blocked_groups, "pruned": pruned, "blocked": plan.blocked_groups},
            blockers=blockers,
            layers=layers,
            pruned_l1_mass=mass,
            calibration=calibrated.report if calibrated is not None else None,
            importance={
                "criterion": criterion,
                "criterion_note": CRITERIA[criterion],
                "aggregation": AGGREGATION,
                "scope": cfg.scope,
                "normalisation": GLOBAL_NORMALISATION if cfg.scope == "global" else None,
                "ratio": cfg.ratio,
                "max_layer_ratio": cfg.max_layer_ratio if cfg.scope == "global" else None,
                "round_to": cfg.round_to,
                "removed_filter_output": "0 (weights and bias zeroed)" if cfg.zero_bias else "act(bias): weights zeroed, bias (with any folded BN shift) kept",
            },
            exactness={
                "mode": cfg.mode,
                "exact": not exact_notes,
                "notes": exact_notes,
                "note": _exactness_note(cfg.mode, exact_notes, lossy),
                "lossy": lossy,
            },
            details={
                "groups": [
                    {"filters": g.names, "atoms": len(g.atoms), "kept": g.keep, "channels_per_atom": g.channels_per_atom,
                     "unit": "head" if any(int(a) in heads for a in g.atoms) else "channel"}
                    for g in plan.groups
                ]
            },
        )
        self.report = {"groups": self.result.groups, "group_details": self.result.details["groups"]}
        if changed:
            self.oracle.clear()  # channel counts changed
        return ir.passes.PassResult(model, changed)

    def _round(self, model: ir.Model, target: float | None, teacher, total0: float | None, final: bool, first: bool) -> _Round:
        """One analysis, allocation, cut and recovery. ``target``: MACs fraction of the original
        (``total0`` MACs, None in the first round); ``teacher``: the original, after the first round."""
        cfg = self.config
        analysis, shapes, tensors = analyse_for_pruning(model, self.oracle, self.input_shapes, cfg)
        calibrated = self._calibrated(model, analysis, shapes, teacher, final, first)
        criterion = cfg.resolved_criterion(calibrated is not None)
        data_scores = calibrated.scores(analysis.uf.all_roots()) if criterion == "activation" else None
        keep = None
        total = None
        if target is not None:
            base = make_plan(analysis, tensors, replace(cfg, ratio=0.0), data_scores=data_scores)
            per_atom, total = macs_per_atom(analysis, base, shapes)
            goal = min(target * (total0 or total) / total, 1.0) if total else target
            keep = calibrated.allocate(base.groups, base.scores, base.roots, per_atom, total, goal, cfg.round_to,
                                       progress=self._progress("sensitivity"))
            blind = [g for g in calibrated.report["allocation"]["groups"] if g.get("unmeasured")]
            if blind:
                self.warnings.append(
                    f"{len(blind)} group(s) kept whole: their removal cannot be simulated on calibration data "
                    f"(first: {blind[0]['filters'][0]}, {blind[0]['unmeasured']})"
                )
            reached = calibrated.report["allocation"]["estimated_macs_kept"]
            if reached > goal + 1e-9:
                self.warnings.append(
                    f"--target-macs {cfg.target_macs} is out of reach: with every prunable group at its largest "
                    f"measured ratio the model keeps {reached:.1%} of its MACs (blocked channels stay)"
                    + _narrow_note(base.groups, per_atom, total, cfg.round_to)
                )
        plan = make_plan(analysis, tensors, cfg, data_scores=data_scores, keep=keep)
        heads = head_roots(analysis, plan)
        del tensors  # the filters' arrays: free each original as the applier replaces it
        app = Applier(model, analysis, plan.removed, shapes)
        app.exact_borders = cfg.exact_borders
        if calibrated is None and self.ctx is not None:
            app.sink = self.ctx.data_sink  # nothing rewrites the cut weights after this pass
        layers = self._layers(analysis, plan)
        mass_of = self._l1_mass(model, analysis, app, plan, zero=cfg.mode == "zero")
        if calibrated is not None and cfg.mode == "remove":
            calibrated.compensate(app)
        if plan.removed.any():
            if cfg.mode == "remove":
                app.release_external()  # the cut reads kept rows from the file, not the pages scoring mapped
            app.zero(cfg.zero_bias) if cfg.mode == "zero" else app.remove(cfg.zero_bias)
            if calibrated is not None and cfg.mode == "remove":
                calibrated.finish(model, plan, progress=self._progress("refit"), distill_progress=self._progress("distill"))
                self.warnings.extend(calibrated.warnings)
        return _Round(analysis, plan, app, calibrated, layers, mass_of(), total, criterion, heads)

    def _has_calib(self) -> bool:
        return self.ctx is not None and self.ctx.calib is not None

    def _calibrated(self, model: ir.Model, analysis, shapes, teacher=None, final=True, first=True) -> CalibratedPruning | None:
        """The calibration helper when real inputs were given (None otherwise). Rounds after the
        first measure a new model (their own sensitivity cache) against the first's ``teacher``;
        rounds before the last refit, and only the last distills (every round with ``--distill-every-round``)."""
        ctx, cfg = self.ctx, self.config
        if not self._has_calib():
            return None
        from onnxcompress.pruning.calibrated import CalibratedPruning
        from onnxcompress.pruning.search_cache import SearchCache

        fit = list(ctx.calib.batches())
        if cfg.calib_augment > 0:  # perturbed copies join the samples; replacing them broke PP-OCRv5 rec's refit
            from onnxcompress.finetune.augment import input_ranges, perturbed_copies

            rng, ranges = np.random.default_rng(cfg.seed), input_ranges(fit)
            copies = perturbed_copies(fit, rng, cfg.calib_augment, ranges, keep_tail=ctx.calib.fixed_batch is None)
            fit = fit + copies
            ctx.report.calibration["fit_perturbed_copies"] = sum(len(next(iter(f.values()))) for f in copies)
        recover = cfg.resolved_recover(True)
        recover = "refit" if recover == "distill" and not final and not cfg.distill_every_round else recover
        cal = CalibratedPruning(
            model, analysis, shapes, fit=fit, held=list(ctx.held_out.batches()),
            recover=recover, cache=ctx.search_cache if first else SearchCache(), map_thresholds=cfg.map_thresholds,
            distill=_distill_config(cfg, model) if recover == "distill" else None, estimate=cfg.sensitivity_estimate,
            teacher=teacher, refit_augment=cfg.refit_augment, seed=cfg.seed,
        )
        cal.prepare()
        return cal

    def _progress(self, what: str):
        ctx = self.ctx
        if ctx is None:
            return None
        return lambda done, total, detail="": ctx.progress.on_stage(f"{what} {done}/{total}" + (f": {detail}" if detail else ""))

    @staticmethod
    def _layers(analysis, plan: Plan) -> list[dict]:
        out = []
        for s in analysis.slots:
            if s.role == "out" and consumer_of(s.node) is not None:
                out.append(
                    {
                        "name": s.node.name or s.node.op_type,
                        "op": s.node.op_type,
                        "before": int(s.ids.size),
                        "after": int((~plan.removed[s.ids]).sum()),
                    }
                )
        return out

    @staticmethod
    def _l1_mass(model: ir.Model, analysis, app: Applier, plan: Plan, zero: bool):
        """The fraction of the total |w| of conv/linear weights that this plan removes (or zeroes),
        as a function to call once the weights are cut.

        Called before the cut. Reading every weight again for this figure cost as much as scoring
        them (1 s of a 2.4 GB model), so in remove mode a scored weight's total comes from its L1
        filter norms (``plan.l1_totals``) and its kept part is summed by the cut as it goes
        (``Applier.sum_l1``); only the others are read here.
        """
        masks: dict[ir.Value, dict[int, np.ndarray]] = {}
        roles = ("out",) if zero else ("out", "in")
        for s in analysis.slots:
            if s.role in roles:
                masks.setdefault(s.value, {})[s.axis] = ~plan.removed[s.ids]
        cuts = {} if zero else app.cuts()
        jobs, known, deferred = [], [], {}
        seen = set()
        for node in model.graph:
            v = node.inputs[1] if consumer_of(node) is not None and len(node.inputs) > 1 else None
            if v is None or v in seen:
                continue
            w = app.tensor(v)
            if w is None or w.ndim < 2:
                continue
            seen.add(v)
            lost = {a: m for a, m in masks.get(v, {}).items() if not m.all()}
            cut = dict(cuts.get(v, []))
            if v in plan.l1_totals and not lost:
                known.append((plan.l1_totals[v], plan.l1_totals[v]))
            elif (v in plan.l1_totals and cut.keys() == lost.keys() and all(np.array_equal(cut[a], lost[a]) for a in lost)
                    and app.sums_kept_l1(v, cuts[v])):
                deferred[v] = plan.l1_totals[v]
            else:
                jobs.append((w, masks.get(v, {})))
        known += parallel_map(lambda job: l1_kept(*job), jobs)
        app.sum_l1 = set(deferred)

        def fraction() -> float:
            sums = known + [(t, app.kept_l1[v]) for v, t in deferred.items()]
            total = sum(t for t, _ in sums)
            removed = sum(t - k for t, k in sums)
            return removed / total if total else 0.0

        return fraction


def _round_recovery(calibrated) -> dict:
    """A round's recovery for the report's ``rounds`` rows: what distillation kept, where it ran."""
    outcome = ((calibrated.report.get("recovery") or {}).get("distill") or {}) if calibrated is not None else {}
    if not outcome or outcome.get("warning"):
        return {}
    return {"distill_kept": outcome["kept"], "distill_steps": outcome.get("steps"),
            "distill_best_step": outcome.get("best_step"), "distill_interrupted": bool(outcome.get("interrupted"))}


def _narrow_note(groups, per_atom: dict, total: float, round_to: int) -> str:
    """The out-of-reach warning's tail when groups too narrow for ``round_to`` hold MACs the target needs."""
    narrow = narrow_groups(groups, round_to)
    share = sum(per_atom.get(g.key, 0.0) * len(g.atoms) for g in narrow) / total if total else 0.0
    if not narrow or share < 0.01:
        return ""
    return (f"; {len(narrow)} group(s) of {round_to} channels or fewer cannot lose any at --round-to {round_to} and "
            f"touch {share:.0%} of the MACs: --round-to 1 reaches them, but onnxruntime's CPU convs work in blocks of 8 or 16 "
            f"channels, so a conv cut inside one may run no faster (basic-pitch at half its MACs: 1.04x; "
            f"--target-speedup measures)")
