"""SafeConsole: data (names, paths) prints as written; our own markup still styles."""

from __future__ import annotations

import io

import numpy as np
import onnx
from onnx import helper as h
from onnx import numpy_helper as nh
from rich.markup import escape
from rich.table import Table

from onnxcompress.render import SafeConsole


def _printed(*items) -> str:
    buf = io.StringIO()
    console = SafeConsole(file=buf, width=100, force_terminal=False)
    for item in items:
        console.print(item)
    return buf.getvalue()


def test_brackets_and_control_characters_in_data_print_as_written():
    out = _printed("[yellow]warning:[/yellow] node conv[1] in a[/x]/m.onnx, name x\x1b[31m")
    assert out == "warning: node conv[1] in a[/x]/m.onnx, name x\\x1b[31m\n"


def test_our_tags_and_already_escaped_text_are_unchanged():
    assert _printed("[bold]total[/bold] " + escape("[escaped]"), "[red]FAIL[/red]\nline 2") == "total [escaped]\nFAIL\nline 2\n"


def test_table_cells_and_titles_keep_their_brackets():
    t = Table(title="t [1]")
    t.add_column("name")
    t.add_row("conv[x]")
    t.add_row("[green]PASS[/green]")
    out = _printed(t)
    assert "t [1]" in out and "conv[x]" in out and "PASS" in out and "[green]" not in out


def test_inspect_prints_a_bracketed_node_name(tmp_path, capsys):
    from onnxcompress.cli import main

    w = nh.from_array(np.ones((2, 3, 1, 1), np.float32), "w")
    node = h.make_node("Conv", ["x", "w"], ["y"], name="features[0]")
    g = h.make_graph([node], "g", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 4, 4])],
                     [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2, 4, 4])], [w])
    path = tmp_path / "m[1].onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), path)
    assert main(["inspect", str(path)]) == 0
    assert "features[0]" in capsys.readouterr().out


def test_a_refusal_in_markdown_lists_every_probe_even_one_that_never_ran():
    """A speed probe whose pruning was itself refused has no MACs or speedup: its row says why, and a
    collapsed search probe says so; nothing in the Markdown of a refusal may raise (it would mask it)."""
    from onnxcompress.errors import BudgetError
    from onnxcompress.render import refusal_markdown

    speed = BudgetError("--target-speedup 3 on cpu at batch 1: no candidate reached it", measured={
        "target_speedup": 3.0, "provider": "cpu", "batch": 1,
        "probes": [{"target_macs": 0.333, "macs_kept": 0.3312, "speedup": 1.9, "reached": False},
                   {"target_macs": 0.2, "macs_kept": None, "speedup": None, "error": "collapsed"}]})
    text = refusal_markdown("m.onnx", speed).splitlines()
    assert text[:3] == ["## onnxcompress: m.onnx: refused, nothing written", "",
                        "> --target-speedup 3 on cpu at batch 1: no candidate reached it"]
    assert "| 0.333 | 33.1% | 1.90x | no |" in text and "| 0.200 | - | - | no: collapsed |" in text
    budget = BudgetError("no candidate met the budget", measured={
        "budget": {"metric": "1 - top-1 agreement", "limit": 0.01},
        "probes": [{"target_macs": 0.5, "macs_kept": None, "value": None, "fits": False, "collapsed": "under the floor"},
                   {"target_macs": 0.7, "macs_kept": 0.688, "value": 0.03125, "fits": False}]})
    text = refusal_markdown("m.onnx", budget).splitlines()
    assert "Budget: 1 - top-1 agreement <= 0.01." in text
    assert "| 0.500 | collapsed | - | no |" in text and "| 0.700 | 68.8% | 0.0312 | no |" in text
    assert refusal_markdown("m.onnx", ValueError("plain")).splitlines()[2] == "> plain"
