"""Is distillation's held-out judge choosing well? Every checkpoint it scores, scored on labelled data.

Distillation keeps the weights of the held-out evaluation (every 25 steps) with the least
task drift, ties broken by the held-out loss (``finetune/distill.py``). This script runs one
CLI compression in-process, saves the student at each of those evaluations (the graph before
tidy, the weights as trained at that step), then scores every checkpoint on the model's
labelled ``eval`` and ``shift`` splits, beside the held-out drift and loss the judge saw:

    python bench/distill_checkpoints.py --model ddddocr_common --target 0.6 --samples 1024 --steps 300

The table shows the checkpoint the judge chose, the one the held-out loss alone would have
chosen, and the best one on ``eval`` (an oracle no user has). Results go to
bench/distill_checkpoints.json (one entry per run, keyed by model, target, samples, steps and
tag), and every entry's table to bench/DISTILL_CHECKPOINTS.md (``--report`` rewrites it alone).
The runs need the finetune extra (torch).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.distill_real import SPLITS, command, score  # noqa: E402

OUT = ROOT / "bench" / "distill_checkpoints.json"
REPORT = ROOT / "bench" / "DISTILL_CHECKPOINTS.md"
#: the splits a table shows after eval and shift, where any checkpoint has a score there
EXTRA = ("wild", "confirm")


def _held_detail(self, reference: dict, detail: dict) -> None:
    """Per held-out sample, whether the student reads it as the original does (greedy-decoded, first
    output); once, the original's confidence (least of its positions' top probability) and which
    samples are perturbed copies. For weighing other judges against the one distillation uses."""
    import numpy as np
    import torch

    from onnxcompress.fidelity import _dominant_class, ctc_decode

    name = self.outputs[0]
    ref = reference[name]
    n = sum(len(next(iter(f.values()))) for f in self.held)
    with torch.no_grad():
        got = np.concatenate([self._student(f)[name].detach().cpu().numpy() for f in self.held],
                             axis=0 if ref.shape[0] == n else 1)
    if ref.shape[0] != n:  # (T, N, C)
        ref, got = ref.transpose(1, 0, 2), got.transpose(1, 0, 2)
    ids_r, ids_g = ref.argmax(-1), got.argmax(-1)
    blank = _dominant_class(ids_r)
    same = [ctc_decode(a, blank) == ctc_decode(b, blank) for a, b in zip(ids_r, ids_g)] if blank is not None \
        else (ids_r == ids_g).all(axis=1).tolist()
    detail.setdefault("agree", []).append("".join("1" if x else "0" for x in same))
    if "confidence" not in detail:
        p = ref if np.allclose(ref.sum(-1), 1.0, atol=1e-3) else np.exp(ref - ref.max(-1, keepdims=True))
        p = p / p.sum(-1, keepdims=True)
        detail["confidence"] = [round(float(c), 4) for c in p.max(-1).min(-1)]
        detail["perturbed"] = self.n_perturbed


def _patch_evaluate(folder: Path, detail: dict | None = None) -> list[int]:
    """Make every ``Distiller.evaluate`` call also save the student as it is (and, with ``detail``,
    its per-sample held-out agreement: ``_held_detail``); returns the steps saved."""
    import onnx
    import onnx_ir as ir

    from onnxcompress.finetune.distill import Distiller
    from onnxcompress.finetune.graph_module import apply_state_arrays

    original = Distiller.evaluate
    saved: list[int] = []
    base: dict = {}

    def evaluate(self, reference):
        if "proto" not in base:  # the refit graph, before any trained weight is written back
            base["proto"] = ir.to_proto(self.student_ir)
        step = len(saved) * self.cfg.eval_every
        onnx.save(apply_state_arrays(base["proto"], self.module.state_arrays()), str(folder / f"step{step:05d}.onnx"))
        saved.append(step)
        if detail is not None:
            _held_detail(self, reference, detail)
        return original(self, reference)

    Distiller.evaluate = evaluate
    return saved


def run(args) -> dict:
    from onnxcompress.cli import main as cli_main

    if args.sweep_ratios:
        from bench.allocation_cap import patch_sweep

        patch_sweep(tuple(float(r) for r in args.sweep_ratios.split(",")))

    work = Path(tempfile.mkdtemp(prefix="ckpt-", dir=ROOT / "bench" / ".cache"))
    out, rep = work / "final.onnx", work / "report.json"
    argv = command(args.model, args.target, "distill", out, rep, args.seconds, args.samples, rounds=args.rounds,
                   steps=args.steps)[3:] + args.cli_args.split()
    detail: dict | None = {} if args.held_detail else None
    saved = _patch_evaluate(work, detail)
    t = time.perf_counter()
    code = cli_main(argv)
    wall = time.perf_counter() - t
    if code != 0:
        raise SystemExit(f"the compression failed (exit {code})")
    report = json.loads(rep.read_text())
    dist = report["recovery"]["distill"]
    held = {h["step"]: h for h in dist["history"]}
    rows = []
    for step in saved:
        path = work / f"step{step:05d}.onnx"
        h = held.get(step, {})
        rows.append({"step": step, "held_out_drift": h.get("held_out_drift"), "held_out_loss": h.get("held_out_loss"),
                     **{split: score(args.model, path, split) for split in SPLITS}})
        print(f"step {step:4d}: held-out drift {rows[-1]['held_out_drift']}, loss {rows[-1]['held_out_loss']}, "
              + ", ".join(f"{split} {rows[-1][split]}" for split in SPLITS), flush=True)
        if not args.keep:
            path.unlink()
    with_loss = [r for r in rows if r["held_out_loss"] is not None]
    entry = {"model": args.model, "target": args.target, "samples": args.samples or 128, "steps": args.steps,
            "rounds": args.rounds, "cli_args": args.cli_args, "sweep_ratios": args.sweep_ratios, "tag": args.tag,
            "date": time.strftime("%Y-%m-%d"),
            "wall_s": round(wall, 1), "macs_kept": report["after"]["macs"] / report["before"]["macs"],
            "judge_step": dist["best_step"], "loss_step": min(with_loss, key=lambda r: r["held_out_loss"])["step"],
            "oracle_step": max(rows, key=lambda r: (r["eval"] or 0.0))["step"],
            "final": {split: score(args.model, out, split) for split in SPLITS},
            "checkpoints": rows}
    if detail is not None:
        entry["held_detail"] = detail
    if not args.keep:
        shutil.rmtree(work)
    return entry


def _read_differently(entry: dict) -> list[str]:
    """Per checkpoint, 'clean / perturbed' held-out samples read differently from the original
    (``--held-detail`` runs), else empty strings."""
    det = entry.get("held_detail")
    if not det:
        return [""] * len(entry["checkpoints"])
    clean = len(det["confidence"]) - det["perturbed"]
    return [f"{agree[:clean].count('0')} / {agree[clean:].count('0')}" for agree in det["agree"]]


def table(entry: dict) -> str:
    detail = "held_detail" in entry
    extra = [s for s in EXTRA if any(r.get(s) is not None for r in entry["checkpoints"])]
    lines = [f"### {entry['model']} at {entry['target']:g}x MACs, {entry['samples']} samples, step limit {entry['steps']}"
             f"{' ' + entry['tag'] if entry['tag'] else ''} ({entry['date']}, {entry['wall_s']:.0f} s)", "",
             "| step | held-out drift | held-out loss | eval | shift |" + "".join(f" {s} |" for s in extra) + " |"
             + (" read differently, clean / perturbed |" if detail else ""),
             "|---:|---:|---:|---:|---:|" + "---:|" * len(extra) + "---|" + ("---:|" if detail else "")]
    for r, differ in zip(entry["checkpoints"], _read_differently(entry)):
        marks = [m for m, s in (("judge", entry["judge_step"]), ("least loss", entry["loss_step"]),
                                ("best eval", entry["oracle_step"])) if s == r["step"]]
        lines.append(f"| {r['step']} | {r['held_out_drift']:.3f} | {r['held_out_loss']:.4f} | {r['eval']:.3f} | "
                     f"{r['shift']:.3f} |" + "".join(f" {r[s]:.3f} |" if r.get(s) is not None else " |" for s in extra)
                     + f" {', '.join(marks)} |"
                     + (f" {differ} |" if detail else ""))
    return "\n".join(lines)


def _least_neighbour_mean_loss(cs: list[dict]) -> int:
    """The checkpoint after step 0 (or step 0 alone) whose held-out loss, summed with its two
    neighbours' (the ends repeat themselves), is least."""
    loss = [c["held_out_loss"] for c in cs]
    near = lambda i: loss[max(i - 1, 0)] + loss[i] + loss[min(i + 1, len(cs) - 1)]  # noqa: E731
    return min(range(min(1, len(cs) - 1), len(cs)), key=near)


