"""Terminal rendering of reports with rich. Only the CLI calls this."""

from __future__ import annotations

from collections import Counter

import re

from rich.console import Console
from rich.table import Table

from onnxcompress.cli_env import clean
from onnxcompress.report import CompressReport, InspectReport


#: the only markup tags our own messages use; any other "[" comes from data (a node name, a path)
_DATA_BRACKET = re.compile(r"(?<!\\)\[(?!/?(?:bold|dim|red|green|yellow)\])")


class SafeConsole(Console):
    """A console whose text is made safe before rich reads it.

    Every string rich prints (a ``print`` argument, a table title, a cell) passes through
    ``render_str``. There, control characters are escaped (``cli_env.clean``, line breaks
    kept), so a model path or an input name holding ESC or CR cannot reach the terminal raw;
    and every ``[`` that does not open one of our own tags is escaped, so a node named
    ``conv[1]`` or a path with ``[/x]`` prints as written instead of being read as markup.
    """

    def render_str(self, text: str, *args, **kwargs):  # type: ignore[override]
        return super().render_str(_DATA_BRACKET.sub(r"\\[", clean(text, keep_newlines=True)), *args, **kwargs)


def make_console(quiet: bool = False) -> Console:
    """A console for the CLI: the terminal's width, or 120 columns when output goes to a file or CI log."""
    import sys

    width = None if sys.stdout.isatty() else 120
    return SafeConsole(quiet=quiet, stderr=False, width=width)


def human(n: float, unit: str = "") -> str:
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{int(n)}{unit}" if float(n).is_integer() else f"{n:.3g}{unit}"


def render_inspect(report: InspectReport, console: Console) -> None:
    table = Table(title="Layers", show_lines=False, header_style="bold", expand=False)
    for col, just in (("name", "left"), ("op", "left"), ("out shape", "left"), ("params", "right"), ("MACs", "right"), ("RF (size, jump)", "right")):
        table.add_column(col, justify=just, overflow="fold")
    for layer in report.layers:
        rf = layer.receptive_field
        table.add_row(
            layer.name,
            layer.op,
            "x".join(str(d) for d in layer.out_shape) if layer.out_shape else "?",
            human(layer.params) if layer.params else "",
            human(layer.macs) if layer.macs else "",
            f"{rf[0]:g}, {rf[1]:g}" if rf else "",
        )
    console.print(table)
    if report.groups is not None:
        g = Table(title="Channel groups (pruned together)", header_style="bold")
        g.add_column("#", justify="right")
        g.add_column("channels", justify="right")
        g.add_column("filters", overflow="fold")
        g.add_column("outcome", overflow="fold")
        for i, grp in enumerate(report.groups):
            names = grp["filters"]
            shown = ", ".join(names[:4]) + (f", ... {len(names) - 4} more" if len(names) > 4 else "")
            outcome = grp.get("outcome", "exact")
            if outcome == "lossy":
                ops = Counter(x["op"] for x in grp.get("lossy_at", []))
                outcome = "lossy, needs --calib: " + ", ".join(f"{n} {op}" for op, n in sorted(ops.items()))
            channels = str(grp["channels"])
            if grp.get("unit") == "head":
                channels += f" ({grp['prunable_units']} heads)"
            g.add_row(str(i), channels, shown, outcome)
        console.print(g)
        for bl in report.blockers or []:
            console.print(f"  blocked at {bl['node']} ({bl['op']}): {bl['reason']}")
    shapes = ", ".join(f"{k}:{'x'.join(map(str, v))}" for k, v in report.input_shapes.items())
    for w in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")
    console.print(
        f"[bold]total[/bold]  params {human(report.params)} ({report.params:,})  "
        f"MACs {human(report.macs)} ({report.macs:,})  file {human(report.file_bytes, 'B')}  inputs {shapes}"
    )


def _ratio(a: float, b: float) -> str:
    return f"{b / a:.1%}" if a else "-"


