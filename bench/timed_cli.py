"""Run one ``onnxcompress`` command line under /usr/bin/time, for the bench scripts that score written models.

    from timed_cli import run_timed   # with bench/ on sys.path (a script in bench/ has it)
    row = run_timed(["model.onnx", "--calib", "c.npz", "-o", "out.onnx", "-q"], cwd=ROOT)

Returns the exit code, the wall seconds, the peak RSS in MB and the tool's last ``onnxcompress:`` line on stderr
(its one-line refusal or error; None when there is none). A refusal is a result here, not an exception.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def run_timed(args: list[str], cwd: Path, env: dict | None = None) -> dict:
    cmd = ["/usr/bin/time", "-f", "%M %e", sys.executable, "-m", "onnxcompress", *args]
    t0 = time.time()
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    lines = p.stderr.strip().splitlines()
    rss_kb, _wall = lines[-1].split()
    err = [line for line in lines[:-1] if line.startswith("onnxcompress:")]
    return {"rc": p.returncode, "wall_s": round(time.time() - t0, 1), "peak_rss_mb": int(rss_kb) // 1024,
            "message": err[-1] if err else None}
