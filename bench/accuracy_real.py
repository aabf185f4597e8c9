"""Accuracy after pruning on real pretrained models that PyPI packages ship, per method.

Each model comes from ``bench/real/prepare.py`` (PP-OCR text recognizer and direction
classifier from rapidocr-onnxruntime, ddddocr's captcha reader) with 128 unlabelled
calibration inputs and 500 labelled evaluation samples from disjoint seeds; plus the
digits CNN shipped in models/. Every compression runs the real CLI in a subprocess
(wall time and peak RSS measured by /usr/bin/time), and accuracy is measured by
``bench/real/evaluate.py`` on the evaluation set. Results go to bench/accuracy_real.json.

    python bench/accuracy_real.py [--models ppocr_rec ...] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache" / "real"
OUT = ROOT / "bench" / "accuracy_real.json"
sys.path.insert(0, str(ROOT))

METHODS = {
    "magnitude": ["--criterion", "l1"],
    "data-aware": ["--recover", "none"],
    "data-aware + bias": ["--recover", "bias"],
    "data-aware + refit": ["--recover", "refit"],
}


def _model(name: str) -> tuple[Path, dict, Path]:
    if name == "digits_cnn":
        return ROOT / "models" / "digits_cnn.onnx", {"input_name": "input", "input_shape": [1, 8, 8]}, ROOT / "models" / "digits_eval.npz"
    return CACHE / f"{name}.onnx", json.loads((CACHE / f"{name}.json").read_text()), CACHE / f"{name}.calib.npz"


def _accuracy(name: str, path: Path) -> float:
    if name == "digits_cnn":
        from onnxcompress.runtime import Session

        z = np.load(ROOT / "models" / "digits_eval.npz")
        out = next(iter(Session(path).run({"input": z["x"]}).values()))
        return float((out.argmax(1) == z["y"]).mean())
    from bench.real.evaluate import evaluate, paths_for

    _, npz, meta = paths_for(name)
    return float(evaluate(str(path), npz, meta)["accuracy"])


def _calib_for(name: str, calib: Path, tmp: Path) -> Path:
    if name != "digits_cnn":
        return calib
    # digits: the first 128 of the shipped set calibrate; accuracy is on all 540 (the
    # model's only labelled set), so its numbers are optimistic by construction.
    z = np.load(calib)
    p = tmp / "digits_calib.npz"
    np.savez(p, input=z["x"][:128])
    return p


def run(name: str, extra: list[str], tmp: Path) -> dict:
    src, meta, calib = _model(name)
    out = tmp / f"{name}.out.onnx"
    rep = tmp / f"{name}.json"
    shape = f"{meta['input_name']}:1," + ",".join(map(str, meta["input_shape"]))
    cmd = [sys.executable, "-m", "onnxcompress", str(src), "-o", str(out), "--report", str(rep), "-q", "--input-shape", shape, *extra]
    t = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-2:] if proc.stderr else proc.returncode, "wall_s": wall}
    r = json.loads(rep.read_text())
    return {
        "macs_kept": r["after"]["macs"] / r["before"]["macs"],
        "accuracy": _accuracy(name, out),
        "wall_s": wall,
        "peak_rss_mb": int(proc.stderr.strip().splitlines()[-1]) / 1024,
        "heldout_sequence_agreement": (r.get("fidelity") or {}).get("sequence_agreement"),
        "heldout_top1_agreement": (r.get("fidelity") or {}).get("agreement"),
        "recovery": {k: v for k, v in (r.get("recovery") or {}).items() if k != "layers"},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=["digits_cnn", "ppocr_cls", "ppocr_rec", "ddddocr_common"])
    ap.add_argument("--ratios", nargs="*", type=float, default=[0.1, 0.2])
    ap.add_argument("--targets", nargs="*", type=float, default=[0.8])
    args = ap.parse_args()
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name in args.models:
            src, _, calib = _model(name)
            calib = _calib_for(name, calib, tmp)
            res = results.setdefault(name, {"original_accuracy": _accuracy(name, src), "runs": []})
            res["runs"] = []
            for ratio in args.ratios:
                for method, flags in METHODS.items():
                    extra = ["--ratio", str(ratio), *flags] + ([] if method == "magnitude" else ["--calib", str(calib)])
                    row = {"method": method, "ratio": ratio, **run(name, extra, tmp)}
                    res["runs"].append(row)
                    print(name, json.dumps(row), flush=True)
                    OUT.write_text(json.dumps(results, indent=1))
            for target in args.targets:
                row = {"method": "target search", "target_macs": target,
                       **run(name, ["--target-macs", str(target), "--calib", str(calib)], tmp)}
                res["runs"].append(row)
                print(name, json.dumps(row), flush=True)
                OUT.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
