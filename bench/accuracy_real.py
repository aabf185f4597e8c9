"""Accuracy against MACs kept, per method, on real pretrained models that PyPI packages ship.

Models and data come from ``bench/real/prepare.py``: the PP-OCR text recognizer and
text-direction classifier of rapidocr-onnxruntime, and ddddocr's captcha reader, each
with 128 unlabelled calibration inputs and 500 labelled evaluation samples from disjoint
seeds; plus the digits CNN shipped in models/ (calibrated on 128 of its 540 held-out
images, evaluated on all 540: its numbers are optimistic by construction).

Methods, all in remove mode:
- magnitude: ``--ratio R`` (L1 norms, no data; what the tool did before calibration);
- data-aware: ``--calib --ratio R --recover none``;
- data-aware + bias: ``--recover bias``;
- data-aware + refit: ``--recover refit`` (the default with --calib);
- target search: ``--calib --target-macs F`` (per-group ratios from measured drift, refit).

    python bench/accuracy_real.py [--models ppocr_rec ...] [--ratios ...] [--targets ...]

Results go to bench/accuracy_real.json; ``bench/accuracy_real_report.py`` writes the
Markdown and the plot. The calibration cost is measured by one CLI run per model
(``--target-macs 0.8``) under /usr/bin/time.
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

import onnxcompress as oc  # noqa: E402
from onnxcompress.pruning.calibrated import SearchCache  # noqa: E402

METHODS = {
    "magnitude": dict(criterion="l1", recover="none"),
    "data-aware": dict(recover="none"),
    "data-aware + bias": dict(recover="bias"),
    "data-aware + refit": dict(recover="refit"),
}


def model_files(name: str, tmp: Path) -> tuple[Path, dict[str, tuple[int, ...]], Path]:
    """(model, input shapes for analysis, calibration npz)."""
    if name == "digits_cnn":
        z = np.load(ROOT / "models" / "digits_eval.npz")
        calib = tmp / "digits_calib.npz"
        np.savez(calib, input=z["x"][:128])
        return ROOT / "models" / "digits_cnn.onnx", {}, calib
    meta = json.loads((CACHE / f"{name}.json").read_text())
    return CACHE / f"{name}.onnx", {meta["input_name"]: (1, *meta["input_shape"])}, CACHE / f"{name}.calib.npz"


def accuracy(name: str, path: Path) -> float:
    if name == "digits_cnn":
        from onnxcompress.runtime import Session

        z = np.load(ROOT / "models" / "digits_eval.npz")
        out = next(iter(Session(path).run({"input": z["x"]}).values()))
        return float((out.argmax(1) == z["y"]).mean())
    from bench.real.evaluate import evaluate, paths_for

    _, npz, meta = paths_for(name)
    return float(evaluate(str(path), npz, meta)["accuracy"])


def one(name: str, src: Path, cfg: oc.CompressConfig, tmp: Path, cache=None) -> dict:
    t = time.perf_counter()
    try:
        res = oc.compress(str(src), cfg, search_cache=cache)
    except oc.OnnxCompressError as exc:
        return {"error": str(exc)}
    wall = time.perf_counter() - t
    out = tmp / f"{name}.out.onnx"
    res.save(out)
    r = res.report
    fid = r.fidelity or {}
    return {
        "macs_kept": r.after.macs / r.before.macs,
        "accuracy": accuracy(name, out),
        "wall_s": wall,
        "heldout_agreement": fid.get("agreement"),
        "heldout_sequence_agreement": fid.get("sequence_agreement"),
        "fidelity_inputs": fid.get("inputs"),
        "drift_before_refit": (r.recovery or {}).get("drift_before_refit"),
        "drift_after_refit": (r.recovery or {}).get("drift_after_refit"),
    }


def cost(name: str, src: Path, shapes: dict, calib: Path, tmp: Path) -> dict:
    """One CLI run with 128 calibration samples: wall time and peak RSS."""
    cmd = [sys.executable, "-m", "onnxcompress", str(src), "-o", str(tmp / "cost.onnx"), "-q", "--calib", str(calib),
           "--target-macs", "0.8"]
    for k, v in shapes.items():
        cmd += ["--input-shape", f"{k}:" + ",".join(map(str, v))]
    t = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        return {"error": proc.stderr.strip()[-300:]}
    return {"wall_s": wall, "peak_rss_mb": int(proc.stderr.strip().splitlines()[-1]) / 1024,
            "model_mb": src.stat().st_size / 1e6, "samples": 128, "command": "--calib (128 samples) --target-macs 0.8"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=["digits_cnn", "ppocr_cls", "ppocr_rec", "ddddocr_common"])
    ap.add_argument("--ratios", nargs="*", type=float, default=[0.125, 0.25, 0.375, 0.5])
    ap.add_argument("--targets", nargs="*", type=float, default=[0.9, 0.8, 0.7, 0.6, 0.5])
    ap.add_argument("--no-cost", action="store_true")
    ap.add_argument("--out", default=str(OUT), help="results file (several runs in parallel: one each)")
    args = ap.parse_args()
    out_path = Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name in args.models:
            src, shapes, calib = model_files(name, tmp)
            res = {"original_accuracy": accuracy(name, src), "runs": [], "date": time.strftime("%Y-%m-%d")}
            results[name] = res
            for ratio in args.ratios:
                for method, kw in METHODS.items():
                    cfg = oc.CompressConfig(ratio=ratio, input_shapes=shapes,
                                            calib=None if method == "magnitude" else str(calib), **kw)
                    row = {"method": method, "ratio": ratio, **one(name, src, cfg, tmp)}
                    res["runs"].append(row)
                    print(name, json.dumps(row), flush=True)
                    out_path.write_text(json.dumps(results, indent=1))
            cache = SearchCache()
            for target in args.targets:
                cfg = oc.CompressConfig(target_macs=target, input_shapes=shapes, calib=str(calib))
                # the sensitivity table is measured once per model
                row = {"method": "target search", "target_macs": target, **one(name, src, cfg, tmp, cache)}
                res["runs"].append(row)
                print(name, json.dumps(row), flush=True)
                out_path.write_text(json.dumps(results, indent=1))
            if not args.no_cost:
                res["cost"] = cost(name, src, shapes, calib, tmp)
                print(name, "cost", json.dumps(res["cost"]), flush=True)
                out_path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