def render_compress(report: CompressReport, console: Console) -> None:
    t = Table(title="onnxcompress", header_style="bold")
    t.add_column("")
    t.add_column("before", justify="right")
    t.add_column("after", justify="right")
    t.add_column("kept", justify="right")
    b, a = report.before, report.after
    t.add_row("params", human(b.params), human(a.params), _ratio(b.params, a.params))
    t.add_row("MACs", human(b.macs), human(a.macs), _ratio(b.macs, a.macs))
    t.add_row("file", human(b.file_bytes, "B"), human(a.file_bytes, "B"), _ratio(b.file_bytes, a.file_bytes))
    console.print(t)
    g = report.groups
    line = f"groups: {g.get('total', 0)} total, {g.get('pruned', 0)} pruned, {g.get('blocked', 0)} blocked"
    if report.pruned_l1_mass:
        line += f"  |  L1 mass removed {report.pruned_l1_mass:.1%}"
    console.print(line)
    if report.calibration:
        c = report.calibration
        copies = f" + {c['fit_perturbed_copies']} perturbed copies" if c.get("fit_perturbed_copies") else ""
        console.print(f"calibration: {c['samples']} samples from {c['source']} ({c['fit_samples']} fit{copies}, "
                      f"{c['held_out_samples']} held out)  |  ranking: {report.importance.get('criterion')}")
        for note in c.get("notes", []):
            console.print(f"calibration: {note}")
    if report.recovery:
        r = report.recovery
        kept = sum(1 for ly in r.get("layers", []) if ly.get("kept"))
        line = f"recovery: {r['method']}, held-out drift (rel. L2) {r['drift_before_refit']:.4f}"
        if r["method"] in ("refit", "distill"):
            line += f" -> {r['drift_after_refit']:.4f} after refitting {kept} of {len(r.get('layers', []))} layer(s)"
        console.print(line)
        d = r.get("distill")
        if d and "steps" in d:
            won = "distillation kept" if d["kept"] == "distill" else "refit kept (distillation did not improve it)"
            console.print(f"distillation: {d['steps']} steps in {d['seconds']:.0f} s, best at step {d['best_step']}; "
                          f"held-out task drift {d['held_out_drift_refit']:.4f} (refit) -> {d['held_out_drift_distill']:.4f}"
                          f": {won}" + ("; interrupted" if d.get("interrupted") else ""))
            if d.get("ctc_heads"):
                console.print("distillation: CTC heads also trained on the original's readings "
                              f"(weight {d['ctc_weight']:g}): " + ", ".join(f"{o} (blank {b})" for o, b in d["ctc_heads"].items()))
    if report.search and report.search.get("target_macs") is not None:
        s = report.search
        rounds = s.get("rounds") or []
        console.print(f"allocation: target MACs {s['target_macs']:.0%}, per-group ratios from measured drift "
                      f"({len(s.get('groups', []))} groups, {s.get('sensitivity_s', 0):.1f} s"
                      + (f"; {len(rounds)} rounds: " + ", ".join(f"{r['target_macs']:.0%}" for r in rounds) if rounds else "")
                      + ")")
        choice = s.get("rounds_choice")
        if choice:
            seen = ", ".join(f"{c['rounds']}: " + (f"{c['held_out_drift']:.4f}" if c.get("held_out_drift") is not None
                                                    else "collapsed") for c in choice["candidates"])
            console.print(f"allocation rounds (auto): {choice['chosen']} kept; held-out drift by rounds {seen}")
    if report.search and report.search.get("target_speedup") is not None:
        s = report.search
        m = s["measured_speedup"]
        console.print(f"speed target: {s['target_speedup']:g}x on {s['provider']} at batch {s['batch']}; "
                      f"{len(s['speed_probes'])} MACs target(s) timed, chose {s['chosen_target_macs']:.2f}; the written "
                      f"model measured {m['speedup']:.2f}x (95% interval {m['low']:.2f}-{m['high']:.2f}, {m['pairs']} "
                      f"pairs, {m['original_ms']:.2f} -> {m['candidate_ms']:.2f} ms)")
    if report.search and report.search.get("probes"):
        s = report.search
        console.print(f"budget: {s['budget']['metric']} <= {s['budget']['limit']}; {len(s['probes'])} candidate(s) "
                      f"measured, stopped by {s['stopped_by']}")
    if report.fidelity:
        console.print(fidelity_line(report.fidelity))
    if report.exactness.get("note"):
        line = f"exactness: {report.exactness['note']}"
        measured = report.exactness.get("measured_vs_zero_mode")
        if measured:
            line += f"; measured vs zero mode: min cosine {measured['cosine_min']:.6f}, max |diff| {measured['max_abs_diff']:.3g}"
        console.print(line)
    for lossy in report.exactness.get("lossy") or []:
        console.print(f"  lossy: {lossy['node']} ({lossy['op']}): {lossy['reason']}")
    outputs = [bl for bl in report.blockers if bl.reason.startswith("channels reach graph output")]
    others = [bl for bl in report.blockers if bl not in outputs]
    if outputs:
        console.print(f"kept: channels feeding {len(outputs)} graph output(s) (--prune-outputs to allow)")
    if others:
        shown = others[:8]
        console.print(f"[yellow]{len(others)} blocker(s)[/yellow] kept channels unpruned:")
        for bl in shown:
            console.print(f"  {bl.node} ({bl.op}): {bl.reason}")
        if len(others) > len(shown):
            console.print(f"  ... {len(others) - len(shown)} more in the JSON report")
    for w in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")
    if report.output:
        console.print(f"wrote {report.output}")


