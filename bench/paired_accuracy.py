"""How far a pruned model's accuracy is from the original's, sample by sample, with its uncertainty.

Two accuracies on the same 500 labelled samples are not independent: most samples are read
right (or wrong) by both models, and only the samples where they disagree carry the
difference. This scores the original and one or more pruned models on a labelled split of
``bench/real/prepare.py`` (recognizers and classifiers: exact match) and gives, per pruned model:

- the samples only the original reads right, and only the pruned one does;
- the accuracy difference, with a 95% interval from a paired bootstrap (10 000 resamples of the
  split, seeded, the same samples for both models).

    python bench/paired_accuracy.py ppocr_rec bench/.cache/real/out/ppocr_rec.0.8.*.onnx --split shift

Results go to bench/paired_accuracy.json (keyed by model, split and file name; ``--json``).
Where prepare.py described how each sample was drawn (``NAME.SPLIT.describe.json``: the shift,
wild and confirm splits of the text-line models), ``--breakdown`` also scores both models per glyph size,
colour scheme, capture defect and font, and stores that in the entry under ``by``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "real"))
from evaluate import CACHE, predict, read_right  # noqa: E402

OUT = HERE / "paired_accuracy.json"


def correct(model_path: str, name: str, split: str) -> np.ndarray:
    """Per sample of ``NAME.SPLIT.npz``: does the model read it right (exact match)."""
    meta = json.loads(Path(CACHE, f"{name}.json").read_text())
    data = np.load(os.path.join(CACHE, f"{name}.{split}.npz"))
    preds = predict(model_path, data[meta["input_name"]].astype(np.float32, copy=False), meta)
    return read_right(preds, data["labels"], meta["task"])


def paired(orig: np.ndarray, pruned: np.ndarray, resamples: int = 10_000, seed: int = 0) -> dict:
    """The pruned model's accuracy minus the original's, its paired-bootstrap 95% interval, and
    the disagreement counts that carry it."""
    diff = pruned.astype(np.float64) - orig.astype(np.float64)
    rng = np.random.default_rng(seed)
    means = np.array([diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(resamples)])
    lo, hi = np.quantile(means, [0.025, 0.975])
    return {"n": int(len(diff)), "original": float(orig.mean()), "pruned": float(pruned.mean()),
            "difference": float(diff.mean()), "ci95": [float(lo), float(hi)],
            "only_original_right": int((orig & ~pruned).sum()), "only_pruned_right": int((pruned & ~orig).sum())}


def size_bucket(px: int) -> str:
    """Glyph sizes against the calibration split's (26-40 px for the recognizers, 28-40 for the classifier)."""
    return "small (<26 px)" if px < 26 else "large (>40 px)" if px > 40 else "26-40 px"


def breakdown(drawn: list[dict], orig: np.ndarray, pruned: np.ndarray) -> dict:
    """Per described attribute and value: samples, each model's accuracy, samples only the original reads right."""
    out: dict = {}
    for attr in ("size", "colours", "defect", "font"):
        values = [size_bucket(d["size"]) if attr == "size" else d.get(attr) for d in drawn]
        if all(v is None for v in values):
            continue
        rows = {}
        for v in sorted({v for v in values if v is not None}):
            m = np.array([x == v for x in values])
            rows[v] = {"n": int(m.sum()), "original": float(orig[m].mean()), "pruned": float(pruned[m].mean()),
                       "only_original_right": int((orig[m] & ~pruned[m]).sum())}
        out[attr] = rows
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", help="the model's name in bench/.cache/real (e.g. ppocr_rec)")
    ap.add_argument("pruned", nargs="+", help="pruned models of it")
    ap.add_argument("--split", default="shift", help="labelled split: eval, shift, wild or confirm (default shift)")
    ap.add_argument("--json", type=Path, default=OUT)
    ap.add_argument("--breakdown", action="store_true",
                    help="also score per glyph size, colours, defect and font (NAME.SPLIT.describe.json)")
    args = ap.parse_args()
    drawn = None
    if args.breakdown:
        described = Path(CACHE, f"{args.name}.{args.split}.describe.json")
        if not described.exists():
            sys.exit(f"error: {described} does not exist: run bench/real/prepare.py --only {args.name} again")
        drawn = json.loads(described.read_text())
    orig = correct(os.path.join(CACHE, f"{args.name}.onnx"), args.name, args.split)
    results = json.loads(args.json.read_text()) if args.json.exists() else []
    for path in args.pruned:
        right = correct(path, args.name, args.split)
        entry = {"model": args.name, "split": args.split, "file": os.path.basename(path), "date": time.strftime("%Y-%m-%d"),
                 **paired(orig, right)}
        lo, hi = entry["ci95"]
        print(f"{entry['file']}: {entry['pruned']:.3f} vs {entry['original']:.3f}, {entry['difference'] * 100:+.1f} points "
              f"(95% CI {lo * 100:+.1f} to {hi * 100:+.1f}); only the original right {entry['only_original_right']}, "
              f"only the pruned one {entry['only_pruned_right']}")
        if drawn is not None:
            entry["by"] = breakdown(drawn, orig, right)
            for attr, rows in entry["by"].items():
                for v, r in rows.items():
                    print(f"  {attr:8s} {v:38s} n={r['n']:4d}  original {r['original']:.3f}  pruned {r['pruned']:.3f}  "
                          f"only the original right {r['only_original_right']}")
        key = lambda e: (e["model"], e["split"], e["file"])  # noqa: E731
        results = [e for e in results if key(e) != key(entry)] + [entry]
    args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
