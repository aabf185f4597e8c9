"""Why distillation blends its minibatches (``--distill-mix``): held-out curves on one refit model.

Runs the distiller directly (``onnxcompress.finetune.distill.Distiller``) on a model that
``--recover refit`` already wrote, against its original, with the calibration file split as
the CLI splits it (the first 96 samples train, the last 32 are held out), evaluating the
held-out task drift and loss every 10 steps, with no early stop. One row per variant:

- ``none``: the calibration samples as given;
- ``perturb``: every sample perturbed (``--distill-augment 1``: contrast, inversion, noise, blur);
- ``mix``: every sample blended with another of its minibatch (``--distill-mix 1``);
  ``mixS``: that share of them (``--distill-mix S``).

The weights after the last step (not the distiller's choice) are then written and scored on
the labelled ``eval`` and ``shift`` splits (``bench/real/evaluate.py``), beside the refit's.

    python bench/distill_mix.py --model ppocr_rec --pruned bench/.cache/real/out/ppocr_rec.0.6.refit.128.onnx

writes ``bench/distill_mix.json`` (extended, keyed by model, pruned file, variant and lr) and
``bench/DISTILL_MIX.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CACHE = ROOT / "bench" / ".cache" / "real"
OUT = ROOT / "bench" / "distill_mix.json"


def run(model: str, pruned: Path, variant: str, lr: float, steps: int, warmup: int) -> dict:
    import onnx_ir as ir
    import torch

    from onnxcompress.finetune.distill import DistillConfig, Distiller

    torch.set_num_threads(2)
    data = np.load(CACHE / f"{model}.calib.npz")
    name = list(data.keys())[0]
    x = data[name]
    fit = [{name: x[i:i + 16]} for i in range(0, 96, 16)]
    held = [{name: x[i:i + 16]} for i in range(96, 128, 16)]
    cfg = DistillConfig(seconds=1e9, steps=steps, lr=lr, eval_every=10, patience=10**6, warmup=warmup,
                        augment=1.0 if variant == "perturb" else 0.0,
                        mix=float(variant[3:] or 1.0) if variant.startswith("mix") else 0.0)
    class KeepLast(Distiller):
        def evaluate(self, reference):
            self.last = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
            return super().evaluate(reference)

    t = time.perf_counter()
    student = ir.load(pruned)
    d = KeepLast(student, ir.load(CACHE / f"{model}.onnx"), [], fit, held, cfg)
    r = d.run()
    seconds = time.perf_counter() - t
    d.module.load_state_dict(d.last)  # the last step's weights, whatever the held-out choice
    d._write_back()
    out = ROOT / "bench" / ".cache" / "real" / "out" / f"{model}.mix_exp.{variant}.onnx"
    ir.save(student, out)
    return {"model": model, "pruned": str(pruned.relative_to(ROOT)), "variant": variant, "lr": lr, "warmup": warmup,
            "steps": r["steps"], "best_step": r["best_step"], "seconds": round(seconds, 1),
            "last": {"eval": score(model, out, "eval"), "shift": score(model, out, "shift")},
            "refit": {"eval": score(model, pruned, "eval"), "shift": score(model, pruned, "shift")},
            "history": [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in h.items()} for h in r["history"]]}


def score(model: str, path: Path, split: str) -> float:
    from bench.real.evaluate import evaluate, paths_for

    _, npz, js = paths_for(model)
    return float(evaluate(str(path), npz if split == "eval" else npz.replace(".eval.npz", f".{split}.npz"), js)["accuracy"])


#: what the rows show (written under the table)
NOTES = [
    "PP-OCRv4 rec at 0.6x: every variant lowers the held-out KL to the original (0.097 -> 0.058-0.066) and every "
    "one writes a worse model than the refit (eval 0.788-0.896 against 0.958, shift 0.48-0.67 against 0.690). "
    "Blending slows the memorisation (training loss 0.014 without, 0.071 blending half, 0.112 blending all) and "
    "loses less, but not enough: on 96 samples, fine-tuning this 6625-class CTC recognizer costs more than it "
    "recovers, and the CLI's held-out task metric keeps the refit, as it should. By hand, a hard-label term (cross-entropy "
    "on the original's per-position argmax) did worse still (0.698 / 0.432 after 60 steps).",
    "PP-OCR direction classifier at 0.6x (this split's refit already agrees with the original on all 32 held-out "
    "samples): every variant helps on the labelled splits (shift 0.666 -> 0.736-0.750), blending or not; the "
    "differences between variants are within run-to-run variation.",
    "The learning rate matters more than blending on PP-OCRv4 rec: blending every sample, 60 steps at 3e-4 leave "
    "0.820 / 0.608, at 1e-4 0.896 / 0.620, and at 3e-5 0.946 / 0.738: 1.2 points under the refit on eval and 4.8 "
    "above it on shift (the held-out choice would have taken step 40 there).",
    "The CLI runs of the same settings, with boundary features and the held-out choice, are in bench/DISTILL_REAL.md "
    "(rows distill+mixS).",
]


def report(res: list[dict]) -> None:
    lines = ["# Distillation on a few hundred samples, with and without blended minibatches (`--distill-mix`)", "",
             "Generated by `bench/distill_mix.py` from `bench/distill_mix.json`. The distiller run directly on a model "
             "that `--recover refit` wrote, 96 calibration samples to train on and 32 held out (as the CLI splits 128), "
             "batch 16, Adam, no early stop, held-out task drift (sequence disagreement for a recognizer: steps of 1/32) "
             "and held-out loss every 10 steps; 2-core machine. Runs are fixed step counts, so sharing the cores changes "
             "only the `s` column (PP-OCRv4 rec's `none` and `mix0.5` rows ran beside the test suite).", "",
             "| model | pruned | variant | lr | warm-up | steps | train loss at the end | held-out loss: start -> best -> end "
             "| held-out drift: start -> end | best step | eval: refit -> last step | shift: refit -> last step | s |",
             "|---|---|---|---:|---:|---:|---:|---|---|---:|---|---|---:|"]
    for r in res:
        h = r["history"]
        best = min(x["held_out_loss"] for x in h)
        lines.append(f"| {r['model']} | {Path(r['pruned']).name} | {r['variant']} | {r['lr']:g} | {r['warmup']} | "
                     f"{r['steps']} | {h[-1].get('train_loss', float('nan')):.4f} | {h[0]['held_out_loss']:.4f} -> "
                     f"{best:.4f} -> {h[-1]['held_out_loss']:.4f} | {h[0]['held_out_drift']:.3f} -> "
                     f"{h[-1]['held_out_drift']:.3f} | {r['best_step']} | {r['refit']['eval']:.3f} -> "
                     f"{r['last']['eval']:.3f} | {r['refit']['shift']:.3f} -> {r['last']['shift']:.3f} | {r['seconds']:.0f} |")
    lines += ["", *[f"- {n}" for n in NOTES], "", "Curves (step: held-out loss / drift):", ""]
    for r in res:
        pts = ", ".join(f"{x['step']}: {x['held_out_loss']:.4f} / {x['held_out_drift']:.3f}" for x in r["history"])
        lines.append(f"- {r['model']} {r['variant']} lr {r['lr']:g} warm-up {r['warmup']}: {pts}")
    (ROOT / "bench" / "DISTILL_MIX.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ppocr_rec")
    ap.add_argument("--pruned", type=Path, help="a model --recover refit wrote from bench/.cache/real/MODEL.onnx")
    ap.add_argument("--variants", nargs="*", default=["none", "mix0.5", "mix"])
    ap.add_argument("--lr", nargs="*", type=float, default=[1e-4])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--report", action="store_true", help="only rewrite bench/DISTILL_MIX.md")
    args = ap.parse_args()
    res = json.loads(OUT.read_text()) if OUT.exists() else []
    if not args.report:
        for lr in args.lr:
            for variant in args.variants:
                row = run(args.model, args.pruned.resolve(), variant, lr, args.steps, args.warmup)
                key = (row["model"], row["pruned"], row["variant"], row["lr"], row["warmup"])
                res = [r for r in res if (r["model"], r["pruned"], r["variant"], r["lr"], r["warmup"]) != key] + [row]
                OUT.write_text(json.dumps(res, indent=1))
                print(json.dumps({k: v for k, v in row.items() if k != "history"}), flush=True)
    report(res)


if __name__ == "__main__":
    main()
