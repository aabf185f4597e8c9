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
