"""Can a user see, without labels, that a pruned model will lose accuracy on data drawn unlike the calibration set?

For every written model in bench/distill_real.json that was scored on the ``shift`` split and is still on disk
(bench/.cache/real/out/; a file that two rows name is left out, since only one of them wrote what is there), this measures its drift from the original (``fidelity.drift_of``: 1 - sequence or top-1
agreement) on the model's 128 calibration samples as given, and on four perturbed copies of each
(``finetune.augment.perturbed_copies``: contrast, inversion, noise, blur, rescale; fixed seeds), and sets both
against the accuracy the row lost on ``shift``. A label-free check that predicted that loss would be worth a gate
in ``onnxcompress check``; the rank correlations say whether it does.

    python bench/perturbed_agreement.py ppocr_cls rapid_orient ppocrv5_rec

Rows and correlations go to bench/perturbed_agreement.json; read in bench/ALLOCATION_ORACLE.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.distill_real import CACHE, OUT as ROWS, meta  # noqa: E402
from onnxcompress.fidelity import compare_outputs, drift_of, signal_inputs  # noqa: E402
from onnxcompress.finetune.augment import input_ranges, perturbed_copies  # noqa: E402

OUT = ROOT / "bench" / "perturbed_agreement.json"
COPIES = 4


def outputs(sess: ort.InferenceSession, feeds: dict[str, np.ndarray], batch: int = 16) -> dict[str, np.ndarray]:
    """The model's outputs on ``feeds``, ``batch`` samples a run (one a run for a fixed-batch-1 model)."""
    dim = sess.get_inputs()[0].shape[0]
    batch = dim if isinstance(dim, int) and dim > 0 else batch
    names = [o.name for o in sess.get_outputs()]
    n = len(next(iter(feeds.values())))
    parts = [sess.run(None, {k: v[i:i + batch] for k, v in feeds.items()}) for i in range(0, n, batch)]
    return {nm: np.concatenate([p[j] for p in parts]) for j, nm in enumerate(names)}


def ranks(a: list[float]) -> np.ndarray:
    """Ranks with ties given their mean rank (so a constant column has no spread)."""
    values, inverse = np.unique(np.asarray(a, dtype=float), return_inverse=True)
    order = np.argsort(a, kind="stable")
    r = np.empty(len(a))
    r[order] = np.arange(len(a))
    return np.array([r[inverse == inverse[i]].mean() for i in range(len(a))]) if len(values) < len(a) else r


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's rank correlation, None where either side is constant."""
    ra, rb = ranks(a), ranks(b)
    return None if len(a) < 3 or ra.std() == 0 or rb.std() == 0 else round(float(np.corrcoef(ra, rb)[0, 1]), 3)


def correlation(rows: list[dict]) -> dict:
    lost = [x["shift_lost"] for x in rows]
    return {
        "rows": len(rows),
        "spearman_shift_lost_vs_clean_drift": spearman(lost, [x["clean_drift"] for x in rows]),
        "spearman_shift_lost_vs_perturbed_drift": spearman(lost, [x["perturbed_drift"] for x in rows]),
        "perturbed_drift_range": [min((x["perturbed_drift"] for x in rows), default=None),
                                  max((x["perturbed_drift"] for x in rows), default=None)],
        "shift_lost_range": [min(lost, default=None), max(lost, default=None)],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    args = ap.parse_args()
    res = json.loads(ROWS.read_text())
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    found = json.loads(OUT.read_text()) if OUT.exists() else {"rows": [], "correlation": {}}
    for name in args.models:
        m = meta(name)
        feeds = {m["input_name"]: np.load(CACHE / f"{name}.calib.npz")[m["input_name"]].astype(np.float32)}
        ranges = input_ranges([feeds])
        copies = [c for s in range(COPIES)
                  for c in perturbed_copies([feeds], np.random.default_rng([7, s]), 1.0, ranges, keep_tail=True)]
        perturbed = {k: np.concatenate([c[k] for c in copies]) for k in feeds}
        original = ort.InferenceSession(str(CACHE / f"{name}.onnx"), so, providers=["CPUExecutionProvider"])
        ref_clean, ref_perturbed = outputs(original, feeds), outputs(original, perturbed)
        signals = signal_inputs(feeds)
        o = res["original"][name]
        # a file that two rows name was written by one of them, and which one is not known: left out
        named: dict[str, int] = {}
        for r in res["rows"]:
            if r.get("output"):
                named[r["output"]] = named.get(r["output"], 0) + 1
        rows = []
        for r in res["rows"]:
            path = r.get("output")
            if r["model"] != name or not path or named[path] > 1 or r.get("shift") is None or not (ROOT / path).exists():
                continue
            sess = ort.InferenceSession(str(ROOT / path), so, providers=["CPUExecutionProvider"])
            clean = drift_of(compare_outputs(ref_clean, outputs(sess, feeds), allow_shape_change=True,
                                             inputs="calibration", signals=signals).to_dict())[0]
            pert = drift_of(compare_outputs(ref_perturbed, outputs(sess, perturbed), allow_shape_change=True,
                                            inputs="calibration", signals=signals).to_dict())[0]
            rows.append({"model": name, "target": r["target"], "method": r["method"], "samples": r["samples"],
                         "macs_kept": r.get("macs_kept"), "eval_lost": round(o["eval"] - r["eval"], 4),
                         "shift_lost": round(o["shift"] - r["shift"], 4), "clean_drift": round(clean, 4),
                         "perturbed_drift": round(pert, 4)})
            print(json.dumps(rows[-1]), flush=True)
        found["rows"] = [x for x in found["rows"] if x["model"] != name] + rows
        found["correlation"][name] = correlation(rows)
        print(name, json.dumps(found["correlation"][name]), flush=True)
        OUT.write_text(json.dumps(found, indent=1) + "\n")


if __name__ == "__main__":
    main()