def fidelity_line(f: dict) -> str:
    """One line of fidelity: task agreement first, then cosine and max-abs, and where it was measured."""
    where = f"{f.get('samples', 0)} held-out calibration samples" if f.get("inputs") == "calibration" else "random inputs"
    parts = []
    if f.get("sequence_agreement") is not None:
        parts.append(f"sequence agreement {f['sequence_agreement']:.1%}")
    if f.get("top1_agreement") is not None:
        parts.append(f"top-1 agreement {f['top1_agreement']:.1%}")
    elif f.get("agreement") is not None:
        parts.append(f"per-position agreement {f['agreement']:.1%}")
    if f.get("anchor_cosine") is not None:
        parts.append(f"box cosine at confident anchors {f['anchor_cosine']:.4f}")
    parts.append(f"rel. L2 {f.get('rel_l2_max', 0):.3g}, min cosine {f['cosine_min']:.6f}, max |diff| {f['max_abs_diff']:.3g}")
    line = f"fidelity vs input on {where}: " + ", ".join(parts)
    if f.get("inputs") == "random":
        line += " (random inputs do not predict accuracy: give --calib)"
    return line


def compress_markdown(report: CompressReport) -> str:
    """The compression report as Markdown (for a PR comment or a CI summary)."""
    b, a = report.before, report.after
    lines = [
        f"## onnxcompress: {report.input or 'model'}",
        "",
        "| | before | after | kept |",
        "|---|---:|---:|---:|",
        f"| params | {b.params:,} | {a.params:,} | {_ratio(b.params, a.params)} |",
        f"| MACs | {b.macs:,} | {a.macs:,} | {_ratio(b.macs, a.macs)} |",
        f"| file | {b.file_bytes:,} B | {a.file_bytes:,} B | {_ratio(b.file_bytes, a.file_bytes)} |",
        "",
        f"Groups: {report.groups.get('total', 0)} total, {report.groups.get('pruned', 0)} pruned, "
        f"{report.groups.get('blocked', 0)} blocked. L1 mass removed: {report.pruned_l1_mass:.1%}.",
    ]
    if report.fidelity:
        lines.append(_fidelity_sentence(report.fidelity))
    if report.exactness.get("note"):
        lines.append(f"Exactness: {report.exactness['note']}.")
    if report.blockers:
        lines += ["", "| blocked at | op | reason |", "|---|---|---|"]
        lines += [f"| `{bl.node}` | {bl.op} | {bl.reason} |" for bl in report.blockers]
    if report.layers:
        lines += ["", "| layer | op | channels before | after |", "|---|---|---:|---:|"]
        lines += [f"| `{ly.name}` | {ly.op} | {ly.before} | {ly.after} |" for ly in report.layers]
    for w in report.warnings:
        lines.append(f"\n> warning: {w}")
    return "\n".join(lines) + "\n"


def refusal_markdown(model_path: str, exc: Exception) -> str:
    """A refused compression (exit 1, nothing written) as Markdown, for the same PR comment or CI
    summary a written model's ``--markdown`` fills: why, every probe the search measured, and the
    refused model's own fidelity and warnings where there is one (a collapsed model's)."""
    lines = [f"## onnxcompress: {model_path}: refused, nothing written", "", f"> {exc}"]
    measured = getattr(exc, "measured", None) or {}
    probes = measured.get("probes") or []
    if "target_speedup" in measured:
        lines += ["", f"Wanted {measured['target_speedup']:g}x on {measured.get('provider')} at batch "
                  f"{measured.get('batch')}.", "", "| target MACs | MACs kept | speedup | reached |", "|---:|---:|---:|---|"]
        lines += [f"| {p['target_macs']:.3f} | {_share(p.get('macs_kept'))} | "
                  + (f"{p['speedup']:.2f}x | {'yes' if p.get('reached') else 'no'} |" if p.get("speedup") is not None
                     else f"- | no: {p.get('error', 'not timed')} |") for p in probes]
    elif probes:
        b = measured.get("budget") or {}
        lines += ["", f"Budget: {b.get('metric')} <= {b.get('limit')}.", "",
                  "| target MACs | MACs kept | measured | fits |", "|---:|---:|---:|---|"]
        lines += [f"| {p['target_macs']:.3f} | collapsed | - | no |" if p.get("collapsed") else
                  f"| {p['target_macs']:.3f} | {_share(p.get('macs_kept'))} | {p['value']:.4f} | {'yes' if p['fits'] else 'no'} |"
                  for p in probes]
    for c in measured.get("rounds_choice") or []:
        lines.append(f"\n{c['rounds']} allocation round(s): " + (f"collapsed: {c['collapsed']}" if c.get("collapsed")
                     else f"held-out {c.get('metric')} {c.get('held_out_drift'):.4f}"))
    report = getattr(exc, "report", None)
    if report is not None:
        b, a = report.before, report.after
        lines += ["", f"The refused model kept {_ratio(b.macs, a.macs)} of the MACs."]
        if report.fidelity:
            lines.append(_fidelity_sentence(report.fidelity))
        lines += [f"\n> warning: {w}" for w in report.warnings]
    return "\n".join(lines) + "\n"


def _share(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def _fidelity_sentence(f: dict) -> str:
    """``fidelity_line`` as a Markdown sentence: capitalised, with a full stop."""
    line = fidelity_line(f)
    return line[0].upper() + line[1:] + "."
