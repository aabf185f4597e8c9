"""Which held-out figure would have picked the better of one allocation and two rounds?

``--allocation-rounds auto`` keeps the candidate with the lower held-out drift on the task-aware
metric (sequence or top-1 agreement on the 32 held-out samples of a 128-sample set). On ddddocr
at 0.8 it picked the model that is worse on eval and shift (bench/ALLOCATION_ROUNDS.md). This
script scores both written models of each measured pair against the original on the same
held-out samples (``CalibrationSet.split``'s order, seed 0, a quarter held out), clean and
perturbed (Gaussian noise, a 3x3 box blur, contrast 0.6, inverted polarity), and on all 128
calibration samples, with three figures per model: mean KL of the original's class
distribution to the pruned model's (per position for CTC), per-position top-1 agreement, and
whole-sequence agreement. No labels are read: the labelled eval and shift figures to compare
with are the rows of bench/distill_real.json.

    python bench/rounds_choice_metrics.py [MODEL ...]   # writes bench/rounds_choice_metrics.json

It needs the models bench/distill_real.py wrote (``--methods refit`` with ``--rounds 1`` and
``--rounds 2``) in bench/.cache/real/out/.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache" / "real"
PAIRS = [("ppocrv6_rec", 0.8), ("ppocr_cls", 0.8), ("ppocr_cls", 0.6), ("rapid_orient", 0.8), ("rapid_orient", 0.6),
         ("ddddocr_common", 0.8), ("ppocr_rec", 0.6), ("ppocr_rec", 0.8)]


def session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3  # ddddocr declares a (1, seqlen) output and returns (T, 1, C)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def class_probs(out: np.ndarray, meta: dict) -> np.ndarray:
    """(N, ..., classes) probabilities of one output batch."""
    p = np.asarray(out, np.float64)
    if meta.get("output_layout") == "TNC":
        p = p.transpose(1, 0, 2)
    if meta.get("task") == "ctc" and not meta.get("output_softmaxed", True):
        p = np.exp(p - p.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
    return p


def blur(x: np.ndarray) -> np.ndarray:
    for axis in (-1, -2):
        x = (np.roll(x, 1, axis) + x + np.roll(x, -1, axis)) / 3
    return x


def perturbations(x: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    inverted = -x if x.min() < 0 else x.max() - x
    return {"clean": x, "noise": x + rng.normal(0, 0.15, x.shape), "blur": blur(x), "contrast": x * 0.6,
            "invert": inverted}


def outputs(sess: ort.InferenceSession, x: np.ndarray, name: str, meta: dict) -> np.ndarray:
    step = 1 if meta.get("fixed_batch") else 16
    return np.concatenate([class_probs(sess.run(None, {name: x[i:i + step].astype(np.float32)})[0], meta)
                           for i in range(0, len(x), step)], 0)


def figures(teacher: np.ndarray, student: np.ndarray) -> dict[str, float]:
    kl = np.sum(teacher * (np.log(teacher + 1e-9) - np.log(student + 1e-9)), -1)
    same = teacher.argmax(-1) == student.argmax(-1)
    return {"kl": float(kl.mean()), "token_agreement": float(same.mean()),
            "sequence_agreement": float(same.reshape(len(same), -1).all(1).mean())}


def score_pair(name: str, target: float) -> dict:
    meta = json.loads((CACHE / f"{name}.json").read_text())
    calib = np.load(CACHE / f"{name}.calib.npz")
    x = calib[meta["input_name"]] if meta["input_name"] in calib else calib[list(calib.keys())[0]]
    order = np.random.default_rng(0).permutation(len(x))  # CalibrationSet.split's held-out samples
    held = np.sort(order[: int(round(0.25 * len(x)))])
    models = {"original": CACHE / f"{name}.onnx", "rounds1": CACHE / "out" / f"{name}.{target:g}.refit.128.onnx",
              "rounds2": CACHE / "out" / f"{name}.{target:g}.refit+r2.128.onnx"}
    sessions = {k: session(p) for k, p in models.items()}
    rng = np.random.default_rng(1)
    row: dict[str, dict] = {}
    inputs = {f"held/{k}": v for k, v in perturbations(x[held], rng).items()}
    inputs["all/clean"] = x
    for key, feed in inputs.items():
        probs = {k: outputs(s, feed, meta["input_name"], meta) for k, s in sessions.items()}
        row[key] = {k: figures(probs["original"], probs[k]) for k in ("rounds1", "rounds2")}
    return row


def main() -> None:
    wanted = set(sys.argv[1:])
    result = {f"{n}@{t:g}": score_pair(n, t) for n, t in PAIRS if not wanted or n in wanted}
    for pair, row in result.items():
        print(pair)
        for key, fig in row.items():
            a, b = fig["rounds1"], fig["rounds2"]
            print(f"  {key:14s} KL {a['kl']:.5f} / {b['kl']:.5f}  token {a['token_agreement']:.4f} / "
                  f"{b['token_agreement']:.4f}  sequence {a['sequence_agreement']:.4f} / {b['sequence_agreement']:.4f}")
    (ROOT / "bench" / "rounds_choice_metrics.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
