"""Robustness sweep: prune 22 torchvision architectures exported by torch.onnx, models nobody here wrote.

Run with the torch venv (exports need torch; the compression does not): ``.venv-torch``, or
the Python named by ONNXCOMPRESS_TORCH_PYTHON (bench/venvs.py has the one command that
creates it). Started from any other interpreter it re-executes itself under that one:
    python bench/foreign_sweep.py [--ratio 0.5]
Exports go to bench/.cache/zoo/ (not committed); the table goes to bench/FOREIGN.md.
For each model: remove mode at the ratio must verify (checker, session, run); we record MACs
and params kept, fidelity against the original, the blockers, and how far remove mode is
from zero mode with --exact-borders (max |diff|, which should be float noise).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache" / "zoo"
CLASSIFIERS = [
    "resnet18", "resnext50_32x4d", "wide_resnet50_2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0",
    "efficientnet_v2_s", "densenet121", "googlenet", "inception_v3", "squeezenet1_1", "shufflenet_v2_x1_0",
    "mnasnet1_0", "regnet_y_400mf", "regnet_x_400mf", "convnext_tiny", "alexnet", "maxvit_t", "swin_t",
]
SEGMENTERS = ["fcn_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"]


def export(name: str) -> Path:
    out = CACHE / f"{name}.onnx"
    if out.exists():
        return out
    import torch
    import torchvision

    torch.manual_seed(0)
    if name in SEGMENTERS:
        net = getattr(torchvision.models.segmentation, name)(weights=None, weights_backbone=None, num_classes=5, aux_loss=False)

        class Out(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, x):
                return self.m(x)["out"]

        net = Out(net)
    elif name in ("googlenet", "inception_v3"):
        net = getattr(torchvision.models, name)(weights=None, aux_logits=False, init_weights=True)
    else:
        net = getattr(torchvision.models, name)(weights=None)
    net.eval()
    for mod in net.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):  # non-trivial BN: beta != 0
            torch.nn.init.uniform_(mod.weight, 0.5, 1.5)
            torch.nn.init.normal_(mod.bias, 0, 0.3)
            mod.running_mean.normal_(0, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
    size = 299 if name == "inception_v3" else 224 if name in ("maxvit_t", "swin_t", "alexnet", "vit_b_16") else 128
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(net, torch.randn(1, 3, size, size), out, dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["out"], dynamic_axes={"input": {0: "batch"}})
    return out


def _patch_old_rounding() -> None:
    """Before 6553259 each group's kept count went to the *nearest* multiple of the step, from an
    integer ``n - round(ratio * n)``; now it goes up from the float ``n - ratio * n``."""
    import math

    from onnxcompress.pruning import plan

    def old(keep: float, n: int, step: int, floor_keep: int = 1) -> int:
        keep = n - int(round(n - keep))  # the old caller's integer keep
        if n <= step:
            return n
        k = int(math.floor(keep / step + 0.5)) * step
        k = max(k, step)
        while k < floor_keep:
            k += step
        return min(k, n)

    plan._round_keep = old


def main() -> None:
    import onnxcompress as oc
    from onnxcompress.runtime import Session, random_feeds
    from onnxcompress.fidelity import compare_outputs

    ap = argparse.ArgumentParser()
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--old-rounding", action="store_true",
                    help="emulate the pre-6553259 round_to (nearest multiple, not up) to compare against old tables")
    ap.add_argument("--out", type=Path, default=None,
                    help="markdown to write (default bench/FOREIGN.md; with --old-rounding bench/.cache/FOREIGN.old_rounding.md)")
    args = ap.parse_args()
    if args.old_rounding:
        _patch_old_rounding()
    md = args.out or (ROOT / "bench" / ".cache" / "FOREIGN.old_rounding.md" if args.old_rounding else ROOT / "bench" / "FOREIGN.md")
    rows = []
    for name in CLASSIFIERS + SEGMENTERS:
        try:
            path = export(name)
        except Exception as exc:  # noqa: BLE001
            rows.append(f"| {name} | export failed: {type(exc).__name__} | | | | | | |")
            continue
        t = time.perf_counter()
        try:
            res = oc.compress(path, oc.CompressConfig(ratio=args.ratio))
        except Exception as exc:  # noqa: BLE001 - recorded, never hidden
            rows.append(f"| {name} | **failed**: {str(exc).splitlines()[0][:120]} | | | | | | |")
            continue
        took = time.perf_counter() - t
        rep = res.report
        zero = oc.compress(path, oc.CompressConfig(ratio=args.ratio, mode="zero", simplify=False))
        exact = oc.compress(path, oc.CompressConfig(ratio=args.ratio, exact_borders=True, simplify=False))
        shapes = {k: tuple(v) for k, v in exact.report.config["input_shapes"].items()} or None
        from onnxcompress.analysis.shapes import resolve_input_shapes

        feeds = random_feeds(exact.model, resolve_input_shapes(exact.model, shapes), seed=1)
        dev = compare_outputs(Session(zero.model).run(feeds), Session(exact.model).run(feeds)).max_abs_diff
        ref_scale = max(float(np.abs(v).max()) for v in Session(zero.model).run(feeds).values())
        blockers = sorted({b.op for b in rep.blockers if "graph output" not in b.reason})
        rows.append(
            f"| {name} | ok | {rep.after.macs / rep.before.macs:.1%} | {rep.after.params / rep.before.params:.1%} | "
            f"{rep.groups['pruned']}/{rep.groups['total']} | {rep.fidelity['cosine_min']:.3f} | "
            f"{dev:.1e} (of {ref_scale:.2g}) | {', '.join(blockers) or '-'} | {took:.1f} s |"
        )
        print(rows[-1], flush=True)
    lines = [
        "# Foreign models: 22 torchvision architectures",
        "",
        f"Exported by `torch.onnx.export` (TorchScript exporter, opset 17, dynamic batch, BN folded by the exporter), "
        f"random weights with non-trivial BN. `onnxcompress` at `--ratio {args.ratio}` with defaults otherwise "
        f"(remove mode, round_to 8, folding and onnxsim on). Regenerate: `python bench/foreign_sweep.py`. "
        f"Generated {time.strftime('%Y-%m-%d')} on a {os.cpu_count()}-core CPU."
        + (" **Old rounding emulated (`--old-rounding`): nearest multiple of 8, not up.**" if args.old_rounding else ""),
        "",
        "- *groups pruned*: channel groups pruned / all groups (the rest are blocked; the classifier's outputs always are).",
        "- *min cosine*: the output against the original on the same random inputs (random weights, so this is a "
        "sanity figure, not accuracy).",
        "- *remove vs zero*: max |difference| between remove mode with `--exact-borders` and zero mode, which "
        "should be float rounding only, next to the largest output magnitude.",
        "- *blockers*: ops that kept channels unpruned (graph-output blocks omitted).",
        "",
        "| model | status | MACs kept | params kept | groups pruned | min cosine | remove vs zero | blockers | time |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|",
        *rows,
    ]
    md.parent.mkdir(parents=True, exist_ok=True)
    mark = "## TensorFlow / Keras via tf2onnx"  # written by foreign_tf_sweep.py; kept
    tail = ""
    if md.exists() and mark in md.read_text():
        old = md.read_text()
        tail = "\n" + old[old.index(mark):]
    md.write_text("\n".join(lines) + "\n" + tail)


if __name__ == "__main__":
    from venvs import run_under  # bench/ is on sys.path when run as a script

    run_under("torch")
    main()
