"""What ``onnxcompress check`` found, and its renderings: JSON, JUnit XML, Markdown, terminal.

JUnit has one testcase per gate (CI systems count and display them); Markdown is one
table of gates plus the before/after figures, made to be appended to
``$GITHUB_STEP_SUMMARY``.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from onnxcompress.gates import Criterion, describe, fmt
from onnxcompress.versions import library_versions

#: property names of ungated measurements in JUnit
_MEASURE = {"min_cosine": "cosine_min", "max_abs_diff": "max_abs_diff", "min_top1": "top1_agreement",
            "min_agreement": "agreement", "min_map_f1": "map_f1", "min_speedup": "speedup", "max_macs_ratio": "macs_ratio",
            "max_params_ratio": "params_ratio", "max_size_mb": "size_mb", "min_accuracy": "accuracy",
            "max_accuracy_drop": "accuracy_drop"}


@dataclass
class CheckReport:
    model: str
    compressed: str
    criteria: list[Criterion] = field(default_factory=list)
    fidelity: dict | None = None
    #: the speed gate: interval, looks, verdict, provider and batch (see ``speedgate``)
    speedup: dict | None = None
    macs: dict | None = None
    #: params, MACs and file bytes of both models: {"original": {...}, "compressed": {...}}
    figures: dict | None = None
    accuracy: dict | None = None
    #: {"path", "sha256"} of the recipe the thresholds came from
    recipe: dict | None = None
    seconds: float = 0.0
    #: what the gates did not ask about but the user should know (a collapsed model, ungated)
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.criteria if c.gated)

    @property
    def failed(self) -> list[Criterion]:
        return [c for c in self.criteria if c.gated and not c.passed]

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "compressed": self.compressed,
            "passed": self.passed,
            "criteria": [c.to_dict() for c in self.criteria],
            "fidelity": self.fidelity,
            "speedup": self.speedup,
            "macs": self.macs,
            "figures": self.figures,
            "accuracy": self.accuracy,
            "recipe": self.recipe,
            "seconds": self.seconds,
            "warnings": self.warnings,
            "versions": library_versions(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_junit(self) -> str:
        """JUnit XML: one testcase per gated criterion; ungated measurements as properties."""
        gated = [c for c in self.criteria if c.gated]
        suites = ET.Element("testsuites")
        suite = ET.SubElement(
            suites, "testsuite", name="onnxcompress.check", tests=str(len(gated)),
            failures=str(len(self.failed)), errors="0", skipped="0", time=f"{self.seconds:.3f}",
        )
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="model", value=self.model)
        ET.SubElement(props, "property", name="compressed", value=self.compressed)
        if self.recipe:
            ET.SubElement(props, "property", name="recipe", value=self.recipe["path"])
            ET.SubElement(props, "property", name="recipe_sha256", value=self.recipe["sha256"])
        for c in self.criteria:
            if not c.gated and c.value is not None:
                ET.SubElement(props, "property", name=_MEASURE.get(c.name, c.name), value=fmt(c.value))
        if self.speedup:
            for k in ("verdict", "ci_low", "ci_high", "confidence", "pairs", "provider", "batch"):
                v = self.speedup.get(k)
                ET.SubElement(props, "property", name=f"speedup_{k}", value="-" if v is None else str(v))
        for c in gated:
            case = ET.SubElement(suite, "testcase", classname="onnxcompress.check", name=c.name, time="0")
            text = describe(c)
            if not c.passed:
                ET.SubElement(case, "failure", message=text, type="GateFailed").text = c.message or text
            else:
                ET.SubElement(case, "system-out").text = text
        ET.indent(suites)
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"

    def to_markdown(self) -> str:
        """A summary: verdict, a table of every criterion, before/after figures, fidelity."""
        from onnxcompress.render import human

        head = "PASS" if self.passed else f"FAIL ({len(self.failed)} gate(s))"
        lines = [f"### onnxcompress check: {head}", "",
                 f"`{Path(self.compressed).name}` against `{Path(self.model).name}`", "",
                 "| criterion | value | threshold | verdict |", "|---|---:|---:|---|"]
        for c in self.criteria:
            verdict = "info" if not c.gated else "✅ pass" if c.passed else "❌ **fail**"
            note = f" {c.message}" if c.message else ""
            thr = f"{c.op} {fmt(c.threshold)}" if c.gated and c.name != "loads_and_runs" else ""
            lines.append(f"| {c.label} (`{c.name}`) | {_value(c)} | {thr} | {verdict}{_md(note)} |")
        if self.figures:
            a, b = self.figures["original"], self.figures["compressed"]
            lines += ["", "| | original | compressed | kept |", "|---|---:|---:|---:|"]
            for key, label, unit in (("params", "params", ""), ("macs", "MACs", ""), ("file_bytes", "file size", "B")):
                x, y = a.get(key), b.get(key)
                kept = f"{y / x:.1%}" if x and y is not None else "-"
                lines.append(f"| {label} | {human(x, unit) if x is not None else '-'} | "
                             f"{human(y, unit) if y is not None else '-'} | {kept} |")
        if self.fidelity:
            f = self.fidelity
            parts = [f"min cosine {fmt(f.get('cosine_min'))}", f"max abs diff {fmt(f.get('max_abs_diff'))}"]
            if f.get("top1_agreement") is not None:
                parts.append(f"top-1 agreement {f['top1_agreement']:.2%}")
            lines += ["", f"Fidelity on {f.get('inputs', 'random')} inputs: " + ", ".join(parts) + "."]
        if self.accuracy:
            acc = self.accuracy
            lines.append(f"Accuracy on {acc['samples']} labelled samples: {acc['original']:.2%} → "
                         f"{acc['compressed']:.2%} (drop {acc['drop']:.2%}).")
        if self.recipe:
            lines.append(f"Recipe `{self.recipe['path']}` (sha256 `{self.recipe['sha256'][:12]}`).")
        return "\n".join(lines) + "\n"


def _value(c: Criterion) -> str:
    if c.name == "loads_and_runs":
        return "yes" if c.value else "no"
    return fmt(c.value)


def _md(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def render_check(report: CheckReport, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=f"onnxcompress check: {Path(report.compressed).name} vs {Path(report.model).name}",
              header_style="bold")
    for col, just in (("criterion", "left"), ("value", "right"), ("required", "right"), ("result", "left")):
        t.add_column(col, justify=just)
    for c in report.criteria:
        if not c.gated:
            result = "[dim]info[/dim]"
        else:
            result = "[green]PASS[/green]" if c.passed else "[red]FAIL[/red]"
        if c.message:
            result += f" {escape(c.message)}"
        req = f"{c.op} {fmt(c.threshold)}" if c.gated and c.name != "loads_and_runs" else ""
        t.add_row(c.label, _value(c), req, result)
    console.print(t)
    n = sum(c.gated for c in report.criteria)
    bad = len(report.failed)
    for w in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(w)}")
    if not bad:
        console.print("[green]all gates passed[/green]" + (" [yellow](see the warning above)[/yellow]" if report.warnings else ""))
    else:
        console.print(f"[red]{bad} of {n} gate(s) failed[/red]")
