"""Offline accuracy evaluation for the real pretrained ONNX models prepared by
bench/real/prepare.py.

Only needs numpy + onnxruntime, so it runs from the project venv:

    python bench/real/evaluate.py MODEL.onnx NAME      # NAME: ppocr_rec, ppocr_cls, ...

or, from Python:

    from bench.real.evaluate import evaluate
    evaluate("model.onnx", "bench/.cache/real/ppocr_rec.eval.npz",
             "bench/.cache/real/ppocr_rec.json")  # -> {"accuracy": ..., "n": ...}
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort

ort.set_default_logger_severity(3)  # ddddocr models declare a wrong output shape -> warning spam

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.normpath(os.path.join(HERE, "..", ".cache", "real"))


def _session(model_path: str, threads: int | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])


def _fixed_batch(sess: ort.InferenceSession, input_name: str) -> int | None:
    for i in sess.get_inputs():
        if i.name == input_name:
            d0 = i.shape[0] if i.shape else None
            return d0 if isinstance(d0, int) and d0 > 0 else None
    raise KeyError(f"model has no input named {input_name!r}; inputs: "
                   f"{[i.name for i in sess.get_inputs()]}")


def _output_index(sess: ort.InferenceSession, output_name: str) -> int:
    names = [o.name for o in sess.get_outputs()]
    return names.index(output_name) if output_name in names else 0


def ctc_greedy(ids: np.ndarray, blank: int) -> list[list[int]]:
    """ids: (N, T) argmax indices -> list of decoded index sequences."""
    out = []
    for row in ids:
        keep = np.ones(len(row), dtype=bool)
        keep[1:] = row[1:] != row[:-1]
        keep &= row != blank
        out.append(row[keep].tolist())
    return out


def _to_ntc(y: np.ndarray, layout: str, n: int) -> np.ndarray:
    if y.ndim != 3:
        raise ValueError(f"CTC output must be 3-D, got shape {y.shape}")
    if layout == "TNC":
        y = y.transpose(1, 0, 2)
    if y.shape[0] != n:
        raise ValueError(f"output batch dim {y.shape[0]} != fed batch {n} (layout {layout})")
    return y


def predict(model_path: str, x: np.ndarray, meta: dict, batch: int = 32,
            threads: int | None = None) -> list:
    """Returns per-sample predictions: int class for classify, list[int] for ctc."""
    sess = _session(model_path, threads)
    in_name = meta["input_name"]
    oi = _output_index(sess, meta["output_name"])
    fb = _fixed_batch(sess, in_name)
    bs = fb if fb is not None else batch
    ro = ort.RunOptions()
    ro.log_severity_level = 3
    preds: list = []
    for s in range(0, len(x), bs):
        xb = x[s:s + bs]
        n = len(xb)
        if fb is not None and n != fb:  # pad a ragged tail for fixed-batch (>1) models
            xb = np.concatenate([xb, np.repeat(xb[-1:], fb - n, axis=0)])
        y = sess.run(None, {in_name: xb}, ro)[oi]
        if fb is not None and n != fb:
            y = y[:, :n] if meta.get("output_layout", "NTC") == "TNC" else y[:n]
        if meta["task"] == "classify":
            y = y.reshape(n, -1)
            preds.extend(np.argmax(y, axis=1).tolist())
        else:
            y = _to_ntc(y, meta.get("output_layout", "NTC"), n)
            preds.extend(ctc_greedy(np.argmax(y, axis=2), int(meta["blank_index"])))
    return preds


def evaluate(model_path: str, eval_npz_path: str, meta_json_path: str, batch: int = 32,
             threads: int | None = None, limit: int | None = None) -> dict:
    with open(meta_json_path) as f:
        meta = json.load(f)
    data = np.load(eval_npz_path)
    x = data[meta["input_name"]].astype(np.float32, copy=False)
    labels = data["labels"]
    if limit:
        x, labels = x[:limit], labels[:limit]
    right = read_right(predict(model_path, x, meta, batch=batch, threads=threads), labels, meta["task"])
    n = int(len(labels))
    return dict(accuracy=int(right.sum()) / n, n=n)


def read_right(preds: list, labels: np.ndarray, task: str) -> np.ndarray:
    """Per sample, whether ``predict``'s prediction is the label (the class; the whole sequence for ctc,
    labels padded with -1)."""
    if task == "classify":
        return np.asarray(preds, dtype=np.int64) == labels
    return np.array([p == lab[lab >= 0].tolist() for p, lab in zip(preds, labels)], dtype=bool)


def paths_for(name: str, cache: str = CACHE) -> tuple[str, str, str]:
    return (os.path.join(cache, f"{name}.onnx"), os.path.join(cache, f"{name}.eval.npz"),
            os.path.join(cache, f"{name}.json"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="ONNX model to evaluate (original or pruned)")
    ap.add_argument("name", help="dataset/model name, e.g. ppocr_rec, ppocr_cls, ddddocr_common")
    ap.add_argument("--cache", default=CACHE, help="directory with NAME.eval.npz / NAME.json")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples")
    a = ap.parse_args(argv)
    _, npz, js = paths_for(a.name, a.cache)
    t0 = time.perf_counter()
    r = evaluate(a.model, npz, js, batch=a.batch, threads=a.threads, limit=a.limit)
    dt = time.perf_counter() - t0
    print(f"{a.name}: accuracy={r['accuracy']:.4f} n={r['n']} time={dt:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
