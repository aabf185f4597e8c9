"""Is a better channel allocation what the 0.8x models miss off the calibration data? (issue 15, item 6)

Runs the same CLI command as a ``bench/distill_real.py`` row (``--calib NAME.calib.npz --target-macs T
--recover refit|distill``), with the allocation's drift curves measured another way:

- ``--oracle SPLIT:A:B``: each group's curve is measured on samples A..B of a **labelled** split, and
  a candidate's cost is the accuracy it loses there (CTC-decoded exact match, or top-1), plus
  ``--clean-weight`` times its usual relative-L2 drift squared to break ties: ε² = loss + w · drift².
  No user has those labels; this is the best allocation the sweep could find for that data, so
  what the written model still loses on the *other* samples of the split (B..end) is what channel
  removal at that MACs costs there, whatever the allocation.
- ``--log-domain FLOOR``: softmax outputs are compared as log(max(p, FLOOR)) instead of p, so a
  candidate that erodes the original's margin without flipping its top class costs something (the
  probabilities of a confident model saturate).
- ``--order redundancy|random``: the atoms inside each group are ranked another way
  (``bench/ingroup_order.py``): by the error left after refitting the kept channels, or at random.

Nothing in ``onnxcompress`` changes: the script wraps ``sensitivity.measure`` (or, for ``--order``,
``CalibratedPruning.scores``) for one in-process CLI run. The written model is scored on every split,
and on the two halves of the oracle's split.

    python bench/allocation_oracle.py ppocrv5_rec --oracle shift:0:250 --recover refit
    python bench/allocation_oracle.py ppocrv5_rec --log-domain 1e-4 --recover refit
    python bench/allocation_oracle.py ppocrv5_rec --order redundancy --halves shift:0:250
    python bench/allocation_oracle.py ppocrv5_rec --recover refit        # the plain run, same script

Rows are appended to bench/allocation_oracle.jsonl; the findings are in bench/ALLOCATION_ORACLE.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.distill_real import CACHE, KEPT, meta, scored  # noqa: E402
from bench.real.evaluate import ctc_greedy, predict, read_right  # noqa: E402
from onnxcompress.fidelity import guess_class_axis, in_unit_range  # noqa: E402
from onnxcompress.pruning import calibrated, sensitivity  # noqa: E402

OUT = ROOT / "bench" / "allocation_oracle.jsonl"
#: the drift reference itself (``patched_measure`` replaces the module's name for one call)
PLAIN_REFERENCE = sensitivity.DriftReference


def right_count(m: dict, y: np.ndarray, labels: np.ndarray) -> int:
    """Samples read right from the model's output ``y`` (``evaluate.py``'s rule)."""
    if m["task"] == "classify":
        preds = np.argmax(y.reshape(len(y), -1), axis=1).tolist()
    else:  # the sweep's outputs come joined batch-first whatever the model's layout (``output_join``)
        preds = ctc_greedy(np.argmax(y, axis=2), int(m["blank_index"]))
    return int(read_right(preds, labels, m["task"]).sum())


class OracleReference:
    """A ``DriftReference`` stand-in: ε = sqrt(accuracy lost on the labelled samples + w · drift²)."""

    def __init__(self, m: dict, labels: np.ndarray, weight: float, ref: dict, map_thresholds=None) -> None:
        self.m, self.labels, self.weight = m, labels, weight
        self.clean = PLAIN_REFERENCE(ref, map_thresholds)
        self.base = right_count(m, ref[m["output_name"]], labels) / len(labels)

    def __call__(self, got: dict) -> float:
        loss = self.base - right_count(self.m, got[self.m["output_name"]], self.labels) / len(self.labels)
        return float(np.sqrt(max(loss, 0.0) + self.weight * self.clean(got) ** 2))


class LogReference:
    """A ``DriftReference`` on log(max(p, floor)) - log(floor) of every softmax output (p sums to 1
    along its class axis); other outputs as they are."""

    def __init__(self, floor: float, ref: dict, map_thresholds=None) -> None:
        self.floor = floor
        self.soft = {k for k, a in ref.items() if (ax := guess_class_axis(a)) is not None and in_unit_range(a)
                     and np.allclose(a.sum(axis=ax, dtype=np.float64), 1.0, atol=1e-3)}
        self.inner = PLAIN_REFERENCE(self.log(ref), map_thresholds)

    def log(self, d: dict) -> dict:
        return {k: np.log(np.maximum(v.astype(np.float32), self.floor)) - np.log(self.floor) if k in self.soft else v
                for k, v in d.items()}

    def __call__(self, got: dict) -> float:
        return self.inner(self.log(got))


def patched_measure(args, m: dict):
    """``sensitivity.measure`` with the oracle's samples and reference, or the log-domain reference."""
    original = sensitivity.measure

    def measure(masked, groups, scores, roots, batches, *a, **k):
        if args.oracle:
            split, lo, hi = args.oracle.split(":")
            d = np.load(CACHE / f"{args.model}.{split}.npz")
            x, labels = d[m["input_name"]][int(lo):int(hi)].astype(np.float32), d["labels"][int(lo):int(hi)]
            batches = [{m["input_name"]: x[i:i + 32]} for i in range(0, len(x), 32)]
            make = lambda ref, mt=None: OracleReference(m, labels, args.clean_weight, ref, mt)  # noqa: E731
        else:
            make = lambda ref, mt=None: LogReference(args.log_domain, ref, mt)  # noqa: E731
        sensitivity.DriftReference = make  # measure() builds its reference through this name
        try:
            return original(masked, groups, scores, roots, batches, *a, **k)
        finally:
            sensitivity.DriftReference = PLAIN_REFERENCE

    return measure


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--target", type=float, default=0.8)
    ap.add_argument("--recover", default="refit")
    ap.add_argument("--oracle", metavar="SPLIT:A:B", help="measure the curves on labelled samples A..B of SPLIT")
    ap.add_argument("--clean-weight", type=float, default=0.1, help="w in ε² = loss + w · drift² (default 0.1)")
    ap.add_argument("--log-domain", type=float, metavar="FLOOR", help="compare softmax outputs as log(max(p, FLOOR))")
    ap.add_argument("--halves", metavar="SPLIT:A:B", help="also score samples A..B of SPLIT and the rest apart "
                    "(default: the oracle's)")
    ap.add_argument("--ratio", type=float, help="--ratio R in place of --target-macs (one share from every group)")
    ap.add_argument("--order", choices=("activation", "redundancy", "random"), default="activation",
                    help="the order of atoms inside a group (bench/ingroup_order.py; default: the product's)")
    ap.add_argument("--tag", default=None)
    ap.add_argument("--cli-args", default="", help="more CLI options, as one string")
    args = ap.parse_args()
    m = meta(args.model)
    tag = args.tag or ("oracle-" + args.oracle.replace(":", "-") if args.oracle
                       else f"log{args.log_domain:g}" if args.log_domain
                       else f"ratio{args.ratio:g}" if args.ratio else "plain")
    if args.order != "activation" and not args.tag:
        tag += f"+order-{args.order}"
    out = KEPT / f"{args.model}.{args.target:g}.{args.recover}+{tag}.oracle.onnx"
    rep = Path(tempfile.mkdtemp()) / "report.json"
    shape = ",".join(map(str, (1, *m["input_shape"])))
    argv = [str(CACHE / f"{args.model}.onnx"), "--calib", str(CACHE / f"{args.model}.calib.npz"),
            *(["--ratio", str(args.ratio)] if args.ratio else ["--target-macs", str(args.target)]),
            "--recover", args.recover,
            "--input-shape", f"{m['input_name']}:{shape}", "-o", str(out), "--report", str(rep), "-q",
            *args.cli_args.split()]
    if args.oracle or args.log_domain:
        calibrated.measure = patched_measure(args, m)
    if args.order != "activation":
        from bench.ingroup_order import install

        install(args.order)
    from onnxcompress.cli import main as cli

    t = time.perf_counter()
    rc = cli(argv)
    row = {"model": args.model, "target": None if args.ratio else args.target, "recover": args.recover, "allocation": tag,
           "order": args.order,
           "cli_args": args.cli_args, "rc": rc, "wall_s": round(time.perf_counter() - t, 1),
           "date": time.strftime("%Y-%m-%d")}
    if rc == 0:
        r = json.loads(rep.read_text())
        scored(row, args.model, out, r)  # MACs kept, every split's score and the distillation record
        search = r.get("search") or {"groups": []}
        row["removed"] = {",".join(g["filters"][:2]): g["removed"] for g in search["groups"] if g.get("removed")}
        halves = args.halves or args.oracle
        if halves:
            split, lo, hi = halves.split(":")
            data = np.load(CACHE / f"{args.model}.{split}.npz")
            x, labels = data[m["input_name"]].astype(np.float32), data["labels"]
            for name, path in (("original", CACHE / f"{args.model}.onnx"), ("written", out)):
                right = read_right(predict(str(path), x, m), labels, m["task"])
                row[f"{name}_{split}_measured_on"] = round(float(right[int(lo):int(hi)].mean()), 4)
                row[f"{name}_{split}_rest"] = round(float(np.delete(right, np.s_[int(lo):int(hi)]).mean()), 4)
    print(json.dumps(row), flush=True)
    with OUT.open("a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
