"""Reliability: outputs never touch inputs, failures leave nothing behind, every error is one line.

Each test here stood for a bug: an output path that replaced the input's weights, a
report over the input, a FIFO or device written or read, a symlink followed, temporaries
left by Ctrl-C or SIGTERM, tracebacks and exit 3 where a user error deserves one line
and exit 2, and ``--round-to`` rounding a group below what the ratio allows.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxcompress as oc
from onnxcompress.cli import main
from onnxcompress.io import save_model
from onnxcompress.paths import OutputError, validate_outputs
from tests.conftest import MODELS

REPO = Path(__file__).resolve().parent.parent


def cli(*args, cwd=None, timeout=300, **kw):
    return subprocess.run([sys.executable, "-m", "onnxcompress", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, **kw)


def one_line(stderr: str, needle: str = "") -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert needle in lines[0], stderr
    assert "Traceback" not in stderr and "\x1b" not in stderr
    return lines[0]


def run_main(capsys, *args) -> tuple[int, str]:
    rc = main([str(a) for a in args])
    return rc, capsys.readouterr().err


def conv_model(path: Path, *, cin: int = 4, cout: int = 8, group: int = 1, x_shape=None, in_name: str = "x",
               w_raw_bytes: int | None = None, w_dim0: int | None = None) -> Path:
    """One Conv (3x3, padded) from ``in_name`` to ``y``; the weight can be truncated or given a bad dim."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((cout, cin // group, 3, 3)).astype(np.float32), "W")
    if w_raw_bytes is not None:
        w.raw_data = w.raw_data[:w_raw_bytes]
    if w_dim0 is not None:
        w.dims[0] = w_dim0
    x = helper.make_tensor_value_info(in_name, TensorProto.FLOAT, list(x_shape or (1, cin, 8, 8)))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("Conv", [in_name, "W"], ["y"], group=group, pads=[1, 1, 1, 1], name="c")
    model = helper.make_model(helper.make_graph([node], "g", [x], [y], [w]), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture
def resnet(tmp_path) -> Path:
    shutil.copy(MODELS / "resnet_small.onnx", tmp_path / "m.onnx")
    return tmp_path / "m.onnx"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.is_symlink()}


# ----------------------------------------------------------------------------- outputs are never inputs
def test_output_naming_the_inputs_data_file_is_refused(ext):
    before = snapshot(ext.parent)
    proc = cli(ext, "-o", ext.parent / "dynamo_ext.onnx.data", "-q")
    assert proc.returncode == 2
    one_line(proc.stderr, "refusing to overwrite the input")
    assert snapshot(ext.parent) == before  # no model.onnx.data.data, weights untouched


@pytest.mark.parametrize("name", ["in.onnx", "in.model"])
def test_input_whose_data_is_the_outputs_data_file_is_refused(tmp_path, name):
    ir.save(ir.load(MODELS / "dynamo_ext.onnx"), tmp_path / "in.onnx", external_data="out.onnx.data")
    if name != "in.onnx":
        shutil.copy(tmp_path / "in.onnx", tmp_path / name)
    before = snapshot(tmp_path)
    proc = cli(tmp_path / name, "-o", tmp_path / "out.onnx", "-q")
    assert proc.returncode == 2
    one_line(proc.stderr, "out.onnx.data is the external data of")
    assert snapshot(tmp_path) == before
    # the Python API refuses it too: from the input path, or from the files the model reads
    result = oc.compress(str(tmp_path / "in.onnx"), oc.CompressConfig(ratio=0.5))
    with pytest.raises(OutputError, match="is the external data of"):
        result.save(tmp_path / "out.onnx")
    with pytest.raises(OutputError, match="holds weights the model reads"):
        save_model(ir.load(tmp_path / "in.onnx"), tmp_path / "out.onnx")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "args",
    [
        ["MODEL", "--report", "MODEL"],
        ["MODEL", "--markdown", "DATA"],
        ["MODEL", "--report", "LINK"],
        ["inspect", "MODEL", "--json", "MODEL"],
        ["bench", "MODEL", "--iters", "1", "--warmup", "0", "--json", "DATA"],
        ["bench", "MODEL", "--iters", "1", "--warmup", "0", "--markdown", "MODEL"],
    ],
)
def test_reports_pointed_at_the_input_are_refused(ext, args):
    (ext.parent / "link.json").symlink_to(ext)
    subs = {"MODEL": ext, "DATA": ext.parent / "dynamo_ext.onnx.data", "LINK": ext.parent / "link.json"}
    before = snapshot(ext.parent)
    proc = cli(*[subs.get(a, a) for a in args])
    assert proc.returncode == 2
    one_line(proc.stderr, "refusing to overwrite the input")
    assert snapshot(ext.parent) == before
    assert not (ext.parent / "dynamo_ext.compressed.onnx").exists()


