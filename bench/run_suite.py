"""Benchmark suite: onnxcompress vs Torch-Pruning vs onnxsim's structured pruner.

For each model (random-weight torchvision classifiers and a YOLOv8n-like detector)
and pruning ratio, every tool prunes the same architecture; each result is checked
(ONNX checker, session, run), measured (MACs and params kept, fidelity against the
unpruned export on the same inputs) and timed against the unpruned export with
`onnxcompress.bench` (paired, interleaved, ratio of medians). Results merge into
bench/results.json (keyed by model, ratio, tool), so the suite runs in pieces;
bench/RESULTS.md and bench/plots/ are regenerated from the merged results. --quick runs
keep to their own files (results.quick.json, RESULTS.quick.md, plots/quick/, not
committed), so a smoke test never mixes into the committed full-size results.

It runs under the torch venv (``.venv-torch``, or the Python named by ONNXCOMPRESS_TORCH_PYTHON;
bench/venvs.py has the one command that creates it); started from any other interpreter it
re-executes itself under that one (``--report-only`` needs no torch and runs where it is).

    python bench/run_suite.py [--models resnet50,...] [--ratios 0.25,0.5,0.75]
        [--tools onnxcompress,torch-pruning,onnxsim] [--providers cpu|cuda] [--quick] [--report-only]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
RESULTS = HERE / "results.json"  # results.quick.json under --quick
TOOLS = ["onnxcompress", "torch-pruning", "onnxsim"]
BATCHES = {"cpu": [1, 8], "cuda": [1, 32, 128]}

# Each tool's child process reports its own wall time and peak RSS (ru_maxrss), so the
# numbers cover the tool alone, not the suite's torch-laden process.
_CHILD = r"""
import json, resource, sys, time
kind, src, dst, ratio = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
out = {}
try:
    t0 = time.perf_counter()
    if kind == "onnxcompress":
        import onnxcompress
        res = onnxcompress.compress(src, onnxcompress.CompressConfig(ratio=ratio, round_to=8))
        res.save(dst)
        out["report_fidelity"] = res.report.fidelity
    elif kind == "onnxsim":
        import onnx
        from onnxsim.pruning import apply_structured_pruning
        onnx.save(apply_structured_pruning(src, sparsity=ratio), dst)
    elif kind == "load_save":
        import onnx_ir as ir
        ir.save(ir.load(src), dst)
    out["wall_s"] = time.perf_counter() - t0
except Exception as exc:
    msg = (str(exc).splitlines() or [""])[0]
    out["error"] = f"{type(exc).__name__}: {msg}"[:300]
