"""Why --round-to defaults to 8: onnxruntime CPU speed of the same pruning at several roundings.

Run: python bench/round_to_sweep.py MODEL.onnx [--ratio 0.5]  (writes bench/ROUND_TO.md)
Each variant is timed paired and interleaved against the original with ``onnxcompress.bench``;
the speedup is a ratio of medians, with the p10-p90 of the per-pair ratios.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import onnxcompress as oc
from onnxcompress.bench.runner import BenchConfig, machine_info, run_benchmark

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--round-to", default="1,4,8,16,32")
    ap.add_argument("--batches", default="1,8")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for r in [int(x) for x in args.round_to.split(",")]:
            res = oc.compress(args.model, oc.CompressConfig(ratio=args.ratio, round_to=r))
            out = res.save(Path(d) / f"r{r}.onnx")
            widths = [ly.after for ly in res.report.layers if ly.after < ly.before]
            off8 = sum(1 for w in widths if w % 8) / max(1, len(widths))
            cells = []
            for b in batches:
                bench = run_benchmark(args.model, out, BenchConfig(batches=[b], iters=30, warmup=5, min_seconds=6, fidelity=False))
                p = bench.runs[0].paired
                cells.append(f"{p.speedup:.2f}x ({p.ratio_lo:.2f}-{p.ratio_hi:.2f})")
            kept = res.report.after.macs / res.report.before.macs
            rows.append(f"| {r} | {kept:.1%} | {1 / kept:.2f}x | {off8:.0%} | " + " | ".join(cells) + " |")
            print(rows[-1], flush=True)
    m = machine_info()
    lines = [
        "# round_to: channel counts and onnxruntime CPU speed",
        "",
        f"Model: `{Path(args.model).name}`, `--ratio {args.ratio}`, remove mode. Each variant is timed paired and "
        f"interleaved against the original (`onnxcompress.bench`, ratio of medians, p10-p90 of per-pair ratios). "
        f"CPU: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, onnxruntime {m.get('onnxruntime', '?')}. "
        f"Generated {time.strftime('%Y-%m-%d')} by `python bench/round_to_sweep.py`.",
        "",
        "| round_to | MACs kept | MACs reduction | pruned widths not a multiple of 8 | "
        + " | ".join(f"CPU speedup b{b}" for b in batches) + " |",
        "|---:|---:|---:|---:|" + "---:|" * len(batches),
        *rows,
    ]
    (ROOT / "bench" / "ROUND_TO.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