def test_validate_outputs_for_check_junit_and_json(ext, tmp_path):
    other = tmp_path / "other.onnx"
    shutil.copy(MODELS / "resnet_small.onnx", other)
    data = ext.parent / "dynamo_ext.onnx.data"
    for bad in (ext, data, other):
        with pytest.raises(OutputError, match="refusing to overwrite the input"):
            validate_outputs([ext, other], {"--junit": bad, "--json": None})
    with pytest.raises(OutputError, match="a character device"):
        validate_outputs([ext], {"--junit": "/dev/null"})
    with pytest.raises(OutputError, match="name the same file"):
        validate_outputs([ext], {"--junit": tmp_path / "a.xml", "--json": tmp_path / "a.xml"})
    ok = validate_outputs([ext, other], {"--junit": tmp_path / "gate.xml", "--json": "-"})
    assert ok == {"--junit": tmp_path / "gate.xml"}
    assert not (tmp_path / "gate.xml").exists()


def test_fifo_and_directory_outputs_are_refused(resnet, tmp_path):
    fifo = tmp_path / "out.onnx"
    os.mkfifo(fifo)
    for out, needle in ((fifo, "a FIFO"), (tmp_path, "a directory")):
        proc = cli(resnet, "-o", out, "-q", timeout=120)
        assert proc.returncode == 2
        one_line(proc.stderr, needle)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "out.onnx"]


def test_symlink_at_the_data_path_is_replaced_not_followed(ext, tmp_path):
    out_dir, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out_dir.mkdir()
    elsewhere.mkdir()
    (out_dir / "c.onnx.data").symlink_to(elsewhere / "target.data")
    proc = cli(ext, "-o", out_dir / "c.onnx", "-q")
    assert proc.returncode == 0, proc.stderr
    assert list(elsewhere.iterdir()) == []
    data = out_dir / "c.onnx.data"
    assert not data.is_symlink() and data.is_file()
    onnx.checker.check_model(str(out_dir / "c.onnx"), full_check=True)


# ----------------------------------------------------------------------------- failed writes leave nothing
def test_unwritable_folder_fails_before_any_work(capsys, resnet, tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == ro else real(p, mode, **kw))
    import onnxcompress.api as api

    monkeypatch.setattr(api, "compress", lambda *a, **k: pytest.fail("compressed before checking the outputs"))
    rc, err = run_main(capsys, resnet, "-o", ro / "c.onnx", "-q")
    assert rc == 2
    one_line(err, "is not writable")
    rc, err = run_main(capsys, resnet, "--report", ro / "r.json", "-q")
    assert rc == 2
    one_line(err, "--report")
    assert list(ro.iterdir()) == [] and not (tmp_path / "m.compressed.onnx").exists()


def test_report_write_failure_leaves_no_model(capsys, resnet, tmp_path, monkeypatch):
    import onnxcompress.paths as paths

    real = paths.tempfile.mkstemp

    def mkstemp(*a, **k):
        if ".r.json." in str(k.get("prefix", "")):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(*a, **k)

    monkeypatch.setattr(paths.tempfile, "mkstemp", mkstemp)
    rc, err = run_main(capsys, resnet, "--ratio", "0.5", "--report", tmp_path / "r.json", "-q")
    assert rc == 2
    one_line(err, "cannot write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_full_disk_is_one_line_and_leaves_no_temporaries(capsys, ext, monkeypatch):
    def full(model, path, external_data=None, **kw):
        Path(path).write_bytes(b"partial")
        if external_data:
            (Path(path).parent / external_data).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ir, "save", full)
    before = snapshot(ext.parent)
    rc, err = run_main(capsys, ext, "--ratio", "0.5", "-q")
    assert rc == 2
    one_line(err, "no space left")
    assert snapshot(ext.parent) == before and len(list(ext.parent.iterdir())) == 2


