"""How the calibrated decisions change with the number of calibration samples.

For each model and MACs target, one ``--recover refit`` compression per sample count (the
first N of NAME.calib1024.npz, so the sets are nested), recording:

- accuracy on the labelled eval and shift splits (bench/real/);
- the allocation: channels removed per group, and how far it moved from the largest set's
  (the share of removed channels that sit in other groups: half the L1 distance over the total);
- the refit: how many layers kept their refit, and the held-out drift;
- wall time.

    python bench/sample_curve.py --models ppocr_cls --targets 0.6 --samples 64 128 256 512 1024
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
OUT = ROOT / "bench" / "sample_curve.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["ppocr_cls"])
    ap.add_argument("--targets", nargs="*", type=float, default=[0.6])
    ap.add_argument("--samples", nargs="*", type=int, default=[64, 128, 256, 512, 1024])
    a = ap.parse_args()
    import onnxcompress as oc
    from bench.distill_real import meta, score

    results = json.loads(OUT.read_text()) if OUT.exists() else {"rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.models:
            m = meta(name)
            for target in a.targets:
                rows = []
                for n in a.samples:
                    cfg = oc.CompressConfig(calib=str(CACHE / f"{name}.calib1024.npz"), calib_samples=n,
                                            target_macs=target, recover="refit",
                                            input_shapes={m["input_name"]: (1, *m["input_shape"])})
                    t = time.perf_counter()
                    res = oc.compress(str(CACHE / f"{name}.onnx"), cfg)
                    wall = time.perf_counter() - t
                    out = Path(tmp) / "o.onnx"
                    res.save(out)
                    rec = res.report.recovery
                    rows.append({"model": name, "target": target, "samples": n, "wall_s": round(wall, 1),
                                 "macs_kept": round(res.report.after.macs / res.report.before.macs, 4),
                                 "removed": [g["removed"] for g in res.report.search["groups"]],
                                 "layers_refit": sum(1 for ly in rec.get("layers", []) if ly.get("kept")),
                                 "held_out_drift": rec.get("drift_after_refit"),
                                 "eval": score(name, out, "eval"), "shift": score(name, out, "shift")})
                    print(json.dumps({k: v for k, v in rows[-1].items() if k != "removed"}), flush=True)
                ref = rows[-1]["removed"]
                for r in rows:
                    moved = sum(abs(x - y) for x, y in zip(r["removed"], ref)) / 2
                    r["allocation_moved_vs_largest"] = round(moved / max(sum(ref), 1), 4)
                results["rows"] = [r for r in results["rows"] if (r["model"], r["target"]) != (name, target)] + rows
                OUT.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
