"""Spotify's basic-pitch note model (a TF export, audio in) through the calibrated path, with labels.

basic-pitch 0.4.0 ships ``basic_pitch/saved_models/icassp_2022/nmp.onnx``: 2 s of 22050 Hz mono
audio (N, 43844, 1) in, a constant-Q transform built of Conv ops, then a small CNN with three
sigmoid outputs per frame (172 frames): pitch contours (264 bins), notes and onsets (88 keys,
MIDI 21-108). The wheel depends on tensorflow, so ``--prepare`` fetches it with
``pip download --no-deps`` and unzips the model alone.

Labelled clips are synthesized here, each from its own seed stream, with a piano roll:
1 to 3 notes (MIDI 36-96), 0.25-1.2 s, 10 ms attack and 30 ms release.

- ``calib`` (seed 0) and ``eval`` (seed 1): six harmonics at 1/h, light noise, level 0.3-0.8;
- ``shift`` (seed 2), drawn differently: odd-harmonic (square-like) or 12-harmonic (saw-like)
  tones, 5 Hz vibrato of up to 30 cents, a short exponential reverb, noise at 15-25 dB SNR,
  level 0.05-0.3.

The score is frame-level note F1 against the piano roll: output ``StatefulPartitionedCall:1``
(notes) thresholded at 0.3 (basic-pitch's default frame threshold), frame ``f`` at sample
``256 f``, the two frames on each side of every note boundary left out of the count. Beside it,
``agreement_f1``: the same F1 against the original model's own note cells, every cell counted.

    python bench/basic_pitch.py --prepare       # model and clips into bench/.cache/basic_pitch/
    python bench/basic_pitch.py --run [--runs 'round-to 1'] [--targets 0.8 0.6] [--recover refit distill]
    python bench/basic_pitch.py --speed round-to1.0.8.refit   # CPU speedup of a written model (out/STEM.onnx)
    python bench/basic_pitch.py --report        # bench/BASIC_PITCH.md from bench/basic_pitch.json
"""
from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache" / "basic_pitch"
MODEL = CACHE / "nmp.onnx"
OUT_JSON = ROOT / "bench" / "basic_pitch.json"
OUT_MD = ROOT / "bench" / "BASIC_PITCH.md"
SR, LENGTH, HOP, FRAMES, LOWEST = 22050, 43844, 256, 172, 21
INPUT, NOTES, THRESHOLD, GUARD = "serving_default_input_2:0", "StatefulPartitionedCall:1", 0.3, 2
SPLITS = {"calib": (0, 128), "eval": (1, 300), "shift": (2, 300)}
#: (label, extra CLI arguments); each runs at every target with --recover refit, and distill where named
RUNS = [("round-to 8 (default)", []), ("round-to 1", ["--round-to", "1"]),
        ("round-to 1, 900 s", ["--round-to", "1", "--distill-seconds", "900"])]


