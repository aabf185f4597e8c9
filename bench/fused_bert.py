"""Heads in fused attention: onnxcompress against onnxsim's head pruning on an HF BERT-base fused by onnxruntime.

Issue 16's evidence asks for a BERT-base-like encoder exported by torch and fused by
onnxruntime's transformer optimizer, pruned at ratio 0.5 by onnxcompress and by onnxsim's head
pruning (``onnxsim.pruning.apply_attention_head_pruning``) in the same run. The encoder is
Hugging Face ``transformers.BertModel`` with BERT-base's configuration and random weights (seed 0;
nothing is downloaded), exported by ``torch.onnx.export`` (the TorchScript exporter, opset 14,
128 tokens) and fused by ``onnxruntime.transformers.optimizer.optimize_model(model_type="bert")``.

    python bench/fused_bert.py            # needs torch and transformers (bench/requirements-torch.txt)
    python bench/fused_bert.py --report   # bench/FUSED_BERT.md from bench/fused_bert.json

Each written model must load in onnxruntime and give finite outputs on the same feeds. MACs are
counted by ``onnxcompress inspect`` (its fused-attention cost model counts the q, k and v
projections and both attention products). CPU latency: ``onnxcompress bench``, batch 1, paired
against the fused original in one run. Random weights: structure and speed, not accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache" / "fused_bert"
OUT = ROOT / "bench" / "fused_bert.json"
REPORT = ROOT / "bench" / "FUSED_BERT.md"
TOKENS = 128
SHAPES = [f"{n}:1,{TOKENS}" for n in ("input_ids", "attention_mask", "token_type_ids")]


def export() -> Path:
    """BERT-base (random weights) exported by torch, then fused by onnxruntime's optimizer."""
    fused = CACHE / "bert_base_fused.onnx"
    if fused.exists():
        return fused
    import torch
    from transformers import BertConfig, BertModel

    CACHE.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = BertModel(BertConfig()).eval()
    ids = torch.randint(0, 30522, (1, TOKENS))
    raw = CACHE / "bert_base.onnx"
    with torch.no_grad():
        torch.onnx.export(model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(raw), opset_version=14,
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["last_hidden_state", "pooler_output"],
                          dynamic_axes={n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask", "token_type_ids")},
                          dynamo=False)
    from onnxruntime.transformers.optimizer import optimize_model

    opt = optimize_model(str(raw), model_type="bert", num_heads=12, hidden_size=768, opt_level=0)
    opt.save_model_to_file(str(fused), use_external_data_format=False)
    return fused


def feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"input_ids": rng.integers(0, 30522, (1, TOKENS), dtype=np.int64),
            "attention_mask": np.ones((1, TOKENS), np.int64), "token_type_ids": np.zeros((1, TOKENS), np.int64)}


def ops(path: Path) -> dict[str, int]:
    import onnx

    counts: dict[str, int] = {}
    for n in onnx.load(str(path), load_external_data=False).graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def macs(path: Path) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        js = Path(tmp) / "i.json"
        subprocess.run([sys.executable, "-m", "onnxcompress", "inspect", str(path), *sum((["--input-shape", s] for s in SHAPES), []),
                        "--json", str(js), "-q"], check=True, capture_output=True)
        rep = json.loads(js.read_text())
    return float(rep["totals"]["macs"]) if "totals" in rep else float(rep["macs"])


def valid(path: Path) -> bool:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    outs = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, feeds())
    return all(np.isfinite(o).all() for o in outs)


def speedup(orig: Path, path: Path) -> float | None:
    with tempfile.TemporaryDirectory() as tmp:
        js = Path(tmp) / "b.json"
        proc = subprocess.run([sys.executable, "-m", "onnxcompress", "bench", str(orig), str(path), *sum((["--input-shape", s] for s in SHAPES), []),
                               "--min-seconds", "10", "--json", str(js), "-q"], capture_output=True, text=True)
        if proc.returncode:
            return None
        return float(json.loads(js.read_text())["runs"][0]["paired"]["speedup"])


def heads_of(path: Path) -> list[int]:
    import onnx

    return [a.i for n in onnx.load(str(path), load_external_data=False).graph.node
            if n.op_type in ("Attention", "MultiHeadAttention") for a in n.attribute if a.name == "num_heads"]


def row(method: str, orig: Path, path: Path, base: float, seconds: float, error: str | None = None) -> dict:
    if error:
        return {"method": method, "error": error[-400:]}
    heads = heads_of(path)
    return {"method": method, "macs_kept": round(macs(path) / base, 4), "valid": valid(path),
            "heads": f"{sum(heads)} / {12 * len(heads)}", "speedup_b1": speedup(orig, path), "wall_s": round(seconds, 1)}


