"""Distillation on a GPU: ``--recover distill --device cuda`` on the real models, scored back here.

The GPU machine this project borrows has torch with CUDA but none of the real-model packages,
so the work is split in two:

    # there, with bench/.cache/real/NAME.{onnx,calib.npz,json} copied over
    python bench/distill_gpu.py run --models ppocr_cls --targets 0.6 --seconds 90 --out DIR
    # here, with DIR's files back: score on eval and shift, merge into bench/distill_real.json
    python bench/distill_gpu.py collect DIR
    python bench/distill_real.py --report

``run`` is the same CLI command as ``bench/distill_real.py`` (``--calib NAME.calib.npz --target-macs T
--recover distill``) plus ``--device cuda``, and keeps each written model and report in DIR. The rows
are tagged ``distill+cuda`` (and ``+lrX`` / ``+mixX`` as in distill_real.py), with the GPU's name.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.distill_real import KEPT, OUT, command, scored  # noqa: E402


def tag(args) -> str:
    t = f"distill+{args.device.split(':')[0]}"
    t += f"+mix{args.mix:g}" if args.mix is not None else ""
    t += f"+lr{args.lr:g}" if args.lr is not None else ""
    return t


def run(args) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    except ImportError:
        gpu = "no torch"
    method = tag(args)
    for name in args.models:
        for target in args.targets:
            stem = f"{name}.{target:g}.{method}".replace("+", "_")  # file names travel back in letters, digits, . _ -
            out, rep = args.out / f"{stem}.onnx", args.out / f"{stem}.report.json"
            cmd = command(name, target, "distill", out, rep, args.seconds, None, mix=args.mix, lr=args.lr,
                          device=args.device)
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            t = time.perf_counter()
            p = subprocess.run(cmd, capture_output=True, text=True)
            row = {"model": name, "target": target, "method": method, "samples": 128, "device": gpu,
                   "wall_s": round(time.perf_counter() - t, 1), "date": time.strftime("%Y-%m-%d"), "rc": p.returncode,
                   "stderr_tail": p.stderr.strip().splitlines()[-4:]}
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            # the children's peak so far: exact for the first run, an upper bound after a larger one
            row["peak_rss_mb"] = round(peak / 1024) if peak > before or not before else None
            (args.out / f"{stem}.row.json").write_text(json.dumps(row, indent=1))
            print(json.dumps(row), flush=True)


def collect(src: Path) -> None:
    results = json.loads(OUT.read_text()) if OUT.exists() else {"rows": [], "original": {}}
    KEPT.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.glob("*.row.json")):
        row = json.loads(f.read_text())
        stem = f.name[: -len(".row.json")]
        model, rep = src / f"{stem}.onnx", src / f"{stem}.report.json"
        if row.pop("rc") != 0 or not model.exists():
            row["error"] = [ln for ln in row.pop("stderr_tail") if ln.startswith("onnxcompress")][-1:] or "failed"
        else:
            row.pop("stderr_tail")
            kept = KEPT / f"{row['model']}.{row['target']:g}.{row['method']}.{row['samples']}.onnx"
            shutil.copyfile(model, kept)
            row["output"] = str(kept.relative_to(ROOT))
            row = scored(row, row["model"], kept, json.loads(rep.read_text()))
        key = (row["model"], row["target"], row["method"], row["samples"])
        results["rows"] = [x for x in results["rows"]
                           if (x["model"], x["target"], x["method"], x["samples"]) != key] + [row]
        print(json.dumps({k: v for k, v in row.items() if k != "distill"}), flush=True)
    OUT.write_text(json.dumps(results, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="on the GPU machine: the CLI runs, written models and reports into --out")
    r.add_argument("--models", nargs="+", required=True)
    r.add_argument("--targets", nargs="+", type=float, required=True)
    r.add_argument("--seconds", type=float, default=120.0, help="--distill-seconds of each run (default 120)")
    r.add_argument("--device", default="cuda")
    r.add_argument("--mix", type=float, default=None)
    r.add_argument("--lr", type=float, default=None)
    r.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("collect", help="here: score the runs in SRC and merge them into bench/distill_real.json")
    c.add_argument("src", type=Path)
    args = ap.parse_args()
    run(args) if args.cmd == "run" else collect(args.src)


if __name__ == "__main__":
    main()
