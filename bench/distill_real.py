"""Refit against distillation on real pretrained models: accuracy, MACs, wall time and peak RSS.

For every model and MACs target, two CLI runs of the same command, under /usr/bin/time:

    onnxcompress MODEL --calib NAME.calib.npz --target-macs T --recover refit|distill ...

Each written model is then scored on its labelled evaluation set (``bench/real/evaluate.py``
for recognizers and classifiers: exact match; ``bench/real/evaluate_det.py`` for the DBNet
detectors: box hmean), and on the differently drawn ``shift`` split where the model has one.
The runs need the finetune extra (torch) in the interpreter that runs this script.

    python bench/distill_real.py --models ppocr_cls --targets 0.8 0.6 [--seconds 300] [--out F]
    python bench/distill_real.py --report      # bench/DISTILL_REAL.md and its plot from the JSON
    python bench/distill_real.py --speed --models ppocr_cls   # CPU speedup at the smallest size within 1 point

Written models are kept in bench/.cache/real/out/ (git-ignored), so ``--speed`` can time the one at
each model's smallest MACs within 1 point of the original on ``eval`` against the original:
``onnxcompress bench``, paired and interleaved, CPU EP, batch 1 and 8.

Results accumulate in bench/distill_real.json (keyed by model, target, method, samples).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache" / "real"
OUT = ROOT / "bench" / "distill_real.json"
KEPT = CACHE / "out"
sys.path.insert(0, str(ROOT))

DETECTORS = ("ppocr_det", "ppocrv3_det")
#: the labelled splits a row is scored on (``wild`` and ``confirm``: text-line models, prepared since
#: 2026-12-06; a split a model lacks scores None)
SPLITS = ("eval", "shift", "wild", "confirm")


def meta(name: str) -> dict:
    return json.loads((CACHE / f"{name}.json").read_text())


def score(name: str, path: Path, split: str) -> float | None:
    """Accuracy (exact match / top-1) or, for detectors, box hmean; None where the split is missing."""
    if name == "layout_cdla":  # PicoDet layout detector: class-aware box hmean (bench/real/LAYOUT.md)
        from bench.real.evaluate_layout import evaluate, paths_for

        _, npz, js = paths_for(name, split)
        return float(evaluate(str(path), npz, js)["hmean"]) if Path(npz).exists() else None
    if name in DETECTORS:
        from bench.real.evaluate_det import evaluate, paths_for

        _, npz, js = paths_for(name, split)
        return float(evaluate(str(path), npz, js)["hmean"]) if Path(npz).exists() else None
    from bench.real.evaluate import evaluate, paths_for

    _, npz, js = paths_for(name)
    if split != "eval":
        npz = npz.replace(".eval.npz", f".{split}.npz")
    return float(evaluate(str(path), npz, js)["accuracy"]) if Path(npz).exists() else None


def command(name: str, target: float, method: str, out: Path, rep: Path, seconds: float, samples: int | None,
            augment: float | None = None, calib_augment: float = 0.0, attention: str = "heads", mix: float | None = None,
            lr: float | None = None, device: str | None = None, rounds: int = 1, estimate: str = "sweep",
            step_sizes: str | None = None, steps: int | None = None, feature_weight: float | None = None) -> list[str]:
    """The CLI run of one row: ``--calib`` (``--calib-samples``), ``--target-macs``, ``--recover`` and its options."""
    m = meta(name)
    shape = ",".join(map(str, (1, *m["input_shape"])))
    calib = CACHE / (f"{name}.calib{samples}.npz" if samples and samples > 128 else f"{name}.calib.npz")
    cmd = [sys.executable, "-m", "onnxcompress", str(CACHE / f"{name}.onnx"), "--calib", str(calib),
           "--target-macs", str(target), "--recover", method, "--input-shape", f"{m['input_name']}:{shape}",
           "-o", str(out), "--report", str(rep), "-q", "--distill-seconds", str(seconds)]
    if samples:
        cmd += ["--calib-samples", str(samples)]
    if augment is not None and method == "distill":
        cmd += ["--distill-augment", str(augment)]
    if calib_augment:
        cmd += ["--calib-augment", str(calib_augment)]
    if attention != "heads":
        cmd += ["--attention", attention]
    if mix is not None and method == "distill":
        cmd += ["--distill-mix", str(mix)]
    if lr is not None and method == "distill":
        cmd += ["--distill-lr", str(lr)]
    if device is not None:
        cmd += ["--device", device]
    if rounds != 1:
        cmd += ["--allocation-rounds", str(rounds)]
    if estimate != "sweep":
        cmd += ["--sensitivity-estimate", estimate]
    if step_sizes is not None and method == "distill":
        cmd += ["--distill-step-sizes", step_sizes]
    if steps is not None and method == "distill":
        cmd += ["--distill-steps", str(steps)]
    if feature_weight is not None and method == "distill":
        cmd += ["--distill-feature-weight", str(feature_weight)]
    return cmd


def run(name: str, target: float, method: str, tmp: Path, seconds: float, samples: int | None,
        augment: float | None = None, calib_augment: float = 0.0, attention: str = "heads", mix: float | None = None,
        lr: float | None = None, rounds: int = 1, estimate: str = "sweep", step_sizes: str | None = None,
        steps: int | None = None, feature_weight: float | None = None, suffix: str = "",
        cli_args: tuple[str, ...] = ()) -> dict:
    KEPT.mkdir(parents=True, exist_ok=True)
    tag = f"{method}+aug{augment:g}" if augment is not None and method == "distill" else method
    tag += f"+caug{calib_augment:g}" if calib_augment else ""
    tag += "+dims" if attention == "dims" else ""
    tag += f"+mix{mix:g}" if mix is not None and method == "distill" else ""
    tag += f"+lr{lr:g}" if lr is not None and method == "distill" else ""
    tag += f"+r{rounds}" if rounds != 1 else ""
    tag += f"+{estimate}" if estimate != "sweep" else ""
    tag += f"+{step_sizes[:3]}" if step_sizes is not None and method == "distill" else ""
    tag += f"+{steps}steps" if steps is not None and method == "distill" else ""
    tag += f"+fw{feature_weight:g}" if feature_weight is not None and method == "distill" else ""
    tag += suffix
    out, rep = KEPT / f"{name}.{target:g}.{tag}.{samples or 128}.onnx", tmp / f"{name}.{method}.json"
    cmd = command(name, target, method, out, rep, seconds, samples, augment, calib_augment, attention, mix, lr,
                  rounds=rounds, estimate=estimate, step_sizes=step_sizes, steps=steps,
                  feature_weight=feature_weight) + list(cli_args)
    method = tag
    t = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t
    row = {"model": name, "target": target, "method": method, "samples": samples or 128, "wall_s": round(wall, 1),
           "date": time.strftime("%Y-%m-%d"), "output": str(out.relative_to(ROOT))}
    if proc.returncode != 0:
        row["error"] = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("onnxcompress")][-1:] \
            or proc.returncode
        return row
    row["peak_rss_mb"] = round(int(proc.stderr.strip().splitlines()[-1]) / 1024)
    return scored(row, name, out, json.loads(rep.read_text()))


def scored(row: dict, name: str, out: Path, r: dict) -> dict:
    """``row`` with the written model's MACs kept, its scores on eval, shift, wild and confirm (where
    prepared), and the distillation record
    of its report ``r``."""
    row["macs_kept"] = round(r["after"]["macs"] / r["before"]["macs"], 4)
    for split in SPLITS:
        row[split] = score(name, out, split)
    if r.get("versions"):  # the libraries that wrote it (reports from 2026-12-06 on)
        row["versions"] = r["versions"]
    far = [w for w in r.get("warnings", []) if "far from the original" in w]  # verify's DEGRADED_BELOW warning
    if far:
        row["far_warning"] = far[0]
    choice = (r.get("search") or {}).get("rounds_choice")
    if choice:
        row["rounds_choice"] = choice
    d = (r.get("recovery") or {}).get("distill") or {}
    if d:
        row["distill"] = {k: d.get(k) for k in ("kept", "steps", "best_step", "seconds", "batch",
                                                 "held_out_drift_refit", "held_out_drift_distill", "warning",
                                                 "trained_tensors", "mix", "lr", "held_out_loss_refit",
                                                 "held_out_loss_distill", "augment", "average", "defaults_off",
                                                 "held_out_perturbed",
                                                 "ctc_heads", "ctc_weight", "losses", "features")}
        row["distill"]["history"] = [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in h.items()
                                      if k in ("step", "held_out_drift", "held_out_loss")} for h in d.get("history", [])]
    return row


def measure(args) -> None:
    results = json.loads(OUT.read_text()) if OUT.exists() else {"rows": [], "original": {}}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name in args.models:
            src = CACHE / f"{name}.onnx"
            results["original"][name] = {"eval": score(name, src, "eval"), "shift": score(name, src, "shift")}
            for target in args.targets:
                for method in args.methods:
                    row = run(name, target, method, tmp, args.seconds, args.samples, args.augment, args.calib_augment,
                              args.attention, args.mix, args.lr, args.rounds, args.estimate, args.step_sizes,
                              args.steps, args.feature_weight, args.suffix, tuple(args.cli_args.split()))
                    key = (name, target, row["method"], row["samples"])
                    results["rows"] = [x for x in results["rows"]
                                       if (x["model"], x["target"], x["method"], x["samples"]) != key] + [row]
                    OUT.write_text(json.dumps(results, indent=1))
                    print(json.dumps(row), flush=True)


def base_samples(res: dict, name: str) -> int:
    """The calibration size a model's curve is drawn at: 128, or fewer where it was run smaller for time."""
    sizes = {r["samples"] for r in res["rows"] if r["model"] == name}
    return 128 if 128 in sizes or not sizes else min(sizes)