#: other ways to pick a checkpoint, set against the judge's pick in the report (each: checkpoints -> index)
RULES = {
    "judge (least drift, ties by loss)": None,
    "least held-out loss": lambda cs: min(range(len(cs)), key=lambda i: (cs[i]["held_out_loss"], cs[i]["step"])),
    "held-out loss, mean with both neighbours": _least_neighbour_mean_loss,
    "last checkpoint": lambda cs: len(cs) - 1,
    "best eval (an oracle)": lambda cs: max(range(len(cs)), key=lambda i: cs[i]["eval"]),
}


def rules_table(results: list[dict]) -> str:
    """Each rule's pick scored over every run: mean eval and shift, and on eval how often it beats or
    trails the judge's pick (ties not counted)."""
    lines = ["### Other rules for the pick, over every run above", "",
             f"Mean of the picked checkpoints' scores over the {len(results)} runs; the judge's own pick for "
             "comparison. Beside the judge: runs where the rule's pick scored higher / lower on eval.", "",
             "| rule | eval | shift | eval above / below the judge's |", "|---|---:|---:|---|"]
    judged = [next(c for c in e["checkpoints"] if c["step"] == e["judge_step"]) for e in results]
    for name, rule in RULES.items():
        picks = judged if rule is None else [e["checkpoints"][rule(e["checkpoints"])] for e in results]
        up = sum(p["eval"] > j["eval"] for p, j in zip(picks, judged))
        down = sum(p["eval"] < j["eval"] for p, j in zip(picks, judged))
        lines.append(f"| {name} | {sum(p['eval'] for p in picks) / len(picks):.4f} | "
                     f"{sum(p['shift'] for p in picks) / len(picks):.4f} | {'' if rule is None else f'{up} / {down}'} |")
    return "\n".join(lines)


