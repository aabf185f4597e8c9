"""Experiment: cap each group's removal at half its atoms in the calibrated allocation (issue 15).

The per-group sweep tries ratios 0.125-0.75 of a group's atoms; the allocation then spends the
MAC budget on the least drift per MAC saved, and can take 75% of one wide group. This script
runs the CLI with the sweep's largest ratio dropped (so no group loses more than half), on the
real models, and scores eval and shift like ``bench/distill_real.py``:

    python bench/allocation_cap.py ppocr_cls:0.6 ppocrv6_rec:0.8 ...   # rows appended to bench/allocation_cap.jsonl

``python bench/allocation_cap.py --cli ARGS`` is the patched CLI itself (used by the rows).
Results and the baseline (the same command uncapped, bench/recheck6_real.json) are in
bench/ALLOCATION_CAP.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "allocation_cap.jsonl"
CAPPED_RATIOS = (0.125, 0.25, 0.375, 0.5)


def patch_sweep(ratios: tuple[float, ...]) -> None:
    """The calibrated allocation's sensitivity sweep tries ``ratios`` of each group (in this process)."""
    import onnxcompress.pruning.calibrated as calibrated

    measure = calibrated.measure

    def swept(*args, **kwargs):
        kwargs["ratios"] = ratios
        return measure(*args, **kwargs)

    calibrated.measure = swept


def patched_cli(argv: list[str]) -> int:
    patch_sweep(CAPPED_RATIOS)
    from onnxcompress.cli import main

    return main(argv)


def rows(specs: list[str]) -> None:
    sys.path.insert(0, str(ROOT))
    from bench.distill_real import KEPT, command, score

    for spec in specs:
        name, target = spec.split(":")
        out, rep = KEPT / f"{name}.{target}.cap50.onnx", KEPT / f"{name}.{target}.cap50.json"
        cmd = command(name, float(target), "refit", out, rep, 300, None)
        cmd[1:3] = [str(Path(__file__).resolve()), "--cli"]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=os.environ)
        row: dict = {"model": name, "target": float(target), "variant": "cap50", "wall_s": round(time.perf_counter() - t, 1)}
        if proc.returncode:
            row["error"] = proc.stderr.strip().splitlines()[-1:]
        else:
            r = json.loads(rep.read_text())
            row["macs_kept"] = round(r["after"]["macs"] / r["before"]["macs"], 4)
            row["removed"] = [(g["atoms"], g["removed"]) for g in r["search"]["groups"] if g["removed"]]
            row.update({s: score(name, out, s) for s in ("eval", "shift")})
        print(json.dumps(row), flush=True)
        with OUT.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--cli"]:
        raise SystemExit(patched_cli(sys.argv[2:]))
    rows(sys.argv[1:])
