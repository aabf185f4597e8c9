"""The CUDA speed gate on a GPU: ResNet-50 at ratio 0.5, ``check`` and ``bench`` on the CUDA EP,
with an independent IOBinding timer in the same run.

Run on a machine with a GPU and onnxruntime-gpu (torch too, to export ResNet-50):

    python bench/cuda_gate.py run --out DIR        # writes DIR/cuda_gate.json and the CLI's own reports
    python bench/cuda_gate.py report DIR           # here: bench/cuda_gate.json and the RESULTS.md section

Steps of ``run``, each a subprocess so one failure does not hide the others:
1. export torchvision ResNet-50 (random weights, random BN statistics, dynamic batch, opset 17)
   with ``bench/suite_models.py``, the suite's own builder;
2. ``onnxcompress resnet50.onnx --ratio 0.5`` (magnitude, no calibration: only speed is measured);
3. ``onnxcompress check --min-speedup S --provider cuda --batch B`` for B in 1 and 32;
4. ``onnxcompress bench --providers cuda --batch 1,32``;
5. this file's own timer (``iobinding_ratio``): both models in CUDA sessions, inputs and outputs
   bound on the device, runs interleaved, median of the per-pair time ratios. It imports nothing
   from onnxcompress, so it checks the CLI's figures rather than repeating them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "cuda_gate.json"
BATCHES = (1, 32)
#: the speedup the gate asks for: at batch 1 a halved ResNet-50 is not expected to reach it on a GPU
MIN_SPEEDUP = 1.2


def iobinding_ratio(original: str, compressed: str, batch: int, pairs: int = 200, warmup: int = 20) -> dict:
    """Median per-pair ratio t(original) / t(compressed) on the CUDA EP with IOBinding (fresh code)."""
    import numpy as np
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    sessions = [ort.InferenceSession(p, providers=["CUDAExecutionProvider"]) for p in (original, compressed)]
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    bindings = []
    for s in sessions:
        b = s.io_binding()
        b.bind_ortvalue_input(s.get_inputs()[0].name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
        for o in s.get_outputs():
            b.bind_output(o.name, "cuda", 0)
        bindings.append(b)

    def once(i: int) -> float:
        s, b = sessions[i], bindings[i]
        b.synchronize_inputs()
        t = time.perf_counter()
        s.run_with_iobinding(b)
        b.synchronize_outputs()
        return time.perf_counter() - t

    for _ in range(warmup):
        once(0), once(1)
    ta, tb, ratios = [], [], []
    for k in range(pairs):
        order = (0, 1) if k % 2 == 0 else (1, 0)
        t = {i: once(i) for i in order}
        ta.append(t[0])
        tb.append(t[1])
        ratios.append(t[0] / t[1])
    q = statistics.quantiles(ratios, n=20)
    return {"batch": batch, "pairs": pairs, "median_ms_original": round(1e3 * statistics.median(ta), 3),
            "median_ms_compressed": round(1e3 * statistics.median(tb), 3),
            "speedup": round(statistics.median(ratios), 3), "pair_ratio_p5_p95": [round(q[0], 3), round(q[-1], 3)],
            "providers": sessions[0].get_providers()}


def _cli(args: list[str], log: Path) -> dict:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "onnxcompress", *args], capture_output=True, text=True)
    log.write_text(f"$ onnxcompress {' '.join(args)}\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}\n")
    return {"args": args, "rc": p.returncode, "seconds": round(time.perf_counter() - t, 1),
            "stderr_tail": p.stderr.strip().splitlines()[-3:]}


def run(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    res: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "steps": {}}
    res_path = out / "cuda_gate.json"

    def save() -> None:
        res_path.write_text(json.dumps(res, indent=1))

    try:
        import onnxruntime as ort
        import torch

        res["machine"] = {"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                          "onnxruntime": ort.__version__, "providers": ort.get_available_providers(),
                          "torch": torch.__version__}
    except Exception as exc:  # the record says what was missing
        res["machine"] = {"error": repr(exc)}
    save()
    work = Path("/tmp/cuda_gate")
    work.mkdir(exist_ok=True)
    original, compressed = work / "resnet50.onnx", work / "resnet50.r50.onnx"
    code = ("import sys; from pathlib import Path; sys.path.insert(0, 'bench'); from suite_models import build, export; "
            f"export(build('resnet50'), Path({str(original)!r}), 224)")
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    res["steps"]["export"] = {"rc": p.returncode, "seconds": round(time.perf_counter() - t, 1),
                              "stderr_tail": p.stderr.strip().splitlines()[-3:]}
    save()
    res["steps"]["compress"] = _cli([str(original), "--ratio", "0.5", "-o", str(compressed), "--no-simplify",
                                     "--report", str(out / "compress_report.json"), "-q"], out / "compress.log")
    save()
    for b in BATCHES:
        res["steps"][f"check_b{b}"] = _cli(
            ["check", str(original), str(compressed), "--min-speedup", str(MIN_SPEEDUP), "--provider", "cuda",
             "--batch", str(b), "--max-seconds", "30", "--json", str(out / f"check_b{b}.json")], out / f"check_b{b}.log")
        save()
    res["steps"]["bench"] = _cli(["bench", str(original), str(compressed), "--providers", "cuda", "--batch", "1,32",
                                  "--iters", "200", "--warmup", "20", "--json", str(out / "bench_cuda.json"),
                                  "--markdown", str(out / "bench_cuda.md")], out / "bench.log")
    save()
    res["iobinding"] = []
    for b in BATCHES:
        try:
            res["iobinding"].append(iobinding_ratio(str(original), str(compressed), b))
        except Exception as exc:
            res["iobinding"].append({"batch": b, "error": repr(exc)})
        save()
    print(json.dumps(res, indent=1))


def report(src: Path) -> None:
    """Gather the run's files into bench/cuda_gate.json (the figures RESULTS.md quotes)."""
    res = json.loads((src / "cuda_gate.json").read_text())
    for b in BATCHES:
        f = src / f"check_b{b}.json"
        if f.exists():
            c = json.loads(f.read_text())
            res.setdefault("check", {})[str(b)] = {k: c.get(k) for k in ("passed", "speedup", "criteria")}
    f = src / "bench_cuda.json"
    if f.exists():
        runs = json.loads(f.read_text())["runs"]
        res["bench"] = [{k: r.get(k) for k in ("batch", "provider", "provider_used", "io_binding", "paired")} for r in runs]
    f = src / "compress_report.json"
    if f.exists():
        r = json.loads(f.read_text())
        res["macs_kept"] = round(r["after"]["macs"] / r["before"]["macs"], 4)
    RESULT.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", type=Path, required=True)
    g = sub.add_parser("report")
    g.add_argument("src", type=Path)
    args = ap.parse_args()
    run(args.out) if args.cmd == "run" else report(args.src)


if __name__ == "__main__":
    main()