def rescore(entry: dict, folder: Path, split: str) -> None:
    """Score a kept run's checkpoints (``--keep``: ``folder``/stepNNNNN.onnx, final.onnx) on ``split`` as well."""
    for r in entry["checkpoints"]:
        r[split] = score(entry["model"], folder / f"step{r['step']:05d}.onnx", split)
        print(f"step {r['step']:4d}: {split} {r[split]}", flush=True)
    entry["final"][split] = score(entry["model"], folder / "final.onnx", split)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--target", type=float)
    ap.add_argument("--samples", type=int, default=None, help="calibration samples (1024: NAME.calib1024.npz)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=7200.0)
    ap.add_argument("--rounds", type=int, default=1, help="--allocation-rounds")
    ap.add_argument("--cli-args", default="", help="more CLI options, as one string")
    ap.add_argument("--tag", default="", help="names the run in the results (e.g. the CLI options)")
    ap.add_argument("--sweep-ratios", metavar="R,R,...",
                    help="the sensitivity sweep's ratios in place of its own (0.125-0.75): 0.125,0.25,0.375,0.5 caps "
                    "each group's removal at half, as bench/allocation_cap.py does")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoint models and the final one (bench/.cache/ckpt-*)")
    ap.add_argument("--held-detail", action="store_true",
                    help="also record, per checkpoint, which held-out samples the student reads as the original does")
    ap.add_argument("--json", type=Path, default=OUT)
    ap.add_argument("--report", action="store_true", help="only rewrite bench/DISTILL_CHECKPOINTS.md from the JSON")
    ap.add_argument("--rescore", type=Path, metavar="DIR",
                    help="score the checkpoints kept in DIR (a --keep run's folder, named by --model, --target, "
                    "--samples, --steps and --tag) on --split too, in place of a run")
    ap.add_argument("--split", default="wild", help="with --rescore: the labelled split to add (default wild)")
    args = ap.parse_args()
    results = json.loads(args.json.read_text()) if args.json.exists() else []
    key = lambda e: (e["model"], e["target"], e["samples"], e["steps"], e["tag"])  # noqa: E731
    if args.rescore:
        entry = next((e for e in results if key(e) == (args.model, args.target, args.samples, args.steps, args.tag)), None)
        if entry is None:
            ap.error("--rescore: no run with that --model, --target, --samples, --steps and --tag in the JSON")
        rescore(entry, args.rescore, args.split)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    elif not args.report:
        if not args.model or args.target is None:
            ap.error("--model and --target are required (or --report)")
        entry = run(args)
        results = [e for e in results if key(e) != key(entry)] + [entry]
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        print(table(entry))
    if args.json.resolve() == OUT.resolve():
        head = ["# Distillation's held-out judge against labelled data, checkpoint by checkpoint", "",
                "Written by `bench/distill_checkpoints.py` (see its docstring): every held-out evaluation of one "
                "distillation run saved and scored on the labelled `eval` and `shift` splits (and `wild`, drawn a "
                "third way, and `confirm`, more draws of wild's generator, where prepared). `judge`: the "
                "checkpoint distillation kept (least held-out drift, ties by loss); `least loss`: the held-out "
                "loss alone; `best eval`: the best on `eval` (an oracle). Held-out drift is the share of "
                "held-out samples read differently from the original (CTC heads, decoded). `read differently` "
                "(runs with `--held-detail`): of the given held-out samples / of their perturbed copies "
                "(`--distill-augment`); the judge of those runs counted both, and since 2026-12-06 it counts the "
                "given samples alone.", ""]
        REPORT.write_text("\n".join(head + ["\n\n".join([*(table(e) for e in results), rules_table(results)])]) + "\n")


if __name__ == "__main__":
    main()
