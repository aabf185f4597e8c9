"""Torch-Pruning on the same transformers, for bench/TRANSFORMERS.md: MACs kept at one ratio.

    python bench/transformers_tp.py [--ratio 0.5] [--models vit_b_16 swin_t]

Needs torch, torchvision and torch-pruning (``pip install torch-pruning``) in the interpreter
that runs it (bench/venvs.py, the "torch" venv). Each torchvision model is built with the
seed and weights ``foreign_sweep.export`` uses, pruned by Torch-Pruning's MetaPruner
(L2 magnitude, local, the classifier ignored), configured as Torch-Pruning's own torchvision
example does: ``channel_groups`` for ViT's ``nn.MultiheadAttention`` (head dims pruned alike in
every head; that example has no head removal for it), and ``num_heads`` on Swin's qkv with
whole-head removal (the example skips Swin as unsupported; it is tried anyway). LayerNorm
channels follow through its dependency graph. The pruned module is exported by torch at opset 17,
and its MACs are counted by ``onnxcompress inspect``, the same count as our rows. Rows
go to ``bench/transformers.json`` under ``torch_pruning``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "transformers.json"
sys.path.insert(0, str(ROOT / "bench"))


def _macs(path: Path, size: int) -> int:
    p = subprocess.run([sys.executable, "-m", "onnxcompress", "inspect", str(path), "--input-shape",
                        f"input:1,3,{size},{size}", "--json", "-"], capture_output=True, text=True, check=True)
    return int(json.loads(p.stdout)["macs"])


def prune(name: str, ratio: float) -> dict:
    import torch
    import torch_pruning as tp
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    size = 224
    x = torch.randn(1, 3, size, size)
    heads, groups, ignored = {}, {}, []
    for m in model.modules():
        if isinstance(m, torch.nn.MultiheadAttention):  # TP's torchvision example: head dims, per head alike
            groups[m] = m.num_heads
    if name == "vit_b_16":
        ignored = [model.heads]
    elif name == "swin_t":
        ignored = [model.head]
        for m in model.modules():
            if m.__class__.__name__.startswith("ShiftedWindowAttention"):
                heads[m.qkv] = m.num_heads
    t = time.perf_counter()
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=ratio,
                                  ignored_layers=ignored, num_heads=heads, prune_num_heads=bool(heads),
                                  prune_head_dims=not heads, head_pruning_ratio=ratio if heads else 0.0,
                                  channel_groups=groups)
    pruner.step()
    for m in groups:  # TP leaves the modules' own bookkeeping to the user
        m.head_dim = m.embed_dim // m.num_heads
    for m, n in pruner.num_heads.items():
        for parent in model.modules():
            if getattr(parent, "qkv", None) is m:
                parent.num_heads = n
    if name == "vit_b_16":
        model.hidden_dim = model.conv_proj.out_channels
    seconds = time.perf_counter() - t
    row = {"model": name, "ratio": ratio, "tool": "torch-pruning", "tp_version": tp.__version__, "wall_s": round(seconds, 1)}
    with torch.no_grad():
        y = model(torch.randn(2, 3, size, size))
    row["valid"] = bool(torch.isfinite(y).all())
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / f"{name}.onnx"
        torch.onnx.export(model, x, out, dynamo=False, opset_version=17, input_names=["input"], output_names=["out"])
        from foreign_sweep import export

        row["macs_kept"] = round(_macs(out, size) / _macs(export(name), size), 4)
    row["heads"] = ([int(sum(pruner.num_heads.values())), int(sum(heads.values()))] if heads
                    else [int(sum(m.num_heads for m in groups)), int(sum(groups.values()))])
    row["head_dims"] = sorted({int(m.head_dim) for m in groups}) if groups else None
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--models", nargs="*", default=["vit_b_16", "swin_t"])
    args = ap.parse_args()
    res = json.loads(OUT.read_text()) if OUT.exists() else {"rows": []}
    for name in args.models:
        try:
            row = prune(name, args.ratio)
        except Exception as exc:  # noqa: BLE001 - a tool that fails on a model is a result
            row = {"model": name, "ratio": args.ratio, "tool": "torch-pruning", "error": f"{type(exc).__name__}: {exc}"[:300]}
        tp_rows = [r for r in res.get("torch_pruning", []) if (r["model"], r["ratio"]) != (name, args.ratio)]
        res["torch_pruning"] = tp_rows + [row]
        OUT.write_text(json.dumps(res, indent=1))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    from venvs import run_under

    run_under("torch")
    main()