def within(res: dict, name: str, pts: float = 1.0, split: str = "eval", samples: int | None = None) -> list[dict]:
    """The 128-sample runs (or ``samples``-sample runs) of ``name`` within ``pts`` points of the original,
    fewest MACs kept first (among equal sizes, a run whose written model is still on disk, so it can be timed)."""
    o = res["original"].get(name, {}).get(split)
    size = samples or base_samples(res, name)
    rows = [r for r in res["rows"] if r["model"] == name and r["samples"] == size and "error" not in r
            and r.get(split) is not None and o is not None and o - r[split] <= pts / 100 + 1e-9]
    return sorted(rows, key=lambda r: (r["macs_kept"], not (ROOT / r.get("output", "-")).exists()))


def same_graph_on_disk(res: dict, row: dict) -> dict | None:
    """``row`` where its written model is on disk; else a run of the same model, target and calibration
    size whose written model is, with the same MACs kept (to 4 digits). Distillation changes weights,
    never shapes, so a distilled model and the refit it started from (the same allocation) run the same
    graph: its time is the distilled model's."""
    if (ROOT / row.get("output", "-")).exists():
        return row
    same = [r for r in res["rows"] if r["model"] == row["model"] and r["target"] == row["target"]
            and r["samples"] == row["samples"] and (ROOT / r.get("output", "-")).exists()
            and r.get("macs_kept") == row["macs_kept"]]
    return same[0] if same else None