# VmHWM belongs to this exec'd image; ru_maxrss would include the forked parent's pages.
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        out["peak_rss_mb"] = int(line.split()[1]) / 1024
out.setdefault("peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print("@@" + json.dumps(out))
"""


def run_child(kind: str, src: Path, dst: Path, ratio: float, timeout: float = 900) -> dict:
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-c", _CHILD, kind, str(src), str(dst), str(ratio)],
                           capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("@@")]
    if not lines:
        err = (p.stderr.strip().splitlines() or [f"exit code {p.returncode}"])[-1]
        return {"error": f"crashed: {err}"[:300]}
    out = json.loads(lines[-1][2:])
    out["process_wall_s"] = time.perf_counter() - t0
    return out


def one_line(exc: BaseException) -> str:
    msg = (str(exc).splitlines() or [""])[0].replace("[ONNXRuntimeError] : 1 : FAIL : ", "")
    return f"{type(exc).__name__}: {msg}"[:300]


def validate(path: Path, feeds: dict) -> str | None:
    """None when the model passes the full checker, opens a session and runs; else the reason."""
    import onnx
    import onnxruntime as ort

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # noqa: BLE001
        return "checker: " + one_line(exc)
    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # the failure is recorded in the results; keep the log quiet
    try:
        s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        return "session: " + one_line(exc)
    try:
        s.run(None, feeds)
    except Exception as exc:  # noqa: BLE001
        return "run: " + one_line(exc)
    return None


def costs(path: Path, size: int) -> dict:
    import onnxcompress

    r = onnxcompress.inspect(str(path), {"input": (1, 3, size, size)})
    return {"macs": r.macs, "params": r.params, "file_bytes": r.file_bytes}


def time_pair(base: Path, cand: Path, args, size: int) -> tuple[dict, dict | None]:
    """Paired speedups per provider and batch, and the min fidelity over those runs."""
    from onnxcompress.bench import BenchConfig, run_benchmark

    speed: dict = {}
    fid = None
    for prov in args.providers:
        for batch in BATCHES[prov]:
            iters = args.iters if batch == 1 else max(5, args.iters // 2)
            cfg = BenchConfig(providers=[prov], batches=[batch], iters=iters, warmup=args.warmup,
                              max_seconds=args.max_seconds, min_seconds=args.min_seconds, input_shapes={"input": (batch, 3, size, size)})
            rep = run_benchmark(base, cand, cfg)
            run = rep.runs[0]
            speed.setdefault(prov, {})[str(batch)] = {
                "provider_used": run.provider_used, **run.paired.to_dict(),
                "a_p50_ms": run.a.p50_ms, "b_p50_ms": run.b.p50_ms, "warnings": rep.warnings,
            }
            f = run.fidelity
            if f and (fid is None or f["cosine_min"] < fid["cosine_min"]):
                fid = f
    return speed, fid


def produce(tool: str, name: str, ratio: float, base: Path, model, size: int, quick: bool) -> tuple[Path, dict]:
    """Run one tool; returns the output path and what the run itself measured."""
    import suite_models as sm

    tag = f"{name}{'.quick' if quick else ''}.r{round(ratio * 100):02d}.{tool}"
    out = CACHE / f"{tag}.onnx"
    if tool == "torch-pruning":
        t0 = time.perf_counter()
        try:
            pruned = sm.torch_pruning_model(model, ratio, size)
        except Exception as exc:  # noqa: BLE001
            return out, {"error": "pruning: " + one_line(exc)}
        wall = time.perf_counter() - t0
        try:
            sm.export(pruned, out, size)
        except Exception as exc:  # noqa: BLE001
            return out, {"error": "export: " + one_line(exc)}
        return out, {"wall_s": wall}
    return out, run_child(tool, base, out, ratio)


def run_point(tool, name, ratio, base, model, size, base_costs, feeds, args) -> dict:
    point = {"model": name, "ratio": ratio, "tool": tool, "size": size, "quick": args.quick,
             "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    out, info = produce(tool, name, ratio, base, model, size, args.quick)
    point["tool_run"] = info
    if "error" in info:
        point["status"] = "failed: " + info["error"]
        return point
    bad = validate(out, feeds)
    if bad:
        point["status"] = "failed: invalid model: " + bad
        return point
    try:
        c = costs(out, size)
        point.update({k + "_kept": c[k] / base_costs[k] if base_costs[k] else None for k in ("macs", "params", "file_bytes")})
    except Exception as exc:  # noqa: BLE001
        point["costs_error"] = one_line(exc)
    try:
        point["speedup"], point["fidelity"] = time_pair(base, out, args, size)
    except Exception as exc:  # noqa: BLE001
        point["status"] = "failed: benchmark: " + one_line(exc)
        return point
    point["status"] = "ok"
    return point


def run_model(name: str, args, results: dict) -> None:
    import numpy as np
    import suite_models as sm

    size = sm.input_size(name, args.quick)
    t0 = time.perf_counter()
    model = sm.build(name)
    base = sm.export(model, CACHE / f"{name}{'.quick' if args.quick else ''}.onnx", size)
    base_costs = costs(base, size)
    feeds = {"input": np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)}
    entry = {"size": size, "quick": args.quick, "export_s": time.perf_counter() - t0, **base_costs}
    if "onnxcompress" in args.tools:
        entry["load_save"] = run_child("load_save", base, base.with_suffix(".resaved.onnx"), 0.0)
    results["models"][name] = {**results["models"].get(name, {}), **entry}
    print(f"[{name}] {size}x{size}, {base_costs['macs'] / 1e9:.2f} GMACs, exported in {entry['export_s']:.1f}s", flush=True)
    for ratio in args.ratios:
        for tool in args.tools:
            t = time.perf_counter()
            try:
                point = run_point(tool, name, ratio, base, model, size, base_costs, feeds, args)
            except Exception as exc:  # noqa: BLE001 - a suite bug must not lose the other points
                traceback.print_exc()
                point = {"model": name, "ratio": ratio, "tool": tool, "size": size, "quick": args.quick,
                         "status": "failed: suite error: " + one_line(exc)}
            point["suite_s"] = time.perf_counter() - t
            store(results, point)
            print(f"  {name} r={ratio} {tool:14s} {summary(point)} ({point['suite_s']:.0f}s)", flush=True)


def summary(p: dict) -> str:
    if p["status"] != "ok":
        return p["status"]
    sp = p.get("speedup", {}).get("cpu") or next(iter(p.get("speedup", {}).values()), {})
    s = " ".join(f"b{b}:{v['speedup']:.2f}x" for b, v in sp.items())
    macs = p.get("macs_kept")
    return f"MACs {macs:.0%} {s} cos {p['fidelity']['cosine_min']:.4f}" if macs is not None else s


def past(p: dict) -> dict:
    """What a rerun keeps of the point it replaces: enough to show run-to-run variation."""
    return {
        "when": p.get("when"), "status": p["status"], "macs_kept": p.get("macs_kept"),
        "cosine_min": (p.get("fidelity") or {}).get("cosine_min"),
        "speedup": {pr: {b: v["speedup"] for b, v in bs.items()} for pr, bs in (p.get("speedup") or {}).items()},
    }


def store(results: dict, point: dict) -> None:
    key = (point["model"], point["ratio"], point["tool"])
    old = [p for p in results["points"] if (p["model"], p["ratio"], p["tool"]) == key]
    if old:
        point["history"] = ([past(old[0])] + old[0].get("history", []))[:5]
    results["points"] = [p for p in results["points"] if (p["model"], p["ratio"], p["tool"]) != key] + [point]
    save(results)


def save(results: dict) -> None:
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, default=float))
    tmp.replace(RESULTS)


def environment(args) -> dict:
    import onnx
    import onnxsim
    import torch
    import torch_pruning

    from onnxcompress.bench.runner import machine_info

    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    info = {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in lscpu.splitlines() if ":" in ln)}
    return {
        **machine_info(),
        "lscpu_model_name": info.get("Model name"),
        "lscpu_cpus": info.get("CPU(s)"),
        "lscpu_threads_per_core": info.get("Thread(s) per core"),
        "onnx": onnx.__version__, "onnxsim": onnxsim.__version__, "torch": torch.__version__,
        "torch_pruning": torch_pruning.__version__,
    }


def parse_args(argv=None):
    import suite_models as sm

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(sm.MODELS), help=f"comma list of {', '.join(sm.MODELS)}")
    ap.add_argument("--ratios", default="0.25,0.5,0.75")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--providers", default="cpu", help="cpu and/or cuda (cuda batches: 1, 32, 128)")
    ap.add_argument("--quick", action="store_true", help="small inputs (128 / 320 px) and fewer iterations")
    ap.add_argument("--iters", type=int, help="timed pairs at batch 1 (half at bigger batches)")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--max-seconds", type=float, default=None, help="cap on timed seconds per point and batch")
    ap.add_argument("--min-seconds", type=float, default=None,
                    help="keep timing past --iters for this long per point and batch (small models get more pairs)")
    ap.add_argument("--report-only", action="store_true", help="only regenerate RESULTS.md and plots")
    args = ap.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    unknown = set(args.models) - set(sm.MODELS)
    if unknown:
        ap.error(f"unknown models: {', '.join(sorted(unknown))}")
    args.ratios = [float(r) for r in args.ratios.split(",") if r]
    args.tools = [t for t in args.tools.split(",") if t]
    if set(args.tools) - set(TOOLS):
        ap.error(f"unknown tools: {', '.join(sorted(set(args.tools) - set(TOOLS)))}")
    args.providers = [p for p in args.providers.split(",") if p]
    if set(args.providers) - set(BATCHES):
        ap.error("--providers: cpu and/or cuda")
    args.iters = args.iters or (10 if args.quick else 24)
    args.warmup = args.warmup if args.warmup is not None else (2 if args.quick else 3)
    args.max_seconds = args.max_seconds or (6.0 if args.quick else 12.0)
    args.min_seconds = args.min_seconds if args.min_seconds is not None else (2.0 if args.quick else 5.0)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    # onnx_ir warns about every data-less initializer in the structural copies that
    # onnxcompress.inspect makes for shape inference; that is expected here.
    logging.getLogger("onnx_ir").setLevel(logging.ERROR)
    import suite_report

    if "cuda" in args.providers and not args.report_only:
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            print("warning: the CUDA execution provider is not available in this onnxruntime "
                  f"({', '.join(ort.get_available_providers())}); no CUDA numbers will be measured", flush=True)
            args.providers = [p for p in args.providers if p != "cuda"]
            if not args.providers:
                print("nothing to run: add --providers cpu, or run on a machine with onnxruntime-gpu", flush=True)
                return 2
    global RESULTS
    suffix = ".quick" if args.quick else ""
    RESULTS = HERE / f"results{suffix}.json"
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"models": {}, "points": []}
    if not args.report_only:
        CACHE.mkdir(parents=True, exist_ok=True)
        results["environment"] = environment(args)
        results.setdefault("runs", []).append({
            "when": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[1:], "iters": args.iters,
            "warmup": args.warmup, "max_seconds": args.max_seconds, "min_seconds": args.min_seconds,
            "providers": args.providers,
        })
        for name in args.models:
            run_model(name, args, results)
        save(results)
    md, plot_dir = suite_report.write(results, HERE, suffix)
    print(f"wrote {RESULTS.relative_to(HERE.parent)}, {md.relative_to(HERE.parent)}, "
          f"{plot_dir.relative_to(HERE.parent)}/", flush=True)
    return 0


if __name__ == "__main__":
    if "--report-only" not in sys.argv:
        from venvs import run_under  # bench/ is on sys.path when run as a script

        run_under("torch")
    raise SystemExit(main())
