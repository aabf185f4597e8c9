"""``onnxcompress sensitivity``: how much each channel group hurts the outputs, measured on real inputs.

For every prunable group and every ratio, the group alone is pruned (its lowest-scoring
atoms replaced by their calibrated means, as bias compensation would) and the model's
outputs are compared with the unpruned ones on the calibration data. One onnxruntime
session serves every measurement; the cost is groups x ratios passes over the data, and
the report states it. The table ranks groups from the most to the least sensitive.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from onnxcompress.options_parser import OptionsParser
from onnxcompress.config import DEFAULT_ROUND_TO, CompressConfig
from onnxcompress.pruning.sensitivity import RATIOS


@dataclass
class SensitivityReport:
    model: str
    calibration: dict
    ratios: list[float]
    criterion: str
    groups: list[dict] = field(default_factory=list)
    cost: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def sensitivity(model_or_path, config: CompressConfig, ratios=RATIOS, on_progress=None) -> SensitivityReport:
    """Measure ε per group and ratio on ``config.calib`` (the fit split; nothing is written)."""
    from onnxcompress.analysis.shapes import ShapeOracle, resolve_input_shapes
    from onnxcompress.calibration import load_calibration
    from onnxcompress.context import CompressContext
    from onnxcompress.io import load_model
    from onnxcompress.passes.prune import analyse_for_pruning
    from onnxcompress.pipeline import build_passes
    from onnxcompress.pruning.calibrated import CalibratedPruning
    from onnxcompress.pruning.plan import macs_per_atom, make_plan
    from onnxcompress.pruning.sensitivity import MaskedModel, measure
    from onnxcompress.report import CompressReport, ModelStats

    config.validate()
    t0 = time.perf_counter()
    model = load_model(model_or_path)
    shapes_in = resolve_input_shapes(model, config.input_shapes)
    cal = load_calibration(config.calib, model, config.calib_image, limit=config.calib_samples)
    # The lossless folds first, so the groups are the ones compress would prune.
    scratch = CompressReport(input=None, output=None, config={}, before=ModelStats(0, 0, 0), after=ModelStats(0, 0, 0))
    ctx = CompressContext(config=replace(config, ratio=0.0, target_macs=None, simplify=False), input_shapes=shapes_in,
                          report=scratch, source=model)
    for p in build_passes(ctx, verify=False):
        model = p(model).model
    oracle = ShapeOracle()
    analysis, shapes, tensors = analyse_for_pruning(model, oracle, shapes_in, config)
    batches = list(cal.batches())
    helper = CalibratedPruning(model, analysis, shapes, fit=batches, held=[], recover=config.resolved_recover(True))
    helper.prepare()
    criterion = config.resolved_criterion(True)
    data_scores = helper.scores(analysis.uf.all_roots()) if criterion == "activation" else None
    base = make_plan(analysis, tensors, replace(config, ratio=0.0), data_scores=data_scores)
    if not base.groups:  # an empty table and an empty plot said nothing
        from onnxcompress.errors import InputError
        from onnxcompress.pruning.nothing_to_prune import nothing_to_prune

        why = (f"nothing to measure: every channel group ({base.blocked_groups}) is blocked (`onnxcompress inspect "
               "MODEL --groups` lists the blockers)" if base.blocked_groups
               else nothing_to_prune(model).replace("nothing to prune", "nothing to measure"))
        raise InputError(f"sensitivity: {why}")
    per_atom, total = macs_per_atom(analysis, base, shapes)
    t = time.perf_counter()
    masked = MaskedModel(helper.reference, analysis, helper.stats, shapes)
    sens = measure(masked, base.groups, base.scores, base.roots, batches, per_atom, config.round_to, tuple(ratios),
                   progress=on_progress, map_thresholds=config.map_thresholds)
    measure_s = time.perf_counter() - t
    rows = []
    for g in sens:
        d = g.to_dict()
        # the share of all MACs in the convs that shrink with this group (filters and consumers)
        d["macs_share"] = g.macs_per_atom * g.atoms / total if total else 0.0
        # An unmeasured group (drift None) ranks first: its damage is unknown, not zero.
        d["drift_at_half"] = (None if g.unmeasured else
                              next((c["drift"] for c in d["curve"] if c["ratio"] >= 0.5), d["curve"][-1]["drift"] if d["curve"] else 0.0))
        rows.append(d)
    rows.sort(key=lambda d: -(float("inf") if d["drift_at_half"] is None else d["drift_at_half"]))
    passes = 1 + sum(len({c["removed"] for c in d["curve"]}) for d in rows)
    return SensitivityReport(
        model=str(model_or_path) if not hasattr(model_or_path, "graph") else "(in memory)",
        calibration={"source": cal.source, "samples": cal.samples, "fixed_batch": cal.fixed_batch},
        ratios=list(ratios),
        criterion=criterion,
        groups=rows,
        cost={
            "wall_s": time.perf_counter() - t0,
            "measure_s": measure_s,
            "statistics_s": helper.report.get("statistics_s", 0.0),
            "passes_over_calibration_data": passes,
            "groups": len(rows),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        },
    )


def plot(report: SensitivityReport, path: str | Path, top: int = 12) -> None:
    """ε against ratio for the most sensitive groups (matplotlib, the ``bench`` extra)."""
    from onnxcompress.errors import InputError

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("--plot needs matplotlib: pip install 'onnxcompress[bench]'") from None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for d in report.groups[:top]:
        xs = [c["ratio"] for c in d["curve"]]
        ys = [c["drift"] for c in d["curve"]]
        label = d["filters"][0] + (f" +{len(d['filters']) - 1}" if len(d["filters"]) > 1 else "")
        ax.plot(xs, ys, marker="o", label=label[-40:])
    ax.set_xlabel("fraction of the group's channels removed")
    ax.set_ylabel("output drift ε (relative L2)")
    ax.set_title(f"sensitivity on {report.calibration['samples']} calibration samples")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sensitivity_parser() -> OptionsParser:
    from onnxcompress.cli_args import add_attention_arg, add_block_op_arg, add_calib_args, add_common, add_shape_arg

    p = OptionsParser(
        prog="onnxcompress sensitivity",
        description="Measure how much pruning each channel group alone costs the model's outputs on real inputs "
        "(relative L2 drift per group and ratio), and rank the groups. Needs --calib. Nothing is written but reports.",
        epilog="example:\n  onnxcompress sensitivity model.onnx --calib calib.npz --json sens.json --plot sens.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="input .onnx file")
    p.add_argument("--ratios", default=",".join(str(r) for r in RATIOS),
                   help=f"fractions of each group tried, comma-separated (default {','.join(str(r) for r in RATIOS)})")
    p.add_argument("--criterion", choices=["auto", "l1", "l2", "activation"], default="auto",
                   help="which channels go first within a group (default auto: activation)")
    p.add_argument("--round-to", type=int, default=DEFAULT_ROUND_TO, help=f"channel multiple (default {DEFAULT_ROUND_TO})")
    p.add_argument("--top", type=int, default=20, help="groups shown in the table (default 20; all in the JSON)")
    p.add_argument("--json", metavar="FILE", help="write the full report as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="plot drift against ratio for the most sensitive groups")
    add_shape_arg(p)
    add_block_op_arg(p)
    add_attention_arg(p)
    add_calib_args(p)
    add_common(p)
    return p


def run_sensitivity(argv: list[str]) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from onnxcompress.analysis.shapes import parse_input_shapes
    from onnxcompress.calibration import ImageSpec
    from onnxcompress.cli_args import parse_map_thresholds
    from onnxcompress.errors import InputError
    from onnxcompress.render import make_console

    from onnxcompress.paths import require_regular_file, validate_outputs, write_text

    args = sensitivity_parser().parse_args(argv)
    require_regular_file(args.model, "input model")
    validate_outputs([args.calib], {"--json": args.json, "--plot": args.plot}, models=[args.model])
    if not args.calib:
        raise InputError("sensitivity needs real inputs: --calib PATH")
    try:
        ratios = tuple(sorted(float(r) for r in args.ratios.split(",") if r.strip()))
    except ValueError:
        raise InputError(f"--ratios: expected numbers like 0.25,0.5, got {args.ratios!r}") from None
    if not ratios or not all(0 < r < 1 for r in ratios):
        raise InputError(f"--ratios must be in (0, 1), got {args.ratios!r}")
    config = CompressConfig(
        criterion=args.criterion, round_to=args.round_to, input_shapes=parse_input_shapes(args.input_shape),
        block_ops=args.block_op, attention=args.attention, calib=args.calib, calib_samples=args.calib_samples,
        calib_image=ImageSpec.parse(args.calib_image) if args.calib_image else None,
        map_thresholds=parse_map_thresholds(args.map_threshold),
    )
    console = make_console(args.quiet)
    with Progress(TextColumn("measuring"), BarColumn(), TextColumn("{task.completed}/{task.total} runs"),
                  TimeRemainingColumn(), console=console, disable=args.quiet, transient=True) as bar:
        task = bar.add_task("sensitivity", total=None)
        report = sensitivity(args.model, config, ratios, on_progress=lambda done, total: bar.update(task, completed=done, total=total))
    t = Table(title=f"Sensitivity: {Path(args.model).name} ({report.calibration['samples']} calibration samples)",
              header_style="bold")
    t.add_column("#", justify="right")
    t.add_column("group (filters)", overflow="fold")
    t.add_column("channels", justify="right")
    t.add_column("MACs touched", justify="right")
    for r in ratios:
        t.add_column(f"ε @ {r:g}", justify="right")
    for i, d in enumerate(report.groups[: args.top]):
        by_ratio = {c["ratio"]: c["drift"] for c in d["curve"]}
        names = d["filters"]
        shown = ", ".join(names[:2]) + (f" +{len(names) - 2}" if len(names) > 2 else "")
        cells = ([f"{by_ratio[r]:.4f}" if r in by_ratio else "-" for r in ratios] if not d.get("unmeasured")
                 else ["not measured"] + [""] * (len(ratios) - 1))
        t.add_row(str(i + 1), shown, str(d["atoms"]), f"{d['macs_share']:.1%}", *cells)
    console.print(t)
    c = report.cost
    console.print(f"cost: {c['wall_s']:.1f} s wall ({c['measure_s']:.1f} s measuring), {c['passes_over_calibration_data']} "
                  f"passes over the data, peak RSS {c['peak_rss_mb']:.0f} MB; ranking: {report.criterion}")
    if args.json:
        write_text(args.json, report.to_json())
    if args.plot:
        plot(report, args.plot)
        console.print(f"wrote {args.plot}")
    return 0
