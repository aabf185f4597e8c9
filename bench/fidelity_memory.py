"""Memory of judging held-out outputs: ``compare_outputs`` and ``DriftReference`` on a big CTC head.

PP-OCRv6 rec's output is (N, 40, 18710) probabilities; with 1024 calibration samples and
``--distill-augment`` the held-out judge compares 512 of them (1.5 GB in float32) at every
evaluation. This builds such outputs (random distributions, one class nudged in the compared
copy), and measures the peak of numpy allocations (tracemalloc) each function makes beyond
the two outputs, for the working tree's code and, with ``--before COMMIT``, for that commit's
``fidelity.py`` and ``pruning/sensitivity.py`` (read with ``git show``). The figures must agree.

    python bench/fidelity_memory.py --samples 64 128 --before 4927820   # bench/fidelity_memory.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def module_at(commit: str, path: str, name: str):
    """``path`` as it was at ``commit``, imported as module ``name``."""
    text = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    f = Path(tempfile.mkdtemp()) / f"{name}.py"
    f.write_text(text)
    spec = importlib.util.spec_from_file_location(name, f)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def peak_mib(fn):
    tracemalloc.start()
    try:
        value = fn()
        return value, tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def measure(n: int, fidelity, sensitivity) -> dict:
    rng = np.random.default_rng(0)
    ref = rng.random((n, 40, 18710), dtype=np.float32)
    ref /= ref.sum(-1, keepdims=True)
    got = ref.copy()
    got[:, :, 0] += 0.01
    fid, cmp_peak = peak_mib(lambda: fidelity.compare_outputs({"y": ref}, {"y": got}, inputs="calibration", signals=True))
    drift, drift_peak = peak_mib(lambda: sensitivity.DriftReference({"y": ref})({"y": got}))
    o = fid.per_output["y"]
    return {"samples": n, "output_mib": round(ref.nbytes / 2**20, 1), "compare_outputs_peak_mib": round(cmp_peak, 1),
            "drift_reference_peak_mib": round(drift_peak, 1), "rel_l2": o.rel_l2, "cosine_min": o.cosine_min,
            "sequence_agreement": o.sequence_agreement, "drift": drift}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, nargs="+", default=[64])
    ap.add_argument("--before", help="a commit to measure beside the working tree")
    ap.add_argument("--json", default=str(ROOT / "bench" / "fidelity_memory.json"))
    args = ap.parse_args()
    from onnxcompress import fidelity
    from onnxcompress.pruning import sensitivity

    arms = [("working tree", fidelity, sensitivity)]
    if args.before:
        old_fid = module_at(args.before, "onnxcompress/fidelity.py", "fidelity_before")
        old_sens = module_at(args.before, "onnxcompress/pruning/sensitivity.py", "sensitivity_before")
        arms.insert(0, (args.before, old_fid, old_sens))
    rows = []
    for n in args.samples:
        for code, fid, sens in arms:
            rows.append({"code": code, **measure(n, fid, sens)})
            r = rows[-1]
            print(f"{code:>12} N={n}: output {r['output_mib']} MiB, compare_outputs peak {r['compare_outputs_peak_mib']} MiB, "
                  f"DriftReference peak {r['drift_reference_peak_mib']} MiB (rel_l2 {r['rel_l2']:.9f}, drift {r['drift']:.12f})",
                  flush=True)
    Path(args.json).write_text(json.dumps({"tool": "bench/fidelity_memory.py", "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
