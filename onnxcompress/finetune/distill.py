"""Label-free distillation of a pruned ONNX graph against its original.

The original model is the teacher (run in onnxruntime), the pruned graph the student
(run by ``GraphModule`` in torch), the unlabelled calibration inputs the data. The loss:

- per graph output, task-aware: KL divergence along a class axis (classification, CTC
  per position; softmaxed outputs are read as probabilities, others as logits; a CTC head
  also gets the CTC loss against the teacher's greedy reading, ``ctc_term``), binary
  cross-entropy per pixel for a probability map, else MSE relative to the teacher's
  mean square;
- plus the features at the pruned groups' boundaries (the outputs of the layers that
  lost input channels, present in both graphs), with the removed channels dropped from
  the teacher's, as relative MSE, weighted by ``feature_weight``;
- plus, with labels (``--train-labels``, the ``--eval`` format), cross-entropy or CTC on
  the first output, on a minibatch of those samples each step.

Every weight the refit left is the starting point. Every ``eval_every`` steps the student
is scored on the held-out split with the same task-aware drift ``--max-drift`` uses
(ties broken by the held-out loss, which with ``augment`` covers a perturbed copy of each
held-out sample too; with ``average``, a moving average of the weights is scored instead of the
weights themselves); the best weights, the refit's included (step 0), are written back by
initializer name into the same graph. A first Ctrl-C stops training and keeps the best
weights so far; a second one aborts as usual.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir
import torch
import torch.nn.functional as F

from onnxcompress.feature_outputs import feature_outputs
from onnxcompress.fidelity import compare_outputs, drift_of, signal_inputs
from onnxcompress.finetune import schedule
from onnxcompress.finetune.augment import input_ranges, mix, perturb, perturbed_copies
from onnxcompress.finetune.averaging import WeightAverage
from onnxcompress.finetune.ctc_term import find_ctc_heads, reading_loss, with_judged_blanks
from onnxcompress.finetune.graph_module import GraphModule
from onnxcompress.finetune.losses import check_labelled, loss_kinds, output_loss
from onnxcompress.finetune.targets import differentiable_targets
from onnxcompress.finetune.trained import frozen_for, weight_values
from onnxcompress.output_join import OutputJoin
from onnxcompress.runtime import Session

logger = logging.getLogger(__name__)


@dataclass
class DistillConfig:
    #: wall-clock budget of the training loop, and its step limit (whichever comes first)
    seconds: float = 300.0
    steps: int = 2000
    #: samples per step (fewer when the input is big: see ``INPUT_BYTES``)
    batch: int = 16
    lr: float = 1e-4
    feature_weight: float = 1.0
    #: held-out evaluation period (steps), and evaluations without improvement before stopping
    eval_every: int = 25
    patience: int = 6
    #: no early stop before this step: the first steps (warm-up, blended inputs) often raise
    #: the held-out loss before lowering it (PP-OCR classifier at 0.8x: up for 75 steps)
    min_steps: int = 250
    device: str = "cpu"
    seed: int = 0
    class_axes: dict[str, int] = field(default_factory=dict)
    map_thresholds: dict[str, float] = field(default_factory=dict)
    #: optional labelled samples (an ``accuracy.LabelledSet``) for a supervised term, and its weight
    labelled: object | None = None
    label_weight: float = 1.0
    #: share of each training minibatch perturbed before teacher and student see it (``augment``)
    augment: float = 0.0
    #: share of each training minibatch blended with another of its samples (``augment.mix``)
    mix: float = 0.0
    #: steps over which the learning rate ramps up linearly from lr / warmup to lr, and after them
    #: "constant" or "cosine" (to zero at the end of the budget; ``schedule``)
    warmup: int = 10
    schedule: str = "constant"
    #: "relative": each tensor's rate scaled by its RMS over the median weight's (``step_sizes``);
    #: "absolute": lr for every tensor (before 2026-12-05)
    step_sizes: str = "relative"
    #: weight of the CTC loss against the teacher's greedy reading, on CTC heads (``ctc_term``);
    #: the CLI's default is ``config.DISTILL_CTC_WEIGHT`` (not imported: config reaches this module)
    ctc_weight: float = 1.0
    #: decay of a moving average of the weights the judge scores and keeps instead (0: off; ``averaging``)
    average: float = 0.0
    #: "all" trains every weight; "changed" only those pruning or refit changed (``trained``)
    train: str = "all"
    #: softens class-axis outputs (probs, logits) before their KL; 1: as they are (``losses.output_loss``)
    temperature: float = 1.0


#: input bytes of one training step: a 640x640 detector trains a couple of samples at a time
INPUT_BYTES = 16 << 20
#: boundary features distilled at most (evenly spaced over the graph)
MAX_FEATURES = 12
#: the teacher's targets on the held-out split are kept between evaluations up to this size;
#: past it they are recomputed (PP-OCRv4 rec's boundary features for 256 samples took gigabytes)
HELD_TARGET_BYTES = 256 << 20


@dataclass
class Feature:
    """One boundary feature: its name in the student, in the teacher, and the teacher channels kept."""

    student: str
    teacher: str
    keep: np.ndarray | None


class _Samples:
    """The calibration split as single samples, drawn in minibatches (fixed-batch models: one at a time)."""

    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self.index = [(b, i) for b, f in enumerate(batches) for i in range(len(next(iter(f.values()))))]
        self.batches = batches

    def __len__(self) -> int:
        return len(self.index)

    def take(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        picks = [self.index[r] for r in rows]
        keys = self.batches[0].keys()
        return {k: np.concatenate([self.batches[b][k][i : i + 1] for b, i in picks]) for k in keys}


class Distiller:
    """One distillation run: student graph, teacher session, data, loss and the best weights."""

    def __init__(self, student: ir.Model, teacher: ir.Model, features: list[Feature],
                 fit: list[dict[str, np.ndarray]], held: list[dict[str, np.ndarray]], cfg: DistillConfig) -> None:
        self.cfg = cfg
        self.student_ir = student
        self.module = GraphModule(ir.to_proto(student), frozen=frozen_for(cfg.train, student, teacher)).to(cfg.device)
        self.outputs, self.swapped = differentiable_targets(student)
        self.features = features[:] if cfg.feature_weight > 0 else []  # weight 0: not computed at all
        self.teacher = Session(teacher, expose=self.outputs + [f.teacher for f in self.features], optimize=False)
        self.fit = _Samples(fit)
        # --distill-augment: a perturbed copy of each held-out sample joins the loss; the drift that chooses is not its
        self.ranges = input_ranges(fit) if cfg.augment > 0 or cfg.mix > 0 else {}  # each input's calibration range
        self.held_perturbed = perturbed_copies(held, np.random.default_rng([cfg.seed, 2]), 1.0,
                                               self.ranges) if cfg.augment > 0 else []
        self.held = held + self.held_perturbed
        self.n_perturbed = sum(len(next(iter(f.values()))) for f in self.held_perturbed)
        self.signals = signal_inputs(held)  # CTC heads are judged decoded (fidelity)
        one = self.fit.take(np.array([0]))
        # A fixed-batch model (every feed one sample) takes one sample a run: gradients accumulate over a step.
        self.fixed = all(len(next(iter(f.values()))) == 1 for f in fit) and len(fit) > 1
        per_sample = sum(v.nbytes for v in one.values())
        self.batch = max(1, min(cfg.batch, int(INPUT_BYTES // max(per_sample, 1)), len(self.fit)))
        first = self.teacher.run(one, self.outputs)
        self.feature_outputs = feature_outputs(student)
        self.kinds = loss_kinds(first, cfg, self.feature_outputs)
        # A fixed-batch graph often runs batched in torch: the student takes a minibatch a run, the teacher one sample.
        self.batch_axes = self._student_batch_axes() if self.fixed else None
        self._held_targets: list[dict[str, np.ndarray]] | None = None
        self.ctc_heads = self._ctc_heads(first) if cfg.ctc_weight > 0 and self.signals else {}
        self.labelled = cfg.labelled
        if self.labelled is not None:
            self.label_target = self.outputs[0]
            check_labelled(self.kinds[self.label_target][0], self.label_target)
            self.label_rows = np.random.default_rng([cfg.seed, 1]).permutation(len(self.labelled))

    def _ctc_heads(self, first: dict[str, np.ndarray]) -> dict:
        two = None if self.fixed or len(self.fit) < 2 else self.teacher.run(self.fit.take(np.array([0, 1])), self.outputs)
        return find_ctc_heads(self.kinds, first, two, self.batch_axes, self.feature_outputs)

    def _student_batch_axes(self) -> dict[str, int] | None:
        """Per teacher-side target name, the axis the student stacks samples on when fed two at once,
        or None when the student cannot run two samples together exactly as it runs each alone."""
        if len(self.fit) < 2:
            return None
        names = list(dict.fromkeys(self.outputs + [f.student for f in self.features]))
        try:
            with torch.no_grad():
                both = self._student(self.fit.take(np.array([0, 1])))
                singles = [self._student(self.fit.take(np.array([i]))) for i in (0, 1)]
        except Exception:  # noqa: BLE001 - a Reshape with the batch of 1 baked in, and the like
            return None
        axes: dict[str, int] = {}
        for name in names:
            b, s0, s1 = both[name], singles[0][name], singles[1][name]
            cands = [ax for ax in range(b.ndim) if b.ndim == s0.ndim and b.shape[ax] == 2 and s0.shape[ax] == 1
                     and b.shape[:ax] + b.shape[ax + 1:] == s0.shape[:ax] + s0.shape[ax + 1:]]
            if len(cands) != 1:
                return None
            ref = torch.cat([s0, s1], dim=cands[0])
            if not torch.allclose(b.float(), ref.float(), rtol=1e-3, atol=1e-4 * max(1.0, float(ref.abs().max()))):
                return None
            axes[name] = cands[0]
        out = {o: axes[o] for o in self.outputs}
        out.update({f.teacher: axes[f.student] for f in self.features})
        return out

    # -------------------------------------------------------------- one loss
    def _targets(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The teacher's outputs and boundary features on ``feeds`` (one onnxruntime run, or one per
        sample for a fixed-batch teacher fed a minibatch, stacked on the student's batch axes)."""
        names = self.outputs + [f.teacher for f in self.features]
        n = len(next(iter(feeds.values())))
        if self.batch_axes is None or n == 1:
            return self.teacher.run(feeds, names)
        parts = [self.teacher.run({k: v[i:i + 1] for k, v in feeds.items()}, names) for i in range(n)]
        return {k: np.concatenate([p[k] for p in parts], axis=self.batch_axes[k]) for k in dict.fromkeys(names)}

    def _student(self, feeds: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """The student's targets and boundary features on ``feeds``."""
        x = {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.cfg.device) for k, v in feeds.items()}
        return self.module(x, outputs=list(dict.fromkeys(self.outputs + [f.student for f in self.features])))

    def _loss(self, feeds: dict[str, np.ndarray]) -> torch.Tensor:
        return self._loss_of(self._targets(feeds), self._student(feeds))

    def _loss_of(self, t_all: dict[str, np.ndarray], s_all: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = torch.zeros((), device=self.cfg.device)
        for o in self.outputs:
            kind, axis = self.kinds[o]
            if kind != "skip":
                t = torch.from_numpy(t_all[o]).to(self.cfg.device)
                loss = loss + output_loss(kind, axis, s_all[o], t, self.cfg.temperature)
            if o in self.ctc_heads:
                loss = loss + self.cfg.ctc_weight * reading_loss(self.ctc_heads[o], kind, s_all[o], t_all[o])
        if self.features:
            feat = torch.zeros((), device=self.cfg.device)
            for f in self.features:
                t = t_all[f.teacher]
                if f.keep is not None:
                    t = np.compress(f.keep, t, axis=1)
                t = torch.from_numpy(np.ascontiguousarray(t)).to(self.cfg.device)
                feat = feat + F.mse_loss(s_all[f.student], t) / (t.square().mean() + 1e-12)
            loss = loss + self.cfg.feature_weight * feat / len(self.features)
        return loss

    def _backward(self, feeds: dict[str, np.ndarray], parts: int) -> float:
        loss = self._loss(feeds) / parts
        loss.backward()
        return float(loss.detach())

    def _label_loss(self, step: int) -> float:
        """The supervised term on one minibatch of ``--train-labels`` (cross-entropy, or CTC for sequences)."""
        data = self.labelled
        n = 1 if self.fixed else self.batch
        total = 0.0
        for part in range(self.batch if self.fixed else 1):
            start = ((step * self.batch) + part * n) % len(data)
            rows = self.label_rows[np.arange(start, start + n) % len(data)]
            x = {k: torch.from_numpy(np.ascontiguousarray(v[rows])).to(self.cfg.device) for k, v in data.inputs.items()}
            out = self.module(x, outputs=[self.label_target])[self.label_target]
            kind, axis = self.kinds[self.label_target]
            logp = torch.log(out.clamp_min(1e-8)) if kind == "probs" else F.log_softmax(out, dim=axis if axis is not None else -1)
            y = torch.from_numpy(data.labels[rows]).to(self.cfg.device)
            if data.task == "classification":
                loss = F.nll_loss(logp.reshape(len(rows), -1), y.long())
            else:
                # (N, T, C) or (T, N, C) -> (T, N, C) log-probabilities for the CTC loss
                tnc = logp if logp.shape[1] == len(rows) and logp.shape[0] != len(rows) else logp.transpose(0, 1)
                lengths = (y >= 0).sum(dim=1)
                targets = torch.cat([r[r >= 0] for r in y]).long()
                loss = F.ctc_loss(tnc, targets, torch.full((len(rows),), tnc.shape[0], dtype=torch.long), lengths,
                                  blank=data.blank, zero_infinity=True)
            loss = self.cfg.label_weight * loss / (self.batch if self.fixed else 1)
            loss.backward()
            total += float(loss.detach())
        return total

    # -------------------------------------------------------------- held-out score
    def evaluate(self, reference: dict[str, np.ndarray]) -> tuple[float, float, dict]:
        """(task drift, held-out loss, fidelity) of the current weights on the held-out split."""
        join, losses = OutputJoin(sizes := [len(next(iter(f.values()))) for f in self.held]), []
        first = self._targets(self.held[0]) if self.held and self._held_targets is None else None
        if first is not None:  # the teacher's side never changes: kept if it fits HELD_TARGET_BYTES
            fits = sum(a.nbytes for a in first.values()) * len(self.held) <= HELD_TARGET_BYTES
            self._held_targets = [first, *(self._targets(f) for f in self.held[1:])] if fits else []
        with torch.no_grad():
            recomputed = (first if i == 0 and first is not None else self._targets(f) for i, f in enumerate(self.held))
            for feeds, targets, size in zip(self.held, self._held_targets or recomputed, sizes):
                out = self._student(feeds)
                join.add({k: out[k].detach().cpu().numpy() for k in self.outputs})
                losses.append(float(self._loss_of(targets, out)) * size)
        got, n = join.result(), sum(sizes)
        clean = n - self.n_perturbed
        part = lambda d, rows: {k: v[rows] if v.ndim and len(v) == n else v for k, v in d.items()}  # noqa: E731
        fids = [compare_outputs(part(reference, rows), part(got, rows), class_axes=self.cfg.class_axes,
                                inputs="calibration", map_thresholds=self.cfg.map_thresholds,
                                features=self.feature_outputs, signals=self.signals).to_dict()
                for rows in ([slice(clean)] + ([slice(clean, n)] if clean < n else []))]
        self.perturbed = {"perturbed_drift": drift_of(fids[1])[0]} if len(fids) > 1 else {}  # for the history
        return drift_of(fids[0])[0], sum(losses) / max(n, 1), fids[0]

    # -------------------------------------------------------------- training
    def run(self, progress=None) -> dict:
        # Pruned and refit weights hold denormals (PP-OCRv4 rec: 31k), which slow CPU kernels up to 6x.
        flushed = torch.set_flush_denormal(True)
        try:
            return self._run(progress)
        finally:
            if flushed:
                torch.set_flush_denormal(False)

    def _run(self, progress=None) -> dict:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        reference = self.teacher.run_all(self.held, self.outputs)
        if self.ctc_heads:  # trained by the blank the held-out judge reads them by, or not at all
            self.ctc_heads = with_judged_blanks(self.ctc_heads, reference, self.cfg.class_axes)
        opt = torch.optim.Adam(self._param_groups(), lr=cfg.lr)
        t0 = time.perf_counter()
        best_drift, best_loss, fid0 = self.evaluate(reference)
        start = {"drift": best_drift, "loss": best_loss}
        best_state = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        best_step, step, stale, interrupted = 0, 0, 0, False
        history = [{"step": 0, "held_out_drift": best_drift, "held_out_loss": best_loss, "seconds": 0.0, **self.perturbed}]
        order = rng.permutation(len(self.fit))
        cursor = 0
        aug_rng = np.random.default_rng([cfg.seed, 1])
        take = lambda r: perturb(mix(self.fit.take(r), aug_rng, cfg.mix, self.ranges), aug_rng, cfg.augment,  # noqa: E731
                                 self.ranges)
        running = None
        avg = WeightAverage({n: self.module.parameter_for(n) for n in self.module.parameter_names()},
                            cfg.average) if cfg.average > 0 else None
        try:
            while step < cfg.steps and time.perf_counter() - t0 < cfg.seconds:
                if cursor + self.batch > len(order):
                    order, cursor = rng.permutation(len(self.fit)), 0
                rows = order[cursor : cursor + self.batch]
                cursor += self.batch
                opt.zero_grad(set_to_none=True)
                done = schedule.progress(step, cfg.steps, time.perf_counter() - t0, cfg.seconds)
                rate = schedule.rate_factor(step, cfg.warmup, cfg.schedule, done)
                for group in opt.param_groups:
                    group["lr"] = cfg.lr * group["factor"] * rate
                feeds = take(rows)
                if self.fixed and self.batch_axes is None:
                    loss = sum(self._backward({k: v[i : i + 1] for k, v in feeds.items()}, len(rows)) for i in range(len(rows)))
                else:
                    loss = self._backward(feeds, 1)
                if self.labelled is not None:
                    loss += self._label_loss(step)
                opt.step()
                if avg is not None:
                    avg.update()
                step += 1
                running = loss if running is None else 0.9 * running + 0.1 * loss
                if step % cfg.eval_every == 0:
                    with avg.swapped_in() if avg is not None else nullcontext():
                        d, held_loss, _ = self.evaluate(reference)
                        better = (d, held_loss) < (best_drift, best_loss)
                        if better:  # the weights the judge scored (the average, with one)
                            best_state = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
                    history.append({"step": step, "train_loss": running, "held_out_drift": d,
                                    "held_out_loss": held_loss, "seconds": time.perf_counter() - t0, **self.perturbed})
                    if better:
                        best_drift, best_loss, best_step, stale = d, held_loss, step, 0
                    else:
                        stale += 1
                        if stale >= cfg.patience and step >= cfg.min_steps:
                            break
                if progress is not None:
                    elapsed = time.perf_counter() - t0
                    eta = min(elapsed / step * (cfg.steps - step), cfg.seconds - elapsed)
                    progress(step, cfg.steps, running, best_drift, max(eta, 0.0))
        except KeyboardInterrupt:
            interrupted = True
            logger.warning("distillation interrupted at step %d: keeping the best weights so far (step %d)", step, best_step)
        self.module.load_state_dict(best_state)
        if best_step > 0:
            self._write_back()
        return {
            "method": "distill",
            "kept": "distill" if best_step > 0 else "refit",
            "steps": step,
            "best_step": best_step,
            "seconds": time.perf_counter() - t0,
            "interrupted": interrupted,
            "batch": self.batch,
            "student_batched": self.batch_axes is not None if self.fixed else True,
            "lr": cfg.lr,
            "feature_weight": cfg.feature_weight,
            "ctc_heads": {o: h.blank for o, h in self.ctc_heads.items()},
            "ctc_weight": cfg.ctc_weight,
            "augment": cfg.augment,
            "held_out_perturbed": self.n_perturbed,
            "mix": cfg.mix,
            "average": cfg.average,
            "warmup": cfg.warmup, "schedule": cfg.schedule, "step_sizes": cfg.step_sizes, "temperature": cfg.temperature,
            "features": [f.student for f in self.features],
            "losses": {o: k for o, (k, _a) in self.kinds.items()},
            "distilled_instead": {o: v or "(nothing differentiable)" for o, v in self.swapped.items()},
            "held_out_drift_refit": start["drift"], "held_out_drift_distill": best_drift,
            "held_out_loss_refit": start["loss"],
            "held_out_loss_distill": best_loss,
            "train": cfg.train, "trained_tensors": len(self.module.parameter_names()),
            "labelled_samples": len(self.labelled) if self.labelled is not None else 0,
            "history": history,
        }

    def _param_groups(self) -> list[dict]:
        """One Adam group per trainable tensor, with its factor on the learning rate (``step_sizes``)."""
        names = self.module.parameter_names()
        if self.cfg.step_sizes == "relative":
            from onnxcompress.finetune.step_sizes import relative_step_sizes
            module = self.module
            factors = relative_step_sizes(module.state_arrays(), module.bias_weights(), module.affine_names())
        else:
            factors = {n: 1.0 for n in names}
        return [{"params": [self.module.parameter_for(n)], "factor": factors[n]} for n in names]

    def _write_back(self) -> None:
        from onnxcompress._ir_utils import set_weight

        values = weight_values(self.student_ir)
        for name, arr in self.module.state_arrays().items():
            set_weight(values[name], arr)