_SLOW_SAVE = """
import os, sys, time
from pathlib import Path
import onnx_ir as ir
from onnxcompress.cli import main
from onnxcompress.io import save_model

def slow(model, path, external_data=None, **kw):
    Path(path).write_bytes(b"partial")
    if external_data:
        (Path(path).parent / external_data).write_bytes(b"partial")
    Path(os.environ["MARKER"]).touch()
    time.sleep(60)

ir.save = slow
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sig,code,word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_signal_during_save_removes_temporaries(ext, tmp_path, sig, code, word):
    marker = tmp_path / "saving"
    out = ext.parent / "out"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_SAVE, str(ext), "-o", str(out / "c.onnx"), "-q"],
                            stderr=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "MARKER": str(marker)})
    deadline = time.time() + 240
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code
    one_line(err, word)
    assert not out.exists()  # the folder made for the output went too
    assert sorted(p.name for p in ext.parent.iterdir()) == ["dynamo_ext.onnx", "dynamo_ext.onnx.data", "saving"]


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to see the imports loading")
def test_ctrl_c_while_imports_load_is_one_line(resnet):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    quick = subprocess.run([sys.executable, "-c", "import sys, onnxcompress.cli; print(sorted(m for m in "
                            "('numpy', 'onnx', 'onnx_ir', 'onnxruntime') if m in sys.modules))"],
                           capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert quick.stdout.strip() == "[]", quick.stderr  # the heavy imports wait for main()
    # A loaded machine can finish the command before the signal lands: try a few times.
    for _attempt in range(5):
        proc = subprocess.Popen([sys.executable, "-m", "onnxcompress", "inspect", str(resnet)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
        maps = Path(f"/proc/{proc.pid}/maps")
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            try:
                if "_multiarray_umath" in maps.read_text():
                    break
            except OSError:
                pass
            time.sleep(0.002)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        if proc.returncode != 0:
            break
    assert proc.returncode == 130, err
    one_line(err, "interrupted")


def test_outputs_follow_the_umask(ext, tmp_path):
    out = tmp_path / "o" / "c.onnx"
    proc = subprocess.run([sys.executable, "-m", "onnxcompress", str(ext), "-o", str(out), "--report",
                           str(tmp_path / "r.json"), "-q"], capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: os.umask(0o027))
    assert proc.returncode == 0, proc.stderr
    for p in (out, out.with_name("c.onnx.data"), tmp_path / "r.json"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o640, p


# ----------------------------------------------------------------------------- bad inputs: one line, exit 2
def test_huge_declared_dims_are_an_input_error(tmp_path):
    model = conv_model(tmp_path / "huge.onnx", x_shape=(1, 4, 100_000, 100_000))
    with pytest.raises(oc.InputError, match=r"input 'x' .*dim 2 is 100,000"):
        oc.compress(str(model), oc.CompressConfig(ratio=0.5))
    proc = cli(model, "-q")
    assert proc.returncode == 2
    one_line(proc.stderr, "input 'x'")
    proc = cli("bench", MODELS / "resnet_small.onnx", "--batch", "10000000000", timeout=120)
    assert proc.returncode == 2
    one_line(proc.stderr, "dim 0 is 10,000,000,000")


@pytest.mark.parametrize("cmd", [["MODEL"], ["bench", "MODEL"], ["check", "MODEL", "MODEL"]])
def test_negative_seed_is_one_line(resnet, cmd):
    proc = cli(*[resnet if a == "MODEL" else a for a in cmd], "--seed", "-1", "-q", timeout=120)
    assert proc.returncode == 2
    one_line(proc.stderr, "--seed")
    assert sorted(p.name for p in resnet.parent.iterdir()) == ["m.onnx"]


def test_models_onnxruntime_cannot_run_are_one_line(tmp_path):
    bad = conv_model(tmp_path / "bad.onnx", cin=4, cout=6, group=3, x_shape=(1, 4, 8, 8))
    for args in (["bench", bad, "--iters", "1", "--warmup", "0"], ["check", bad, bad]):
        proc = cli(*args, timeout=120)
        assert proc.returncode == 2, proc.stderr
        one_line(proc.stderr)


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "arrays,needle",
    [
        ({"input": np.zeros((1, 3, 32, 32), np.float32)}, "dim 2 is 32"),
        ({"input": np.zeros((1, 3, 64, 64), np.float64)}, "float64"),
        ({"input": np.zeros((3, 64, 64), np.float32)}, "rank 3"),
        ({"input": np.zeros((0, 3, 64, 64), np.float32)}, "empty"),
        ({"images": np.zeros((1, 3, 64, 64), np.float32)}, "missing: input"),
    ],
)
def test_bench_inputs_that_do_not_fit_the_model(tmp_path, arrays, needle):
    proc = cli("bench", MODELS / "resnet_small.onnx", "--inputs", _npz(tmp_path / "in.npz", **arrays), timeout=120)
    assert proc.returncode == 2
    one_line(proc.stderr, needle)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"w_raw_bytes": 10}, "10 bytes of raw data"),
        ({"w_dim0": -3}, "negative dim"),
        ({"cin": 4, "cout": 6, "group": 3, "x_shape": (1, 4, 8, 8)}, "group 3 does not divide its 4 input channels"),
    ],
)
def test_inspect_on_malformed_weights_is_one_line(tmp_path, kwargs, needle):
    model = conv_model(tmp_path / "w.onnx", **kwargs)
    for args in (["inspect", model], ["inspect", model, "--groups"]):
        proc = cli(*args, timeout=120)
        assert proc.returncode == 2
        one_line(proc.stderr, needle)
    with pytest.raises(oc.InputError):
        oc.inspect(str(model))


def test_non_regular_inputs_are_refused_at_once(tmp_path):
    fifo = tmp_path / "in.onnx"
    os.mkfifo(fifo)
    for args, needle in (([fifo], "a FIFO"), (["inspect", "/dev/zero"], "a character device"),
                         (["bench", fifo], "a FIFO")):
        proc = cli(*args, "-q", timeout=60)
        assert proc.returncode == 2
        one_line(proc.stderr, needle)


@pytest.mark.parametrize(
    "args",
    [["MODEL", "--ratio", "x"], ["MODEL", "--bogus"], ["inspect"], ["bench", "MODEL", "--iters", "many"],
     ["check", "MODEL"], ["sensitivity", "MODEL", "--top", "x"]],
)
def test_usage_errors_are_one_line(capsys, resnet, args):
    rc, err = run_main(capsys, *[resnet if a == "MODEL" else a for a in args])
    assert rc == 2
    one_line(err, "--help")


def test_third_party_logs_wait_for_debug(tmp_path):
    """onnx-ir warns about a dangling node input; that line belongs to --debug, not before our output."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("Conv", ["x", "W_missing"], ["y"], name="c")
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "dangling.onnx")
    quiet = cli("inspect", tmp_path / "dangling.onnx", timeout=120)
    assert "onnx_ir" not in quiet.stderr, quiet.stderr
    loud = cli("inspect", tmp_path / "dangling.onnx", "--debug", timeout=120)
    assert "onnx_ir" in loud.stderr