def run() -> dict:
    fused = export()
    counts = ops(fused)
    base = macs(fused)
    res = {"fused_ops": {k: v for k, v in counts.items() if k in ("Attention", "MultiHeadAttention", "SkipLayerNormalization",
                                                                    "BiasGelu", "FastGelu", "EmbedLayerNormalization",
                                                                    "LayerNormalization", "Gelu")},
           "macs": base, "rows": []}
    print(json.dumps(res["fused_ops"]), flush=True)
    calib = CACHE / "calib.npz"
    rng = np.random.default_rng(1)
    np.savez(calib, input_ids=rng.integers(0, 30522, (32, TOKENS), dtype=np.int64),
             attention_mask=np.ones((32, TOKENS), np.int64), token_type_ids=np.zeros((32, TOKENS), np.int64))
    runs = [("heads", []), ("dims", []), ("heads", ["--calib", str(calib), "--recover", "none"]),
            ("heads", ["--calib", str(calib), "--recover", "none", "--prune-outputs"])]
    for attention, extra in runs:
        tag = f"{attention}{'_calib' if extra else ''}{'_outputs' if '--prune-outputs' in extra else ''}"
        out = CACHE / f"onnxcompress_{tag}.onnx"
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "onnxcompress", str(fused), "--ratio", "0.5", "--attention", attention,
                               *sum((["--input-shape", s] for s in SHAPES), []), *extra, "-o", str(out), "-q"],
                              capture_output=True, text=True)
        method = f"onnxcompress --attention {attention}" + (" --calib (32 random token sequences), --recover none" if extra else "")
        method += " --prune-outputs" if "--prune-outputs" in extra else ""
        r = row(method, fused, out, base, time.perf_counter() - t, proc.stderr if proc.returncode else None)
        res["rows"].append(r)
        print(json.dumps(r), flush=True)
    import onnx
    from onnxsim.pruning import apply_attention_head_pruning

    out = CACHE / "onnxsim_heads.onnx"
    t = time.perf_counter()
    try:
        onnx.save(apply_attention_head_pruning(str(fused), sparsity=0.5), str(out))
        r = row("onnxsim apply_attention_head_pruning", fused, out, base, time.perf_counter() - t)
    except Exception as exc:  # noqa: BLE001 - a peer's failure is a result
        r = row("onnxsim apply_attention_head_pruning", fused, out, base, time.perf_counter() - t, f"{type(exc).__name__}: {exc}")
    res["rows"].append(r)
    print(json.dumps(r), flush=True)
    return res


def report(res: dict) -> str:
    lines = ["# Fused attention: BERT-base fused by onnxruntime, onnxcompress against onnxsim's head pruning", "",
             "Generated by `bench/fused_bert.py` (raw: `bench/fused_bert.json`). Hugging Face `BertModel`, BERT-base's "
             "configuration, random weights (seed 0), exported by torch (opset 14, 128 tokens) and fused by "
             "`onnxruntime.transformers.optimizer.optimize_model(model_type='bert')`. Fused ops in the model: "
             + ", ".join(f"{k} x{v}" for k, v in res["fused_ops"].items()) + ". Ratio 0.5; without calibration unless the row says so (random token ids: structure, not accuracy). MACs by "
             "`onnxcompress inspect`; CPU speedup by `onnxcompress bench`, batch 1, paired against the fused original on "
             "the 2-core machine. Random weights: structure and speed, not accuracy.", "",
             "| method | MACs kept | valid | heads (kept / total) | CPU speedup b1 | wall s |", "|---|---:|---|---:|---:|---:|"]
    for r in res["rows"]:
        if "error" in r:
            lines.append(f"| {r['method']} | error: {r['error']} | | | | |")
            continue
        sp = f"{r['speedup_b1']:.2f}x" if r.get("speedup_b1") else "-"
        lines.append(f"| {r['method']} | {r['macs_kept']:.1%} | {r['valid']} | {r['heads']} | {sp} | {r['wall_s']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    res = json.loads(OUT.read_text()) if args.report else run()
    OUT.write_text(json.dumps(res, indent=1) + "\n")
    text = report(res)
    if REPORT.exists():  # keep the hand-written commentary after the generated part
        old = REPORT.read_text()
        if "\n## " in old:
            text += "\n## " + old.split("\n## ", 1)[1]
    REPORT.write_text(text)
    print(text)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "bench"))
    from venvs import run_under

    run_under("torch")
    main()
