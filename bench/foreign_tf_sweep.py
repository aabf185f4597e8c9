"""Robustness sweep on TensorFlow/Keras models converted by tf2onnx (channels-last graphs).

Run with the project's Python; exports run in a TensorFlow venv: --tf-python, else the Python
named by ONNXCOMPRESS_TF_PYTHON, else ``.venv-tf`` at the repository root (bench/venvs.py has
the one command that creates it):
    python bench/foreign_tf_sweep.py [--tf-python PATH]
Exports go to bench/.cache/tf/; the table is appended to bench/FOREIGN.md (replacing an
earlier TensorFlow section).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache" / "tf"
MODELS = {  # keras.applications constructor, input size, width multiplier
    "MobileNetV2": (96, 0.35),
    "ResNet50": (64, None),
    "EfficientNetB0": (64, None),
    "DenseNet121": (64, None),
}
MARK = "## TensorFlow / Keras via tf2onnx"


def export(name: str, size: int, alpha) -> None:
    """Runs inside the TensorFlow venv."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf
    import tf2onnx

    tf.random.set_seed(0)
    rng = np.random.default_rng(0)
    kw = {"alpha": alpha} if alpha else {}
    model = getattr(tf.keras.applications, name)(weights=None, input_shape=(size, size, 3), classes=10, **kw)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            c = layer.get_weights()[0].shape
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.3, c), rng.normal(0, 0.2, c), rng.uniform(0.5, 1.5, c)])
    spec = (tf.TensorSpec((None, size, size, 3), tf.float32, name="input"),)
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=13, output_path=str(CACHE / f"{name}.onnx"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tf-python", help="the TensorFlow venv's Python (default: $ONNXCOMPRESS_TF_PYTHON, else .venv-tf)")
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--export", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.export:
        size, alpha = MODELS[args.export]
        export(args.export, size, alpha)
        return
    import onnxcompress as oc
    from venvs import interpreter  # bench/ is on sys.path when run as a script

    args.tf_python = str(interpreter("tf", args.tf_python))
    CACHE.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, (size, _) in MODELS.items():
        path = CACHE / f"{name}.onnx"
        if not path.exists():
            proc = subprocess.run([args.tf_python, __file__, "--export", name], capture_output=True, text=True)
            if proc.returncode != 0:
                rows.append(f"| {name} | export failed: {proc.stderr.strip().splitlines()[-1][:100]} | | | | | |")
                continue
        t = time.perf_counter()
        try:
            res = oc.compress(path, oc.CompressConfig(ratio=args.ratio))
        except Exception as exc:  # noqa: BLE001 - recorded, never hidden
            rows.append(f"| {name} | **failed**: {str(exc).splitlines()[0][:120]} | | | | | |")
            continue
        rep = res.report
        blockers = sorted({f"{b.op} ({b.reason})" for b in rep.blockers if "graph output" not in b.reason})
        rows.append(
            f"| {name} {size}x{size} | ok | {rep.after.macs / rep.before.macs:.1%} | {rep.groups['pruned']}/{rep.groups['total']} "
            f"| {rep.fidelity['cosine_min']:.3f} | {'; '.join(blockers) or '-'} | {time.perf_counter() - t:.1f} s |"
        )
        print(rows[-1], flush=True)
    section = [
        MARK,
        "",
        f"`tf.keras.applications` models with random weights and non-trivial BN, converted by tf2onnx (opset 13, "
        f"NHWC input transposed to NCHW, BN folded into Mul/Add or the conv). `--ratio {args.ratio}`, defaults "
        f"otherwise. Regenerate: `python bench/foreign_tf_sweep.py --tf-python /path/to/tf-venv/python`.",
        "",
        "| model | status | MACs kept | groups pruned | min cosine | blockers | time |",
        "|---|---|---:|---:|---:|---|---:|",
        *rows,
    ]
    md = ROOT / "bench" / "FOREIGN.md"
    text = md.read_text() if md.exists() else ""
    if MARK in text:
        text = text[: text.index(MARK)].rstrip() + "\n"
    md.write_text(text + "\n" + "\n".join(section) + "\n")


if __name__ == "__main__":
    sys.exit(main())
