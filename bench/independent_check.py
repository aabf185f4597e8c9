"""Cross-check `onnxcompress bench` against a plain, hand-written onnxruntime loop.

Times the same two models with nothing but onnxruntime, numpy and time.perf_counter
(A then B in each iteration, both sessions alive, medians), then runs
`onnxcompress bench A B` as a subprocess and compares the speedups. Rounds
alternate (plain, bench, plain, bench, ...) so drift hits both methods.

    python bench/independent_check.py A.onnx B.onnx [--batch 1] [--iters 40] [--rounds 2] [--json bench/independent_check.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def plain_loop(a: str, b: str, batch: int, iters: int, warmup: int, threads: int = 0) -> dict:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sa = ort.InferenceSession(a, opts, providers=["CPUExecutionProvider"])
    sb = ort.InferenceSession(b, opts, providers=["CPUExecutionProvider"])
    inp = sa.get_inputs()[0]
    shape = [batch] + [d if isinstance(d, int) else 1 for d in inp.shape[1:]]
    x = np.random.default_rng(123).random(shape, dtype=np.float32)
    ta, tb = [], []
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        sa.run(None, {inp.name: x})
        t1 = time.perf_counter()
        sb.run(None, {inp.name: x})
        t2 = time.perf_counter()
        if i >= warmup:
            ta.append(t1 - t0)
            tb.append(t2 - t1)
    ma, mb = statistics.median(ta), statistics.median(tb)
    return {"a_median_ms": ma * 1e3, "b_median_ms": mb * 1e3, "speedup": ma / mb}


def via_cli(a: str, b: str, batch: int, iters: int, warmup: int, threads: int = 0) -> dict:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "r.json"
        cmd = [sys.executable, "-m", "onnxcompress", "bench", a, b, "--batch", str(batch), "--iters", str(iters),
               "--warmup", str(warmup), "--json", str(out), "-q"]
        if threads:
            cmd += ["--threads", str(threads)]
        subprocess.run(cmd, check=True)
        run = json.loads(out.read_text())["runs"][0]
    return {"a_median_ms": run["a"]["p50_ms"], "b_median_ms": run["b"]["p50_ms"], "speedup": run["paired"]["speedup"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads for both (0 = onnxruntime default)")
    ap.add_argument("--json", help="write the comparison here")
    args = ap.parse_args()
    plain, cli = [], []
    for r in range(args.rounds):
        plain.append(plain_loop(args.a, args.b, args.batch, args.iters, args.warmup, args.threads))
        cli.append(via_cli(args.a, args.b, args.batch, args.iters, args.warmup, args.threads))
        print(f"round {r + 1}: plain loop {plain[-1]['speedup']:.3f}x, onnxcompress bench {cli[-1]['speedup']:.3f}x",
              flush=True)
    sp = statistics.median(p["speedup"] for p in plain)
    sc = statistics.median(c["speedup"] for c in cli)
    rel = sc / sp - 1
    result = {
        "a": args.a, "b": args.b, "batch": args.batch, "threads": args.threads, "iters": args.iters, "warmup": args.warmup,
        "plain_rounds": plain, "bench_rounds": cli,
        "plain_speedup": sp, "bench_speedup": sc, "relative_difference": rel,
        "within_15_percent": abs(rel) <= 0.15,
        "onnxruntime": ort.__version__,
    }
    print(f"plain {sp:.3f}x vs onnxcompress bench {sc:.3f}x: {rel:+.1%} "
          f"({'within' if abs(rel) <= 0.15 else 'OUTSIDE'} +-15%)")
    if args.json:
        # The file holds a list of checks; a rerun of the same pair and batch replaces its entry.
        path = Path(args.json)
        old = json.loads(path.read_text()) if path.exists() else []
        old = [old] if isinstance(old, dict) else old
        key = lambda d: (Path(d["a"]).name, Path(d["b"]).name, d["batch"], d.get("threads", 0))  # noqa: E731
        path.write_text(json.dumps([d for d in old if key(d) != key(result)] + [result], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
