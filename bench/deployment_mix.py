"""Is the 0.8x gap off the calibration data a question of capacity, of data, or of labels? (issue 15, item 6)

The calibration set of every other bench row is drawn by the clean generator only, and the pruned
model is scored on splits drawn other ways (shift, wild, confirm). Here the calibration set is a
**mix**: clean draws plus draws of the shift and wild generators themselves, at sample indices no
scored split uses (shift 1000.., wild 3000..; scored: shift 0-499, wild 0-1499). The same
``--target-macs`` run then distils on it, with or without its labels (``--train-labels``):

- with labels, it bounds what this pruning can keep when recovery sees labelled data drawn like
  the deployment data;
- without them, the same unlabelled mix says how much of that the label-free path gets.

Two steps, in the two venvs (drawing needs the packages and fonts of ``bench/real``):

    path/to/venv-real/bin/python bench/deployment_mix.py prepare ppocrv5_rec
    path/to/venv/bin/python bench/deployment_mix.py run ppocrv5_rec --steps 400 --labels

Rows are appended to bench/deployment_mix.jsonl; the findings are in bench/DEPLOYMENT_MIX.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OUT = ROOT / "bench" / "deployment_mix.jsonl"
#: (split, samples, first index) of the mix: clean calibration draws, then the shift and wild generators
#: past every index a scored split reads
PARTS = (("calib", 384, 0), ("shift", 320, 1000), ("wild", 320, 3000))


def mix_paths(cache: Path, name: str) -> tuple[Path, Path]:
    return cache / f"{name}.mix.calib.npz", cache / f"{name}.mix.labels.npz"


def pad_labels(parts: list[np.ndarray]) -> np.ndarray:
    """Sequence labels of several splits in one (N, L) array, padded with -1 (class labels as they are)."""
    if parts[0].ndim == 1:
        return np.concatenate(parts)
    width = max(p.shape[1] for p in parts)
    return np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1])), constant_values=-1) for p in parts])


def prepare(name: str) -> None:
    sys.path.insert(0, str(ROOT / "bench" / "real"))
    import prepare as P  # bench/real/prepare.py, in the venv that draws

    m = P.build(name)
    meta = json.loads((Path(P.CACHE) / f"{name}.json").read_text())
    codes = {"calib": P.SPLIT_CALIB, "shift": P.SPLIT_SHIFT, "wild": P.SPLIT_WILD}
    xs, ys = [], []
    for split, n, start in PARTS:
        x, y = P.make_split(m, codes[split], n, start=start)
        xs.append(x)
        ys.append(y)
    order = np.random.default_rng(0).permutation(sum(len(x) for x in xs))
    x, y = np.concatenate(xs)[order], pad_labels(ys)[order]
    calib, labels = mix_paths(Path(P.CACHE), name)
    np.savez_compressed(calib, **{meta["input_name"]: x})
    blank = {} if meta["blank_index"] is None else {"ctc_blank": np.int64(meta["blank_index"])}  # classifiers: none
    np.savez_compressed(labels, **{meta["input_name"]: x, "labels": y, **blank})
    print(f"{calib.name}: {x.shape}; {labels.name}: labels {y.shape}")


def run(args) -> None:
    from bench.distill_real import CACHE, meta, scored
    from onnxcompress.cli import main as cli

    m = meta(args.model)
    calib, labels = mix_paths(CACHE, args.model)
    tag = args.tag or f"mix{'+labels' if args.labels else ''}+{args.steps}steps"
    out = CACHE / "out" / f"{args.model}.{args.target:g}.{tag}.onnx"
    out.parent.mkdir(exist_ok=True)
    rep = Path(tempfile.mkdtemp()) / "report.json"
    shape = ",".join(map(str, (1, *m["input_shape"])))
    argv = [str(CACHE / f"{args.model}.onnx"), "--calib", str(calib), "--target-macs", str(args.target),
            "--recover", "distill", "--distill-steps", str(args.steps), "--distill-seconds", str(args.seconds),
            *(["--train-labels", str(labels)] if args.labels else []),
            "--input-shape", f"{m['input_name']}:{shape}", "-o", str(out), "--report", str(rep), "-q",
            *args.cli_args.split()]
    t = time.perf_counter()
    rc = cli(argv)
    row = {"model": args.model, "target": args.target, "tag": tag, "labels": args.labels, "steps": args.steps,
           "mix": [list(p) for p in PARTS], "cli_args": args.cli_args, "rc": rc,
           "wall_s": round(time.perf_counter() - t, 1), "date": time.strftime("%Y-%m-%d")}
    if rc == 0:  # MACs kept, every split's score and the distillation record, as distill_real's rows
        scored(row, args.model, out, json.loads(rep.read_text()))
        row["sha256_12"] = hashlib.sha256(out.read_bytes()).hexdigest()[:12]
    print(json.dumps(row), flush=True)
    with OUT.open("a") as f:
        f.write(json.dumps(row) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="draw the mix (bench/real's venv)")
    p.add_argument("model")
    r = sub.add_parser("run", help="prune, refit and distil on the mix, and score every split")
    r.add_argument("model")
    r.add_argument("--target", type=float, default=0.8)
    r.add_argument("--steps", type=int, default=400)
    r.add_argument("--seconds", type=int, default=2100)
    r.add_argument("--labels", action="store_true", help="add the mix's labels (--train-labels)")
    r.add_argument("--tag", default=None)
    r.add_argument("--cli-args", default="", help="more CLI options, as one string")
    args = ap.parse_args()
    if args.cmd == "prepare":
        prepare(args.model)
    else:
        run(args)


if __name__ == "__main__":
    main()