def speed(args) -> None:
    """Paired CPU speedup of each model's smallest within-1-point output against its original."""
    results = json.loads(OUT.read_text())
    speeds = results.setdefault("speed", {})
    with tempfile.TemporaryDirectory() as d:
        for name in args.models:
            rows = within(results, name, samples=args.samples)
            key = name if not args.samples or args.samples == base_samples(results, name) else f"{name} ({args.samples} samples)"
            # the smallest within 1 point whose graph is on disk (a smaller one's file may be gone)
            row, timed = next(((r, t) for r in rows if (t := same_graph_on_disk(results, r))), (None, None))
            if timed is None:
                print(f"{name}: no kept output within 1 point on disk (rerun its sweep)", flush=True)
                continue
            m = meta(name)
            js = Path(d) / "bench.json"
            batches = [1] if m.get("fixed_batch") else [1, 8]
            cmd = [sys.executable, "-m", "onnxcompress", "bench", str(CACHE / f"{name}.onnx"), str(ROOT / timed["output"]),
                   "--input-shape", f"{m['input_name']}:" + ",".join(map(str, (1, *m["input_shape"]))),
                   "--batch", ",".join(map(str, batches)), "--providers", "cpu", "--min-seconds", "20",
                   "--json", str(js), "-q"]
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode != 0:
                speeds[key] = {"error": p.stderr.strip().splitlines()[-1:]}
            else:
                runs = json.loads(js.read_text())["runs"]
                speeds[key] = {"target": row["target"], "method": row["method"], "macs_kept": row["macs_kept"],
                                "eval": row["eval"], "timed": timed["method"], "smallest_within": rows[0]["macs_kept"],
                                "date": time.strftime("%Y-%m-%d"), "load": os.getloadavg()[0],
                                "runs": [{"batch": r["batch"], "speedup": r["paired"]["speedup"],
                                          "pair_ratio_range": [r["paired"]["ratio_lo"], r["paired"]["ratio_hi"]],
                                          "pairs": r["paired"]["pairs"]} for r in runs]}
            OUT.write_text(json.dumps(results, indent=1))
            print(name, json.dumps(speeds[key]), flush=True)


