"""Ridge toward the original weights against ridge toward zero, on real models, eval and shift splits.

The least-squares refit solves min ||Y - X W||^2 + lam ||W - W0||^2 per consumer layer. W0 = 0 is
the classic ridge; W0 = the layer's weights before the refit (the original's, restricted to the
kept inputs, bias compensated) keeps the layer near the original where the calibration data
says little, which is where data drawn differently from it lands. Each setting is one
``--recover refit`` compression at the same MACs target (the allocation is identical:
it does not depend on the refit), scored on the labelled eval split (drawn like the
calibration data) and the shift split (drawn differently; bench/real/prepare.py).

    python bench/refit_prior.py --models ppocr_cls --targets 0.8 0.6
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CACHE = ROOT / "bench" / ".cache" / "real"
OUT = ROOT / "bench" / "refit_prior.json"

SETTINGS = [("zero", 1e-3), ("original", 1e-3), ("original", 1e-2), ("original", 1e-1), ("original", 1.0)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["ppocr_cls"])
    ap.add_argument("--targets", nargs="*", type=float, default=[0.8, 0.6])
    ap.add_argument("--settings", nargs="*", default=[f"{t}:{r:g}" for t, r in SETTINGS],
                    help="TOWARD:RIDGE pairs (default: %(default)s)")
    a = ap.parse_args()
    settings = [(s.split(":")[0], float(s.split(":")[1])) for s in a.settings]

    import onnxcompress as oc
    from bench.distill_real import meta, score
    from onnxcompress.pruning import recover
    from onnxcompress.pruning.calibrated import SearchCache

    results = json.loads(OUT.read_text()) if OUT.exists() else {"rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.models:
            m = meta(name)
            src = str(CACHE / f"{name}.onnx")
            for target in a.targets:
                cache = SearchCache()  # one sensitivity sweep per model and target
                for toward, lam in settings:
                    recover.RIDGE_TOWARD, recover.RIDGE = toward, lam
                    cfg = oc.CompressConfig(calib=str(CACHE / f"{name}.calib.npz"), target_macs=target, recover="refit",
                                            input_shapes={m["input_name"]: (1, *m["input_shape"])})
                    t = time.perf_counter()
                    res = oc.compress(src, cfg, search_cache=cache)
                    out = Path(tmp) / f"{name}.onnx"
                    res.save(out)
                    kept = sum(1 for r in res.report.recovery.get("layers", []) if r.get("kept"))
                    row = {"model": name, "target": target, "toward": toward, "ridge": lam,
                           "macs_kept": round(res.report.after.macs / res.report.before.macs, 4),
                           "layers_refit": kept, "eval": score(name, out, "eval"), "shift": score(name, out, "shift"),
                           "held_out_drift": res.report.recovery.get("drift_after_refit"),
                           "wall_s": round(time.perf_counter() - t, 1)}
                    print(json.dumps(row), flush=True)
                    key = (name, target, toward, lam)
                    results["rows"] = [r for r in results["rows"]
                                       if (r["model"], r["target"], r["toward"], r["ridge"]) != key] + [row]
                    OUT.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
