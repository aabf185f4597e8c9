"""The layout's promises: an acyclic import graph, one onnxruntime module, a registry that explains itself."""

from __future__ import annotations

import ast
from pathlib import Path

import onnx
import onnx.helper as h
import pytest

import onnxcompress as oc
from onnxcompress.channels.rules import BLOCK_OPS_ENV, USER_BLOCK_REASON, entries, lookup, registered_ops

PKG = Path(oc.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        if p.name.endswith("_test.py"):
            continue
        rel = p.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(path: Path, mods: dict[str, Path]) -> set[str]:
    """Every onnxcompress module ``path`` imports, at any depth of its code (lazy imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("onnxcompress"):
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("onnxcompress")]
        found.update(n for n in names if n in mods)
    return found


def test_import_graph_is_acyclic():
    """Lazy (function-level) imports count too: a cycle there is still a tangle."""
    mods = _modules()
    graph = {m: _imports(p, mods) - {m} for m, p in mods.items()}
    # A package's __init__ importing its own submodules (a registry filled by import) is not a cycle.
    for m in graph:
        graph[m] = {d for d in graph[m] if not (d.startswith(m + ".") and mods[m].name == "__init__.py")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycle = stack[stack.index(d):] + [d]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_only_runtime_talks_to_onnxruntime():
    talkers = sorted(
        m for m, p in _modules().items()
        if any(isinstance(n, (ast.Import, ast.ImportFrom)) and "onnxruntime" in (
            getattr(n, "module", None) or "" if isinstance(n, ast.ImportFrom) else " ".join(a.name for a in n.names))
            for n in ast.walk(ast.parse(p.read_text())))
    )
    # bench.runner asks onnxruntime for OrtValues on a device (IOBinding), nothing else
    assert talkers == ["onnxcompress.bench.runner", "onnxcompress.runtime"]


def test_no_module_is_over_about_400_lines():
    long = {m: len(p.read_text().splitlines()) for m, p in _modules().items() if len(p.read_text().splitlines()) > 420}
    assert not long


def test_registry_keys_by_domain_op_and_opset():
    soft = [e for e in entries() if e.op_type == "Softmax"]
    assert sorted((e.since, e.until, e.blocker) for e in soft) == [(1, 12, False), (13, None, False)]
    assert lookup("Softmax", 11).flattens and not lookup("Softmax", 13).flattens  # two rules, by opset
    att = [(e.domain, e.since, e.blocker) for e in entries() if e.op_type == "Attention"]
    assert sorted(att) == [("", 23, False), ("com.microsoft", 1, False)]  # same op type, two domains
    assert lookup("LRN", 13).reason == "LRN normalises across neighbouring channels"
    assert lookup("Relu", 13, domain="com.example") is None  # a custom domain has no rules
    assert lookup("Relu", 13, domain="ai.onnx") is lookup("Relu", 13)
    assert "LRN" in registered_ops(blockers=True) and "LRN" not in registered_ops()


def _conv_relu_conv(tmp_path) -> str:
    import numpy as np

    rng = np.random.default_rng(0)
    w1 = onnx.numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype("float32"), "w1")
    w2 = onnx.numpy_helper.from_array(rng.standard_normal((4, 16, 1, 1)).astype("float32"), "w2")
    g = h.make_graph(
        [h.make_node("Conv", ["x", "w1"], ["a"], name="c1"), h.make_node("Relu", ["a"], ["r"], name="relu"),
         h.make_node("Conv", ["r", "w2"], ["y"], name="c2")],
        "g", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4, 6, 6])], [w1, w2])
    path = tmp_path / "m.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), path)
    return str(path)


@pytest.mark.parametrize("how", ["config", "env"])
def test_a_user_blocked_op_keeps_its_channels_and_says_why(tmp_path, monkeypatch, how):
    path = _conv_relu_conv(tmp_path)
    assert oc.compress(path, oc.CompressConfig(ratio=0.5, round_to=1)).report.groups["pruned"] == 1
    if how == "env":
        monkeypatch.setenv(BLOCK_OPS_ENV, "Relu, Sigmoid")
        cfg = oc.CompressConfig(ratio=0.5, round_to=1)
    else:
        cfg = oc.CompressConfig(ratio=0.5, round_to=1, block_ops=["Relu"])
    rep = oc.compress(path, cfg).report
    assert rep.groups["pruned"] == 0
    assert ("relu", USER_BLOCK_REASON) in [(b.node, b.reason) for b in rep.blockers]


def test_block_op_on_the_command_line(tmp_path, capsys):
    from onnxcompress.cli import main

    path = _conv_relu_conv(tmp_path)
    assert main(["inspect", path, "--groups", "--block-op", "Relu", "--json", "-"]) == 0
    import json

    rep = json.loads(capsys.readouterr().out)
    assert rep["groups"] == [] and rep["blockers"][0]["reason"] == USER_BLOCK_REASON


def test_strict_mode_reraises_a_failing_rule(tmp_path, monkeypatch):
    from onnxcompress.channels.rules import elementwise

    def broken(self, node, ctx):
        raise RuntimeError("bug in a rule")

    path = _conv_relu_conv(tmp_path)
    rule = lookup("Relu", 17)
    monkeypatch.setattr(type(rule), "propagate", broken)
    with pytest.raises(RuntimeError, match="bug in a rule"):
        oc.compress(path, oc.CompressConfig(ratio=0.5, round_to=1))
    monkeypatch.setenv("ONNXCOMPRESS_STRICT_RULES", "0")
    rep = oc.compress(path, oc.CompressConfig(ratio=0.5, round_to=1)).report
    assert rep.groups["pruned"] == 0 and "Relu rule failed" in rep.blockers[0].reason
    assert elementwise  # the family module that holds the rule