def test_control_characters_in_messages_are_escaped(capsys, tmp_path):
    rc, err = run_main(capsys, tmp_path / "evil\n\x1b[31mname.onnx", "-q")
    assert rc == 2
    line = one_line(err, "no such file")
    assert "\\n\\x1b[31mname.onnx" in line


# ----------------------------------------------------------------------------- --round-to rounds up
def _widths_model(tmp_path: Path) -> Path:
    """x -> c1 (3 -> 10) -> c2 (10 -> 12) -> c3 (12 -> 4) -> y: two prunable groups of 10 and 12."""
    rng = np.random.default_rng(0)
    nodes, inits, prev, cin = [], [], "x", 3
    for i, cout in enumerate((10, 12, 4), 1):
        inits.append(numpy_helper.from_array(rng.standard_normal((cout, cin, 3, 3)).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], name=f"c{i}", pads=[1, 1, 1, 1]))
        if i < 3:
            nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        prev, cin = f"r{i}", cout
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("c3", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "w.onnx")
    return tmp_path / "w.onnx"


def _kept(result) -> dict[str, int]:
    return {layer.name: layer.after for layer in result.report.layers if layer.name in ("c1", "c2")}


@pytest.mark.parametrize("scope", ["local", "global"])
def test_round_to_rounds_the_kept_count_up(tmp_path, scope):
    model = str(_widths_model(tmp_path))
    cfg = dict(scope=scope, round_to=8, simplify=False)
    assert _kept(oc.compress(model, oc.CompressConfig(ratio=0.05, **cfg))) == {"c1": 10, "c2": 12}
    # never more than the ratio: 0.3 leaves at least 7 of 10 and 8.4 of 12, so 8 and 12 (capped at the width)
    kept = _kept(oc.compress(model, oc.CompressConfig(ratio=0.3, max_layer_ratio=0.8, **cfg)))
    assert all(kept[n] >= (1 - 0.3) * w for n, w in (("c1", 10), ("c2", 12))), kept
    assert all(k % 8 == 0 or k == w for k, w in ((kept["c1"], 10), (kept["c2"], 12))), kept


def test_round_keep_is_a_ceiling_never_zero_and_capped():
    from onnxcompress.pruning.plan import _round_keep

    assert _round_keep(9.5, 10, 8) == 10  # was 8
    assert _round_keep(11.4, 12, 8) == 12  # was 8
    assert _round_keep(6, 12, 8) == 8
    assert _round_keep(0, 12, 8) == 8  # never zero
    assert _round_keep(17, 40, 8) == 24
    assert _round_keep(16, 40, 8) == 16
    assert _round_keep(2, 5, 8) == 5  # narrower than a step: untouched
    assert _round_keep(3, 40, 8, floor_keep=9) == 16
    assert _round_keep(7.000000000000001, 40, 1) == 7  # float noise does not add a channel
    assert _round_keep(10 - 0.3 * 10, 10, 1) == 7


def test_report_json_still_written_and_complete(resnet, tmp_path):
    """The staged writes still deliver everything, in place, with the report naming the output."""
    out = tmp_path / "c.onnx"
    proc = cli(resnet, "--ratio", "0.5", "-o", out, "--report", tmp_path / "r.json", "--markdown", tmp_path / "r.md", "-q")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["output"] == str(out) and rep["after"]["file_bytes"] == out.stat().st_size
    assert (tmp_path / "r.md").read_text().strip()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
