"""Every-position against decoded agreement of pruned CTC recognizers with their originals.

For each (model, pruned output) pair below, runs both on the first 256 samples of a split
(``eval`` by default) and prints: the share of samples whose argmax agrees at every position
(what onnxcompress's sequence agreement was before it decoded CTC heads), the share whose greedy
CTC reading agrees (repeats merged, blanks dropped, the blank from bench/real's metadata), the
per-position agreement, and the labelled accuracy of the original and the pruned model.

    python bench/ctc_agreement.py [--split eval|shift|calib] > bench/ctc_agreement.txt

The pruned models are bench/distill_real.py's outputs under bench/.cache/real/out (missing
ones are skipped). Results: bench/CTC_AGREEMENT.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx_ir as ir

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CACHE = ROOT / "bench" / ".cache" / "real"

from bench.real.evaluate import evaluate, paths_for  # noqa: E402
from onnxcompress.fidelity import ctc_decode  # noqa: E402
from onnxcompress.finetune.targets import differentiable_targets  # noqa: E402
from onnxcompress.runtime import Session  # noqa: E402

PAIRS = [
    ("ppocr_rec", "ppocr_rec.0.8.refit.128"),
    ("ppocr_rec", "ppocr_rec.0.6.refit.128"),
    ("ppocrv6_rec", "ppocrv6_rec.0.8.refit+r2.128"),
    ("ppocrv6_rec", "ppocrv6_rec.0.6.refit+r2.128"),
    ("ddddocr_common", "ddddocr_common.0.8.refit.128"),
    ("ddddocr_common", "ddddocr_common.0.6.refit+r2.1024"),
]


def argmax_ids(path: Path, meta: dict, x: np.ndarray) -> np.ndarray:
    """(N, T) per-position argmax of the model's last float output before any ArgMax."""
    outs, _ = differentiable_targets(ir.load(path))
    session = Session(str(path), expose=outs, optimize=False)
    step = 1 if meta.get("fixed_batch") == 1 else 32
    ids = []
    for i in range(0, len(x), step):
        o = session.run({meta["input_name"]: x[i:i + step]}, outs)[outs[0]]
        ids.append((o.transpose(1, 0, 2) if meta.get("output_layout") == "TNC" else o).argmax(-1))
    return np.concatenate(ids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="eval")
    ap.add_argument("-n", type=int, default=256)
    args = ap.parse_args()
    print("| model | pruned | every position | decoded | per position | accuracy, original | accuracy, pruned |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, pruned in PAIRS:
        path = CACHE / "out" / f"{pruned}.onnx"
        if not path.exists():
            continue
        meta = json.loads((CACHE / f"{name}.json").read_text())
        x = np.load(CACHE / f"{name}.{args.split}.npz")[meta["input_name"]][: args.n]
        a, b = argmax_ids(CACHE / f"{name}.onnx", meta, x), argmax_ids(path, meta, x)
        blank = int(meta.get("blank_index", 0))
        decoded = np.mean([ctc_decode(p, blank) == ctc_decode(q, blank) for p, q in zip(a, b)])
        acc = ["", ""]
        if args.split != "calib":
            _, npz, js = paths_for(name)
            npz = npz.replace(".eval.npz", f".{args.split}.npz")
            acc = [f"{evaluate(str(m), npz, js)['accuracy']:.3f}" for m in (CACHE / f"{name}.onnx", path)]
        print(f"| {name} | {pruned} | {(a == b).all(1).mean():.3f} | {decoded:.3f} | {(a == b).mean():.4f} | "
              f"{acc[0]} | {acc[1]} |", flush=True)


if __name__ == "__main__":
    main()