def prepare() -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "basic-pitch==0.4.0", "-d", tmp],
                       check=True)
        wheel = next(Path(tmp).glob("basic_pitch-0.4.0-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            MODEL.write_bytes(z.read("basic_pitch/saved_models/icassp_2022/nmp.onnx"))
    for name, (seed, n) in SPLITS.items():
        x, roll = clips(seed, n, shifted=name == "shift")
        np.savez_compressed(CACHE / f"{name}.npz", **{INPUT: x, "roll": roll})
        print(f"{name}: {x.shape}, {int(roll.sum())} active (frame, key) cells", flush=True)


def clips(seed: int, n: int, shifted: bool) -> tuple[np.ndarray, np.ndarray]:
    """``n`` clips (n, 43844, 1) float32 and their piano rolls (n, 172, 88) int8 (1 on, 0 off, -1 not scored)."""
    rng = np.random.default_rng([seed, 2026])
    t = np.arange(LENGTH) / SR
    x = np.zeros((n, LENGTH), np.float64)
    roll = np.zeros((n, FRAMES, 88), np.int8)
    frame_at = np.arange(FRAMES) * HOP
    for i in range(n):
        for _ in range(rng.integers(1, 4)):
            midi = int(rng.integers(36, 97))
            start = int(rng.integers(0, LENGTH - SR // 4))
            stop = min(LENGTH, start + int(rng.uniform(0.25, 1.2) * SR))
            env = np.zeros(LENGTH)
            span = np.arange(stop - start) / SR
            env[start:stop] = np.minimum(1.0, span / 0.01) * np.minimum(1.0, (span[-1] - span) / 0.03 + 1e-9)
            f0 = 440.0 * 2 ** ((midi - 69) / 12)
            if shifted:
                depth = rng.uniform(0, 0.3) / 12
                phase = 2 * np.pi * np.cumsum(f0 * 2 ** (depth * np.sin(2 * np.pi * 5 * t))) / SR
                harmonics = range(1, 13, 2) if rng.random() < 0.5 else range(1, 13)
            else:
                phase = 2 * np.pi * f0 * t
                harmonics = range(1, 7)
            tone = sum(np.sin(h * phase) / h for h in harmonics if h * f0 < SR / 2)
            x[i] += rng.uniform(0.3, 1.0) * env * tone
            on = (frame_at >= start) & (frame_at < stop)
            roll[i, on, midi - LOWEST] = 1
            edge = np.abs(frame_at[:, None] - np.array([start, stop])[None]).min(axis=1) <= GUARD * HOP
            roll[i, edge, midi - LOWEST] = -1
        if shifted:
            tail = np.exp(-np.arange(int(0.15 * SR)) / (0.04 * SR)) * rng.standard_normal(int(0.15 * SR)) * 0.3
            tail[0] = 1.0
            x[i] = np.convolve(x[i], tail)[:LENGTH]
        peak = np.abs(x[i]).max() or 1.0
        level = rng.uniform(0.05, 0.3) if shifted else rng.uniform(0.3, 0.8)
        x[i] = x[i] / peak * level
        snr_db = rng.uniform(15, 25) if shifted else 40.0
        x[i] += rng.standard_normal(LENGTH) * x[i].std() * 10 ** (-snr_db / 20)
    return x[..., None].astype(np.float32), roll


def notes_on(model: Path, split: str) -> np.ndarray:
    import onnxruntime as ort

    x = np.load(CACHE / f"{split}.npz")[INPUT]
    s = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return np.concatenate([s.run([NOTES], {INPUT: x[i:i + 16]})[0] for i in range(0, len(x), 16)]) >= THRESHOLD


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p, r = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    return p, r, 2 * p * r / max(p + r, 1e-12)


@functools.lru_cache(maxsize=None)
def original_notes(split: str) -> np.ndarray:
    """The original model's note cells on a split, run once per split (every written model is scored against them)."""
    return notes_on(MODEL, split)


def note_f1(model: Path, split: str) -> dict:
    """Against the piano roll, and (``agreement_f1``) against the original's own note cells."""
    roll = np.load(CACHE / f"{split}.npz")["roll"]
    pred = notes_on(model, split)
    p, r, f = _prf(int((pred & (roll == 1)).sum()), int((pred & (roll == 0)).sum()), int((~pred & (roll == 1)).sum()))
    ref = original_notes(split)
    agree = _prf(int((pred & ref).sum()), int((pred & ~ref).sum()), int((~pred & ref).sum()))[2]
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4), "agreement_f1": round(agree, 4)}


def compress(target: float, recover: str, extra: list[str], out: Path, report: Path) -> dict:
    from timed_cli import run_timed

    return run_timed([str(MODEL), "--calib", str(CACHE / "calib.npz"), "--target-macs", str(target), "--recover", recover,
                      "-o", str(out), "--report", str(report), "-q", *extra], cwd=ROOT)


def run(targets: list[float], recovers: list[str], runs: list[str]) -> dict:
    rows = []
    original = {s: note_f1(MODEL, s) for s in ("eval", "shift")}
    print(json.dumps({"original": original}), flush=True)
    (CACHE / "out").mkdir(exist_ok=True)
    # written models stay in bench/.cache/basic_pitch/out/ (git-ignored), for --speed
    for label, extra in [(lab, ex) for lab, ex in RUNS if not runs or lab in runs]:
        for target in targets:
            for recover in recovers:
                stem = f"{label.split(' (')[0].replace(' ', '').replace(',', '+')}.{target}.{recover}"
                out, rep = CACHE / "out" / f"{stem}.onnx", CACHE / "out" / f"{stem}.json"
                out.unlink(missing_ok=True)
                rep.unlink(missing_ok=True)
                row = {"run": label, "target": target, "recover": recover, **compress(target, recover, extra, out, rep)}
                if row["rc"] == 0:  # a refusal's --report has no model in it (written: false)
                    r = json.loads(rep.read_text())
                    row["macs_kept"] = round(r["after"]["macs"] / r["before"]["macs"], 4)
                    row["warnings"] = [w for w in r.get("warnings", []) if "out of reach" in w]
                    d = (r.get("recovery") or {}).get("distill") or {}
                    if d:
                        row["distill"] = {k: d.get(k) for k in ("kept", "steps", "best_step", "seconds")}
                if out.exists():
                    row.update({s: note_f1(out, s) for s in ("eval", "shift")})
                rows.append(row)
                print(json.dumps(row), flush=True)
    return {"original": original, "rows": rows}


def speed(stems: list[str]) -> list[dict]:
    """CPU speedup of written models over the original: ``onnxcompress bench``, paired, batch 1 and 8."""
    rows = []
    for stem in stems:
        with tempfile.TemporaryDirectory() as tmp:
            js = Path(tmp) / "bench.json"
            subprocess.run([sys.executable, "-m", "onnxcompress", "bench", str(MODEL), str(CACHE / "out" / f"{stem}.onnx"),
                            "--batch", "1,8", "--iters", "200", "--json", str(js), "-q"], cwd=ROOT, check=True, capture_output=True)
            b = json.loads(js.read_text())
        rows.append({"model": stem, "points": [
            {"batch": r["batch"], "speedup": round(r["paired"]["speedup"], 3), "p10": round(r["paired"]["ratio_lo"], 3),
             "p90": round(r["paired"]["ratio_hi"], 3), "pairs": r["paired"]["pairs"]} for r in b["runs"]]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def report(data: dict) -> str:
    o = data["original"]
    lines = ["# basic-pitch's note model through the calibrated path, scored on labelled clips", "",
             "Generated by `python bench/basic_pitch.py --report` from `bench/basic_pitch.json` (see the script's "
             "docstring for the clips and the score). basic-pitch 0.4.0 `nmp.onnx`, 524M MACs, 35.7k parameters; "
             "128 synthesized calibration clips; frame-level note F1 (threshold 0.3) on 300 `eval` clips drawn like "
             "them and 300 `shift` clips drawn differently (other timbres, vibrato, reverb, noise, quieter). 2-core "
             "machine, shared with one other job.", "",
             f"Original: eval F1 **{o['eval']['f1']:.3f}** (P {o['eval']['precision']:.3f}, R {o['eval']['recall']:.3f}), "
             f"shift F1 **{o['shift']['f1']:.3f}** (P {o['shift']['precision']:.3f}, R {o['shift']['recall']:.3f}).", "",
             "| run | target | recover | written | MACs kept | eval F1 (change); agreement | shift F1 (change); agreement | wall s | peak RSS MB |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in data["rows"]:
        why = (r.get("message") or "").removeprefix("onnxcompress: ").split("; nothing was written")[0]
        written = "yes" if r["rc"] == 0 else f"no: {why}"
        d = r.get("distill")
        if d:
            written += (f"; distillation kept step {d['best_step']} of {d['steps']}" if d["kept"] == "distill"
                        else f"; the refit kept ({d['steps']} steps)")
        f1 = lambda s: (f"{r[s]['f1']:.3f} ({(r[s]['f1'] - o[s]['f1']) * 100:+.1f}); {r[s].get('agreement_f1', 0):.3f}"  # noqa: E731
                        if s in r else "-")
        macs = f"{r['macs_kept'] * 100:.1f}%" if "macs_kept" in r else "-"
        lines.append(f"| {r['run']} | {r['target']} | {r['recover']} | {written} | {macs} | {f1('eval')} | "
                     f"{f1('shift')} | {r['wall_s']} | {r['peak_rss_mb']} |")
    if data.get("speed"):
        lines += ["", "CPU speedup over the original (`onnxcompress bench`, paired and interleaved, ratio of medians, "
                  "p10-p90 of the pairs; machine quiet):", "", "| written model | batch 1 | batch 8 |", "|---|---|---|"]
        for r in data["speed"]:
            cell = {p["batch"]: f"{p['speedup']:.2f}x ({p['p10']:.2f}-{p['p90']:.2f}, {p['pairs']} pairs)" for p in r["points"]}
            lines.append(f"| {r['model']} | {cell.get(1, '-')} | {cell.get(8, '-')} |")
    lines += ["", *data.get("notes", [])]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepare", action="store_true")
    ap.add_argument("--run", action="store_true")
    ap.add_argument("--targets", nargs="*", type=float, default=[0.8, 0.6])
    ap.add_argument("--recover", nargs="*", default=["refit", "distill"])
    ap.add_argument("--runs", nargs="*", default=[], help="labels of RUNS to run (default: all)")
    ap.add_argument("--speed", nargs="*", metavar="STEM", help="time these written models (out/STEM.onnx) against the original")
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    if args.prepare:
        prepare()
    data = json.loads(OUT_JSON.read_text()) if OUT_JSON.exists() else {"rows": [], "notes": []}
    if args.run:
        new = run(args.targets, args.recover, args.runs)
        keys = {(r["run"], r["target"], r["recover"]) for r in new["rows"]}
        data["original"] = new["original"]
        data["rows"] = [r for r in data["rows"] if (r["run"], r["target"], r["recover"]) not in keys] + new["rows"]
        OUT_JSON.write_text(json.dumps(data, indent=1) + "\n")
    if args.speed:
        data["speed"] = speed(args.speed)
        OUT_JSON.write_text(json.dumps(data, indent=1) + "\n")
    if args.run or args.report or args.speed:
        OUT_MD.write_text(report(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
