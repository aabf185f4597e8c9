"""Absolute against relative step sizes on one pruned real model, outside the CLI.

Loads a pruned model bench/distill_real.py wrote and its original, and

1. takes one signed step of 1e-4 on each trainable tensor alone (what Adam's first full-rate
   step does to it) and lists the tensors whose step raises the training loss most, with
   their RMS: a tensor stored far smaller than the others is knocked off by one step;
2. distills for ``--steps`` steps (Adam, lr 1e-4 after a 10-step warm-up, 3 samples a step, the
   output loss only) with every tensor at the same rate and with relative step sizes
   (``finetune.step_sizes``), and prints the held-out loss every 10 steps.

    python bench/distill_steps_probe.py --model ppocr_det --pruned bench/.cache/real/out/ppocr_det.0.8.refit+r2.128.onnx

The held-out samples are ``CalibrationSet.split``'s (seed 0, a quarter), of which the first 12 are
scored; training draws from the rest. Results go to stdout (bench/DISTILL_STEPS.md quotes them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CACHE = ROOT / "bench" / ".cache" / "real"

from onnxcompress.finetune.distill import DistillConfig
from onnxcompress.finetune.losses import loss_kinds as _loss_kinds, output_loss as _output_loss  # noqa: E402
from onnxcompress.finetune.graph_module import GraphModule  # noqa: E402
from onnxcompress.finetune.step_sizes import relative_step_sizes  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="name under bench/.cache/real (the original and its calib set)")
    ap.add_argument("--pruned", required=True, type=Path)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(2)
    x_all = np.load(CACHE / f"{args.model}.calib.npz")
    name = list(x_all.keys())[0]
    x_all = x_all[name]
    order = np.random.default_rng(0).permutation(len(x_all))
    held, fit = np.sort(order[: len(x_all) // 4][:12]), np.sort(order[len(x_all) // 4:])
    teacher = ort.InferenceSession(str(CACHE / f"{args.model}.onnx"), providers=["CPUExecutionProvider"])
    out = teacher.get_outputs()[0].name
    target = {i: teacher.run(None, {name: x_all[i:i + 1]})[0] for i in held}
    kind, axis = _loss_kinds({out: target[held[0]]}, DistillConfig())[out]
    proto = onnx.load(args.pruned)

    def loss(module, x, t):
        return _output_loss(kind, axis, module({name: torch.from_numpy(x)}, outputs=[out])[out], torch.from_numpy(t))

    def held_loss(module):
        with torch.no_grad():
            return float(np.mean([float(loss(module, x_all[i:i + 1], target[i])) for i in held]))

    module = GraphModule(proto)
    x = x_all[fit[:3]]
    t = teacher.run(None, {name: x})[0]
    base = loss(module, x, t)
    base.backward()
    rows = []
    with torch.no_grad():
        for pname in module.parameter_names():
            p = module.parameter_for(pname)
            if p.grad is None:
                continue
            old = p.detach().clone()
            p.sub_(1e-4 * torch.sign(p.grad))
            rows.append((float(loss(module, x, t)) - float(base), pname, float(old.square().mean().sqrt())))
            p.copy_(old)
    rows.sort(reverse=True)
    print(f"training loss {float(base):.5f}; one 1e-4 signed step on one tensor raises it most for:")
    for rise, pname, rms in rows[:5]:
        print(f"  {pname:32s} +{rise:.4f}  (RMS {rms:.2e})")

    for mode in ("absolute", "relative"):
        torch.manual_seed(0)
        module = GraphModule(proto)
        names = module.parameter_names()
        factors = {n: 1.0 for n in names} if mode != "relative" else \
            relative_step_sizes(module.state_arrays(), module.bias_weights(), module.affine_names())
        opt = torch.optim.Adam([{"params": [module.parameter_for(n)], "factor": factors[n]} for n in names], lr=1e-4)
        line = [f"{held_loss(module):.5f}"]
        draw = np.random.default_rng(0).permutation(fit)
        for step in range(args.steps):
            rows_ = draw[(step * 3) % len(draw):][:3]
            xb = x_all[rows_]
            tb = teacher.run(None, {name: xb})[0]
            for g in opt.param_groups:
                g["lr"] = 1e-4 * g["factor"] * min(1.0, (step + 1) / 10)
            opt.zero_grad()
            loss(module, xb, tb).backward()
            opt.step()
            if (step + 1) % 10 == 0:
                line.append(f"{held_loss(module):.5f}")
        print(f"{mode:8s} held-out loss at steps 0, 10, 20, ...: {' '.join(line)}")


if __name__ == "__main__":
    main()
