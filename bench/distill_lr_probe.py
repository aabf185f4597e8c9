"""Why distillation loses to the refit on the recognizers: too large a step, or memorising?

Loads a pruned model bench/distill_real.py wrote and its original, and distills it outside
the CLI (output loss only, relative step sizes, Adam after a 10-step warm-up, 16 samples a
step) at each ``--lr``, printing every ``--every`` steps:

- the training loss on a fixed probe batch of 16 **fit** samples (what the steps optimise),
- the held-out loss on the held-out split (what model choice sees),

so a rate that is too large shows both rising, and memorising shows the first falling while
the second rises. The split is ``CalibrationSet.split``'s (seed 0, a quarter held out).

    python bench/distill_lr_probe.py --model ddddocr_common \\
        --pruned bench/.cache/real/out/ddddocr_common.0.8.refit.128.onnx --lr 1e-4 3e-5 1e-5

Results go to stdout (bench/DISTILL_STEPS.md quotes them).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# the same model loading and loss as the step-size probe
from bench.distill_steps_probe import (CACHE, DistillConfig, GraphModule, _loss_kinds, _output_loss,  # noqa: E402
                                       relative_step_sizes)
from onnxcompress.finetune.targets import differentiable_targets  # noqa: E402
from onnxcompress.runtime import Session  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pruned", required=True, type=Path, help="a pruned model bench/distill_real.py wrote")
    ap.add_argument("--model", required=True, help="its original's name under bench/.cache/real")
    ap.add_argument("--lr", nargs="+", type=float, default=[1e-4, 3e-5, 1e-5])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--ema", type=float, default=0.0, help="also score an exponential moving average of the weights "
                    "(decay per step; 0: off)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    z = np.load(CACHE / f"{args.model}.calib.npz")
    name = list(z.keys())[0]
    x_all = z[name]
    order = np.random.default_rng(0).permutation(len(x_all))
    held, fit = np.sort(order[: len(x_all) // 4]), np.sort(order[len(x_all) // 4:])
    probe = fit[:16]
    proto = onnx.load(args.pruned)
    outs, _ = differentiable_targets(ir.from_proto(proto))
    teacher = Session(str(CACHE / f"{args.model}.onnx"), expose=outs, optimize=False)
    # a graph with a fixed batch of 1 (ddddocr) runs one sample at a time, its loss averaged
    single = proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    chunks = lambda rows: [rows[i:i + 1] for i in range(len(rows))] if single else [rows]  # noqa: E731
    targets = lambda rows: [teacher.run({name: x_all[r]}, outs) for r in chunks(rows)]  # noqa: E731
    t_held, t_probe = targets(held), targets(probe)
    kinds = _loss_kinds(t_held[0], DistillConfig())

    def loss(module, rows, ts):
        total = 0.0
        for r, t in zip(chunks(rows), ts):
            s = module({name: torch.from_numpy(x_all[r])}, outputs=outs)
            total = total + sum(_output_loss(*kinds[o], s[o], torch.from_numpy(t[o])) for o in outs
                                if kinds[o][0] != "skip")
        return total / len(ts)

    def score(module):
        with torch.no_grad():
            return float(loss(module, probe, t_probe)), float(loss(module, held, t_held))

    print(f"{args.model}: {len(fit)} fit, {len(held)} held out, batch {args.batch}, outputs {outs}")
    for lr in args.lr:
        torch.manual_seed(0)
        module = GraphModule(proto)
        names = module.parameter_names()
        factors = relative_step_sizes(module.state_arrays(), module.bias_weights(), module.affine_names())
        opt = torch.optim.Adam([{"params": [module.parameter_for(n)], "factor": factors[n]} for n in names], lr=lr)
        draw = np.random.default_rng(0)
        order_ = draw.permutation(fit)
        cursor, t0 = 0, time.perf_counter()
        line = ["step 0: fit %.4f held %.4f" % score(module)]
        params = [module.parameter_for(n) for n in names]
        shadow = [p.detach().clone() for p in params] if args.ema else None
        for step in range(args.steps):
            if cursor + args.batch > len(order_):
                order_, cursor = draw.permutation(fit), 0
            rows = np.sort(order_[cursor:cursor + args.batch])
            cursor += args.batch
            for g in opt.param_groups:
                g["lr"] = lr * g["factor"] * min(1.0, (step + 1) / 10)
            opt.zero_grad()
            loss(module, rows, targets(rows)).backward()
            opt.step()
            if shadow is not None:
                with torch.no_grad():
                    for p, q in zip(params, shadow):
                        q.mul_(args.ema).add_(p.detach(), alpha=1 - args.ema)
            if (step + 1) % args.every == 0:
                line.append(f"{step + 1}: fit %.4f held %.4f" % score(module))
                if shadow is not None:  # the averaged weights, scored in place of the current ones
                    live = [p.detach().clone() for p in params]
                    with torch.no_grad():
                        for p, q in zip(params, shadow):
                            p.copy_(q)
                    line[-1] += " (EMA fit %.4f held %.4f)" % score(module)
                    with torch.no_grad():
                        for p, q in zip(params, live):
                            p.copy_(q)
        print(f"lr {lr:g} ({time.perf_counter() - t0:.0f} s): " + "; ".join(line), flush=True)


if __name__ == "__main__":
    main()