def summary_table(res: dict) -> list[str]:
    """Per model and method: the smallest MACs kept within 1 and 3 points, on eval and shift (128 samples)."""
    lines = ["Over the 128-sample runs above (32 for layout_cdla, for time); `-` where no run stayed within it. Distillation rows are "
              "what `--recover distill` wrote (the refit where distillation did not win on held-out data).", "",
              "| model | method | eval ≤1 pt | eval ≤3 pts | shift ≤1 pt | shift ≤3 pts | Δ shift at 0.8 |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for name in sorted({r["model"] for r in res["rows"]}):
        o = res["original"].get(name, {})
        for method in sorted({r["method"] for r in res["rows"] if r["model"] == name}):
            rows = [r for r in res["rows"] if r["model"] == name and r["method"] == method
                    and r["samples"] == base_samples(res, name)
                    and "error" not in r]
            if not rows:
                continue

            def smallest(split: str, pts: float) -> str:
                ok = [r["macs_kept"] for r in rows if r.get(split) is not None and o.get(split) is not None
                      and o[split] - r[split] <= pts / 100 + 1e-9]
                return f"{min(ok):.0%}" if ok else "-"

            at8 = [r for r in rows if r["target"] == 0.8 and r.get("shift") is not None and o.get("shift") is not None]
            d8 = f"{(at8[0]['shift'] - o['shift']) * 100:+.1f}" if at8 else "-"
            lines.append(f"| {name} | {method} | {smallest('eval', 1)} | {smallest('eval', 3)} | "
                         f"{smallest('shift', 1)} | {smallest('shift', 3)} | {d8} |")
    return lines


def report() -> None:
    res = json.loads(OUT.read_text())
    lines = ["# Refit and distillation on real models", "",
             "Generated by `bench/distill_real.py --report` from `bench/distill_real.json`. Each row is one CLI run "
             "(`--calib NAME.calib.npz --target-macs T --recover refit|distill`, 2-core machine), scored on labelled "
             "data never used for calibration: exact match (recognizers), top-1 (classifier), box hmean (detectors). "
             "`shift` is a split drawn differently from the calibration data.", "",
             "| model | samples | target | method | MACs kept | eval | Δ eval | shift | Δ shift | kept | wall s | peak RSS MB |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for r in sorted(res["rows"], key=lambda r: (r["model"], r["samples"], -r["target"], r["method"])):
        o = res["original"].get(r["model"], {})
        if "error" in r:
            lines.append(f"| {r['model']} | {r['samples']} | {r['target']} | {r['method']} | error: {r['error']} |||||||")
            continue
        de = None if r["eval"] is None or o.get("eval") is None else r["eval"] - o["eval"]
        ds = None if r["shift"] is None or o.get("shift") is None else r["shift"] - o["shift"]
        kept = (r.get("distill") or {}).get("kept", r["method"])
        lines.append(f"| {r['model']} | {r['samples']} | {r['target']} | {r['method']} | {r['macs_kept']:.3f} | "
                     f"{fmt(r['eval'])} | {fmt(de)} | {fmt(r['shift'])} | {fmt(ds)} | {kept} | "
                     f"{'-' if r['wall_s'] is None else round(r['wall_s'])} | {r['peak_rss_mb'] or '-'} |")
    lines += ["", "Originals: " + ", ".join(f"{k} {fmt(v['eval'])} (shift {fmt(v['shift'])})"
                                            for k, v in sorted(res["original"].items())), ""]
    lines += ["## Summary: smallest MACs kept within 1 and 3 points of the original", "", *summary_table(res), ""]
    lines += [f"- {n}" for n in res.get("notes", [])]
    if res.get("speed"):
        lines += ["", "## CPU speedup at the smallest size within 1 point (eval)", "",
                  "`python bench/distill_real.py --speed`: `onnxcompress bench` of the original against that run's written "
                  "model, paired and interleaved, CPU EP. `load` is the 1-minute load average when it ran: on this "
                  "2-core machine the bench's own two threads make about 2; well above that, other jobs shared the "
                  "cores and the figure is noise. `timed file` "
                  "is the run whose written model was timed: the run itself, or, where its file is gone, a run of the "
                  "same target with the same MACs kept (distillation changes weights, never shapes). Where the smallest "
                  "run within 1 point has no file left, the next smallest that has is timed, and `MACs kept` says "
                  "`(smallest x)`.", "",
                  "| model | run | timed file | MACs kept | eval | batch 1 | batch 8 | load |",
                  "|---|---|---|---:|---:|---:|---:|---:|"]
        for name, sp in sorted(res["speed"].items()):
            if "error" in sp:
                lines.append(f"| {name} | error: {sp['error']} |||||||")
                continue
            by = {r["batch"]: r for r in sp["runs"]}
            smallest = sp.get("smallest_within", sp["macs_kept"])
            smaller = f" (smallest {smallest:.1%})" if smallest < sp["macs_kept"] else ""
            cell = lambda b: f"{by[b]['speedup']:.2f}x ({by[b]['pairs']} pairs)" if b in by else "-"  # noqa: E731
            lines.append(f"| {name} | {sp['method']} @ {sp['target']} | {sp.get('timed', sp['method'])} | "
                         f"{sp['macs_kept']:.1%}{smaller} | {sp['eval']:.3f} | "
                         f"{cell(1)} | {cell(8)} | {sp.get('load', float('nan')):.1f} |")
    (ROOT / "bench" / "DISTILL_REAL.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    models = sorted({r["model"] for r in res["rows"]})
    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 3.2), squeeze=False)
    for ax, name in zip(axes[0], models):
        for method, colour in (("refit", "tab:blue"), ("distill-v1", "tab:gray"), ("distill+mix0.5", "tab:orange")):
            rows = sorted((r for r in res["rows"] if r["model"] == name and r["method"] == method and "error" not in r
                           and r["samples"] == base_samples(res, name)), key=lambda r: r["macs_kept"])
            for split, style in (("eval", "o-"), ("shift", "s:")):
                pts = [(r["macs_kept"], r[split]) for r in rows if r.get(split) is not None]
                if pts:
                    ax.plot(*zip(*pts), style, color=colour, label=f"{method} ({split})")
        for split, ls in (("eval", "-"), ("shift", ":")):
            if res["original"].get(name, {}).get(split) is not None:
                ax.axhline(res["original"][name][split], color="gray", lw=0.8, ls=ls, label=f"original ({split})")
        ax.set_title(name)
        ax.set_xlabel("MACs kept")
        ax.invert_xaxis()
    axes[0][0].set_ylabel("accuracy / hmean")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(ROOT / "bench" / "plots" / "distill_real.png", dpi=110)


def main() -> None:
    global OUT
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["ppocr_cls", "ppocr_rec", "ddddocr_common", "ppocr_det"])
    ap.add_argument("--targets", nargs="*", type=float, default=[0.8, 0.6])
    ap.add_argument("--methods", nargs="*", default=["refit", "distill"])
    ap.add_argument("--seconds", type=float, default=300.0, help="--distill-seconds of each distill run")
    ap.add_argument("--samples", type=int, default=None,
                    help="calibration samples: fewer than 128 by --calib-samples, more from NAME.calib<N>.npz "
                    "(bench/real/prepare.py --n-calib-large N); default all 128")
    ap.add_argument("--augment", type=float, default=None, help="--distill-augment of the distill runs (method "
                    "distill+augS in the results; default: the CLI's, 1 with a 0.95 weight average since "
                    "2026-12-06, 0 on detectors. Rows tagged plain distill before then ran with 0 and no average; "
                    "--augment 0 --cli-args '--distill-average 0' --suffix ... runs that way; rows record both)")
    ap.add_argument("--calib-augment", type=float, default=0.0, help="--calib-augment of every run (method "
                    "METHOD+caugS in the results)")
    ap.add_argument("--attention", choices=("heads", "dims"), default="heads",
                    help="--attention of every run (method tagged +dims)")
    ap.add_argument("--mix", type=float, default=None, help="--distill-mix of the distill runs (method tagged "
                    "+mixS); default: the CLI's default")
    ap.add_argument("--lr", type=float, default=None, help="--distill-lr of the distill runs (method tagged +lrX)")
    ap.add_argument("--rounds", type=lambda t: t if t == "auto" else int(t), default=1, help="--allocation-rounds of every run (method tagged +rN)")
    ap.add_argument("--estimate", default="sweep", help="--sensitivity-estimate of every run (method tagged +ESTIMATE "
                    "unless sweep)")
    ap.add_argument("--step-sizes", choices=("relative", "absolute"), default=None,
                    help="--distill-step-sizes of the distill runs (method tagged +rel or +abs)")
    ap.add_argument("--steps", type=int, default=None, help="--distill-steps of the distill runs (method tagged "
                    "+Nsteps); with a large --seconds the runs do the same work on a loaded machine")
    ap.add_argument("--feature-weight", type=float, default=None, help="--distill-feature-weight of the distill runs "
                    "(method tagged +fwW)")
    ap.add_argument("--suffix", default="", help="appended to the method tag of every row (e.g. +ctc: rows measured "
                    "after a change to the code that older rows of the same tag predate)")
    ap.add_argument("--cli-args", default="", help="more options for every CLI run, as one string (e.g. "
                    "'--refit-augment 0'); name them in --suffix, the method tag does not")
    ap.add_argument("--report", action="store_true", help="only write bench/DISTILL_REAL.md and the plot")
    ap.add_argument("--speed", action="store_true", help="only time each model's smallest within-1-point output "
                    "against its original (CPU EP, paired)")
    ap.add_argument("--json", type=Path, default=OUT, help="results file to read and extend (default %(default)s)")
    args = ap.parse_args()
    default_json, OUT = OUT, args.json
    if args.speed:
        speed(args)
    elif not args.report:
        measure(args)
    if OUT.resolve() == default_json.resolve() or args.report:
        report()  # a side results file (--json) is merged by hand: it must not overwrite the report


if __name__ == "__main__":
    main()
