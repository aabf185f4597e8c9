"""Issue 9, case by case: the cases the other test files left without a test, or tested weakly.

bench/ISSUE9_CASES.md maps every case of the issue to its tests (here and elsewhere). The
tests here assert values: the exit code, that stderr is exactly one line, that every
file the command reads is byte-for-byte unchanged, that nothing was left behind.

Most commands run in-process (``main``) with ``capfd``, which captures file descriptor 2
too, so a native library's log line would count as a second line. A subprocess is used
where the process itself matters: a resource limit, a third-party logger's defaults, a
FIFO that could block the process for ever (there a guard in the child turns any
``open`` of the FIFO into exit 99, so a regression fails at once instead of hanging).

Four bugs found while writing these tests (check opening a FIFO, check's "no such file" for a
FIFO or device, bench refusing a dim_value -1 batch, control characters on stdout) are fixed;
their tests were strict xfails until then.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from onnxcompress.bench.testing import tiny_classifier
from onnxcompress.cli import main
from tests.conftest import MODELS
from tests.graphs import G

REPO = Path(__file__).resolve().parent.parent
EVIL = "x\n\x1b[31mEVIL"  # a newline and an ANSI "red" escape
EVIL_ESCAPED = "x\\n\\x1b[31mEVIL"


# ----------------------------------------------------------------------------- helpers
def one_line(err: str, needle: str | tuple[str, ...] = "") -> str:
    """The single stderr line (asserted): ours, with ``needle`` (or one of them), no traceback, no raw escape."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("onnxcompress"), err
    assert any(n in lines[0] for n in ((needle,) if isinstance(needle, str) else needle)), err
    assert "Traceback" not in err and "\x1b" not in err
    return lines[0]


def run(capfd, *args) -> tuple[int, str, str]:
    """``main`` in-process; (exit code, stdout, stderr) as file descriptors 1 and 2 saw them."""
    rc = main([str(a) for a in args])
    out, err = capfd.readouterr()
    return rc, out, err


def cli(*args, timeout=120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onnxcompress", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, **kw)


def digest(folder: Path) -> dict[str, str]:
    """Name -> sha256 of every regular file in ``folder``; kind for anything else."""
    out = {}
    for p in sorted(folder.iterdir()):
        st = os.lstat(p)
        out[p.name] = hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else f"mode {st.st_mode:o}"
    return out


def tiny(folder: Path, name: str = "m.onnx", **kw) -> Path:
    """Conv-Relu-GAP-Gemm classifier, input ``x`` [N, 3, 16, 16] (N symbolic unless ``batch`` says)."""
    return Path(tiny_classifier(folder / name, **kw))


def conv_in(folder: Path, name: str, x_shape, in_name: str = "x", extra_unused: bool = False) -> Path:
    """One conv (4 -> 8 channels, 3x3, padded), built with tests.graphs.G; shapes inferred and checked."""
    g = G(0)
    x = g.input(in_name, shape=x_shape)
    y = g.conv(x, 4, 8)
    if extra_unused:
        g.const(np.ones(5), "unused")  # an initializer no node reads: onnxruntime logs a warning about it
    path = folder / name
    onnx.save(g.model([y]), path)
    return path


#: A child that runs the CLI with every Python-level open of argv[1] turned into exit 99:
#: a FIFO must be refused by stat, never opened (an open blocks until a writer comes).
_FIFO_GUARD = r"""
import builtins, io, os, sys
target = os.path.realpath(sys.argv[1])
def _check(f):
    if isinstance(f, (str, bytes, os.PathLike)) and os.path.realpath(os.fsdecode(f)) == target:
        os.write(2, b"GUARD: the FIFO was opened\n")
        os._exit(99)
real_open, real_os_open = builtins.open, os.open
def guarded_open(f, *a, **k):
    _check(f)
    return real_open(f, *a, **k)
def guarded_os_open(f, *a, **k):
    _check(f)
    return real_os_open(f, *a, **k)
builtins.open = io.open = guarded_open
os.open = guarded_os_open
from onnxcompress.cli import main
sys.exit(main(sys.argv[2:]))
"""


def guarded(fifo: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _FIFO_GUARD, str(fifo), *map(str, args)], capture_output=True,
                          text=True, timeout=120, cwd=REPO)


# ============================================================================= data integrity
@pytest.mark.parametrize(
    "args",
    [
        ["check", "M", "M2", "--junit", "M"],
        ["check", "M", "M2", "--junit", "M2"],
        ["check", "M", "M2", "--json", "M"],
        ["check", "M", "M2", "--markdown", "M2"],
        ["check", "E", "E", "--junit", "D"],
        ["M", "--markdown", "M"],
        ["bench", "M", "--iters", "1", "--warmup", "0", "--json", "M"],
        ["bench", "E", "--iters", "1", "--warmup", "0", "--json", "E"],
        ["sensitivity", "M", "--json", "M"],
    ],
    ids=["check-junit-model", "check-junit-compressed", "check-json-model", "check-markdown-compressed",
         "check-junit-external-data", "compress-markdown-model", "bench-json-model", "bench-json-external-model",
         "sensitivity-json-model"],
)
def test_reports_pointed_at_an_input_model_are_refused(capfd, ext, args):
    """check --junit/--json/--markdown, compress --markdown, bench --json at the model itself."""
    folder = ext.parent
    tiny(folder, "m.onnx")
    tiny(folder, "m2.onnx", perturb=0.1)
    subs = {"M": folder / "m.onnx", "M2": folder / "m2.onnx", "E": ext, "D": folder / "dynamo_ext.onnx.data"}
    before = digest(folder)
    rc, _, err = run(capfd, *[subs.get(a, a) for a in args])
    assert rc == 2
    one_line(err, "refusing to overwrite the input")
    assert digest(folder) == before  # every input byte-for-byte, and no new file


def _mknod_null(path: Path) -> Path:
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a second /dev/null, inside tmp_path
    except (PermissionError, OSError) as exc:
        pytest.skip(f"cannot make a character device here: {exc}")
    return path


@pytest.mark.parametrize(
    "args",
    [
        ["M", "-o", "OUT", "-q"],
        ["M", "--report", "OUT", "-q"],
        ["M", "--markdown", "OUT", "-q"],
        ["inspect", "M", "--json", "OUT"],
        ["bench", "M", "--iters", "1", "--warmup", "0", "--json", "OUT"],
        ["check", "M", "M", "--junit", "OUT", "-q"],
    ],
    ids=["o", "report", "markdown", "inspect-json", "bench-json", "check-junit"],
)
@pytest.mark.parametrize("node", ["chardev", "fifo"])
def test_device_and_fifo_outputs_are_refused(capfd, tmp_path, args, node):
    """-o (and every report) naming a character device or a FIFO: exit 2, the node stays what it was."""
    model = tiny(tmp_path)
    out = tmp_path / "out"
    if node == "chardev":
        _mknod_null(out)
    else:
        os.mkfifo(out)
    st0 = os.lstat(out)
    before = digest(tmp_path)
    rc, _, err = run(capfd, *[model if a == "M" else out if a == "OUT" else a for a in args])
    assert rc == 2
    one_line(err, "a character device" if node == "chardev" else "a FIFO")
    st1 = os.lstat(out)
    assert (stat.S_IFMT(st1.st_mode), st1.st_rdev, st1.st_ino) == (stat.S_IFMT(st0.st_mode), st0.st_rdev, st0.st_ino)
    assert digest(tmp_path) == before


def test_dev_null_itself_is_refused(capfd, tmp_path, monkeypatch):
    """As root, -o /dev/null once replaced /dev/null; any rename or temp file into /dev is trapped here."""
    import tempfile

    model = tiny(tmp_path)

    def trap(what):
        raise AssertionError(f"wrote into /dev: {what}")

    for name in ("replace", "rename"):
        def move(src, dst, *a, _real=getattr(os, name), **k):
            return trap(dst) if str(dst).startswith("/dev") else _real(src, dst, *a, **k)

        monkeypatch.setattr(os, name, move)
    for name in ("mkstemp", "mkdtemp"):
        def make(*a, _real=getattr(tempfile, name), **k):
            return trap(k.get("dir")) if str(k.get("dir", "")).startswith("/dev") else _real(*a, **k)

        monkeypatch.setattr(tempfile, name, make)
    before = os.stat("/dev/null")
    rc, _, err = run(capfd, model, "-o", "/dev/null", "-q")
    assert rc == 2
    one_line(err, "a character device")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def _bad_length(ext: Path) -> Path:
    """A copy of ``ext`` whose first external tensor declares 4 bytes fewer than its shape needs."""
    m = onnx.load(ext, load_external_data=False)
    t = next(t for t in m.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL)
    entry = next(kv for kv in t.external_data if kv.key == "length")
    entry.value = str(int(entry.value) - 4)
    bad = ext.parent / "bad_length.onnx"
    onnx.save(m, bad)
    return bad


def _truncated_data(ext: Path) -> Path:
    """A copy of ``ext`` whose data file lost its last 100 bytes."""
    folder = ext.parent / "trunc"
    folder.mkdir()
    shutil.copy(ext, folder / ext.name)
    data = (ext.parent / "dynamo_ext.onnx.data").read_bytes()
    (folder / "dynamo_ext.onnx.data").write_bytes(data[:-100])
    return folder / ext.name


@pytest.mark.parametrize("make", [_bad_length, _truncated_data], ids=["length-wrong", "data-truncated"])
def test_check_and_bench_run_the_file_as_given(capfd, ext, tmp_path, make):
    """check once said "loads, runs: yes ... all gates passed" on a file onnxruntime refuses (it ran a re-saved copy)."""
    bad = make(ext)
    before = digest(ext.parent)
    with pytest.raises(Exception):  # the premise: onnxruntime itself refuses the file
        import onnxruntime as ort

        ort.InferenceSession(str(bad), providers=["CPUExecutionProvider"])
    capfd.readouterr()
    report = tmp_path / "gate.json"
    rc, _, err = run(capfd, "check", ext, bad, "--json", report, "-q")
    assert rc == 1, err
    gates = {c["name"]: c for c in json.loads(report.read_text())["criteria"]}
    assert gates["loads_and_runs"]["passed"] is False
    assert json.loads(report.read_text())["passed"] is False
    report.unlink()
    rc, _, err = run(capfd, "check", bad, ext, "-q")  # the reference itself broken: bad input
    assert rc == 2
    one_line(err, "error:")
    rc, _, err = run(capfd, "bench", bad, "--iters", "1", "--warmup", "0")
    assert rc == 2
    one_line(err, "error:")
    assert digest(ext.parent) == before


# ============================================================================= exit 3 that must be one line and exit 2
def test_read_only_folder_found_only_at_write_time(capfd, ext, tmp_path, monkeypatch):
    """A read-only mount (or root, for whom os.access says yes): the write fails late; still one line, nothing left."""
    import errno
    import tempfile

    ro = tmp_path / "ro"
    ro.mkdir()
    for name in ("mkstemp", "mkdtemp"):
        real = getattr(tempfile, name)

        def fake(*a, _r=real, **k):
            d = Path(k.get("dir") or ".").resolve()
            if d == ro.resolve() or ro.resolve() in d.parents:
                raise OSError(errno.EROFS, "Read-only file system")
            return _r(*a, **k)

        monkeypatch.setattr(tempfile, name, fake)
    before = digest(ext.parent)
    for args, needle in (([ext, "-o", ro / "c.onnx", "--ratio", "0.5", "-q"], "ro/c.onnx"),
                         ([ext, "-o", ro / "sub" / "c.onnx", "--ratio", "0.5", "-q"], "c.onnx"),
                         (["inspect", ext, "--json", ro / "r.json"], "r.json")):
        rc, _, err = run(capfd, *args)
        assert rc == 2
        assert "read-only" in one_line(err, needle).lower()
        assert list(ro.iterdir()) == []  # no temporaries, and the folder made for sub/ went too
    assert digest(ext.parent) == before


@pytest.mark.parametrize(
    "args",
    [["M", "--report", "DIR", "-q"], ["inspect", "M", "--json", "DIR"],
     ["bench", "M", "--iters", "1", "--warmup", "0", "--json", "DIR"], ["check", "M", "M", "--junit", "DIR", "-q"]],
    ids=["report", "inspect-json", "bench-json", "check-junit"],
)
def test_report_path_that_is_a_directory(capfd, tmp_path, args):
    model = tiny(tmp_path)
    (tmp_path / "d").mkdir()
    before = digest(tmp_path)
    rc, _, err = run(capfd, *[model if a == "M" else tmp_path / "d" if a == "DIR" else a for a in args])
    assert rc == 2
    one_line(err, "a directory")
    assert digest(tmp_path) == before and list((tmp_path / "d").iterdir()) == []


def test_a_real_failed_write_is_one_line_and_leaves_nothing(tmp_path):
    """A write that really fails (RLIMIT_FSIZE: EFBIG, as ENOSPC would) in a real process, not a patched save."""
    src = tmp_path / "m.onnx"
    shutil.copy(MODELS / "resnet_small.onnx", src)  # 706 kB: its output is far over the 64 kB limit
    before = digest(tmp_path)

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64_000, 64_000))

    proc = cli(src, "-o", tmp_path / "new" / "c.onnx", "-q", preexec_fn=limit)
    assert proc.returncode == 2
    one_line(proc.stderr, "cannot write")
    assert digest(tmp_path) == before  # no temporaries, no "new" folder


def test_huge_declared_dim_in_check_and_bench(capfd, tmp_path):
    model = conv_in(tmp_path, "huge.onnx", (1, 4, 100_000, 100_000))
    for args in (["check", model, model, "-q"], ["bench", model, "--iters", "1", "--warmup", "0"]):
        rc, _, err = run(capfd, *args)
        assert rc == 2
        one_line(err, "dim 2 is 100,000")


@pytest.mark.parametrize(
    "array,needle",
    [
        (np.zeros((2, 3, 8, 8), np.float32), "'x' dim 2 is 8; the model fixes it at 16"),  # wrong spatial size
        (np.zeros((2, 3, 16, 16), np.float64), "'x' is float64; the model's input takes float32"),
        (np.zeros((3, 16, 16), np.float32), "'x' has rank 3"),
        (np.zeros((0, 3, 16, 16), np.float32), "empty"),
    ],
    ids=["shape", "dtype", "rank", "empty"],
)
def test_check_inputs_npz_that_do_not_fit(capfd, tmp_path, array, needle):
    """check --inputs with the wrong shape, dtype or rank, or an empty array (bench is in test_reliability)."""
    a, b = tiny(tmp_path, "a.onnx"), tiny(tmp_path, "b.onnx", perturb=0.1)
    np.savez(tmp_path / "in.npz", x=array)
    rc, _, err = run(capfd, "check", a, b, "--inputs", tmp_path / "in.npz", "-q")
    assert rc == 2
    one_line(err, needle)


# ============================================================================= non-regular inputs
@pytest.mark.parametrize(
    "args,needle",
    [
        (["inspect", "FIFO"], "a FIFO"),
        (["FIFO", "-q"], "a FIFO"),
        (["bench", "M", "--inputs", "FIFO"], "a FIFO"),
        (["check", "M", "M", "--inputs", "FIFO", "-q"], "a FIFO"),
        (["M", "--calib", "FIFO", "-q"], "a FIFO"),
        (["check", "FIFO", "M", "-q"], "a FIFO"),
        (["check", "/dev/zero", "M", "-q"], "a character device"),
        (["check", "M", "M", "--recipe", "FIFO", "-q"], "a FIFO"),
        (["check", "M", "M", "--eval", "FIFO", "-q"], "a FIFO"),
    ],
    ids=["inspect", "compress", "bench-inputs", "check-inputs", "compress-calib", "check-model-fifo",
         "check-model-dev-zero", "check-recipe-fifo", "check-eval-fifo"],
)
def test_fifo_inputs_are_refused_without_opening_them(tmp_path, args, needle):
    model, fifo = tiny(tmp_path), tmp_path / "fifo"
    os.mkfifo(fifo)
    proc = guarded(fifo, *[model if a == "M" else fifo if a == "FIFO" else a for a in args])
    assert proc.returncode == 2, proc.stderr
    one_line(proc.stderr, needle)


def test_check_with_a_fifo_as_the_compressed_model(tmp_path):
    model, fifo = tiny(tmp_path), tmp_path / "fifo"
    os.mkfifo(fifo)
    proc = guarded(fifo, "check", model, fifo, "-q")
    assert proc.returncode in (1, 2), proc.stderr  # a failed loads gate (as for /dev/zero) or a bad input
    one_line(proc.stderr, "a FIFO")




def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))  # reading /dev/zero "until memory runs out" ends here


@pytest.mark.parametrize(
    "args,rc,needle",
    [
        (["/dev/zero", "-q"], 2, "a character device"),
        (["bench", "/dev/zero"], 2, "a character device"),
        (["check", "M", "M", "--inputs", "/dev/zero", "-q"], 2, "a character device"),
        (["check", "M", "/dev/zero", "-q"], 1, "a character device"),  # the compressed model fails the loads gate
    ],
    ids=["compress", "bench", "check-inputs", "check-compressed"],
)
def test_dev_zero_is_refused_at_once(tmp_path, args, rc, needle):
    model = tiny(tmp_path)
    proc = cli(*[model if a == "M" else a for a in args], preexec_fn=_limit_memory)
    assert proc.returncode == rc, proc.stderr
    one_line(proc.stderr, needle)


# ============================================================================= usage errors, logs, escapes
@pytest.mark.parametrize(
    "args",
    [["--ratio"], ["M", "--ratio", "half"], ["bench"], ["check", "M", "--bogus", "1"], ["inspect", "M", "--json"],
     ["sensitivity"]],
)
def test_argparse_errors_in_a_real_process_are_one_line(tmp_path, args):
    model = tiny(tmp_path)
    proc = cli(*[model if a == "M" else a for a in args])
    assert proc.returncode == 2
    one_line(proc.stderr, "--help")
    assert proc.stdout == ""


def test_onnx_ir_warning_does_not_precede_the_error(tmp_path):
    """A dangling node input makes onnx-ir warn while loading; the failing command prints one line only."""
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4, 8, 8])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4, 6, 6])
    node = onnx.helper.make_node("Conv", ["x", "W_missing"], ["y"], name="c")
    model = onnx.helper.make_model(onnx.helper.make_graph([node], "g", [x], [y]),
                                   opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "dangling.onnx"
    onnx.save(model, path)
    for args in ([path, "-q"], ["bench", path], ["check", path, path, "-q"]):
        proc = cli(*args)
        assert proc.returncode == 2, proc.stderr
        one_line(proc.stderr, "error:")
        assert "onnx_ir." not in proc.stderr and "WARNING" not in proc.stderr
    assert "WARNING onnx_ir." in cli(path, "-q", "--debug").stderr  # the warning exists: --debug shows it


def test_onnxruntime_log_lines_do_not_precede_the_error(tmp_path):
    """onnxruntime logs an unused initializer in colour on stderr; ours stays the only line, uncoloured."""
    model = conv_in(tmp_path, "unused.onnx", (1, 4, 8, 8), extra_unused=True)
    control = subprocess.run([sys.executable, "-c", "import sys, onnxruntime as o; o.InferenceSession(sys.argv[1])",
                              str(model)], capture_output=True, text=True, timeout=120)
    assert "Removing initializer" in control.stderr  # the premise: plain onnxruntime does log here
    np.savez(tmp_path / "bad.npz", x=np.zeros((1, 4, 9, 9), np.float32))
    proc = cli("check", model, model, "--inputs", tmp_path / "bad.npz", "-q")
    assert proc.returncode == 2
    one_line(proc.stderr, "error:")
    assert "onnxruntime:" not in proc.stderr
    ok = cli("bench", model, "--iters", "1", "--warmup", "0", "-q")
    assert ok.returncode == 0 and ok.stderr == ""
    # --debug brings onnxruntime's own lines back (the issue: silent "unless --debug/-v is given")
    loud = cli("bench", model, "--iters", "1", "--warmup", "0", "-q", "--debug")
    assert loud.returncode == 0 and "Removing initializer" in loud.stderr


def test_control_characters_in_an_input_name_are_escaped_on_stderr(capfd, tmp_path):
    model = conv_in(tmp_path, "evil.onnx", (1, 4, 8, 8), in_name=EVIL)
    rc, _, err = run(capfd, model, "--input-shape", "nope:1,4,8,8", "-q")
    assert rc == 2
    assert EVIL_ESCAPED in one_line(err, "names no input")
    huge = conv_in(tmp_path, "evil_huge.onnx", (1, 4, 100_000, 100_000), in_name=EVIL)
    rc, _, err = run(capfd, huge, "-q")
    assert rc == 2
    assert EVIL_ESCAPED in one_line(err, "dim 2 is 100,000")


def _stdout_case(tmp_path: Path, which: str) -> list:
    if which == "inspect-input-name":
        return ["inspect", conv_in(tmp_path, "evil.onnx", (1, 4, 8, 8), in_name=EVIL)]
    model = tiny(tmp_path)
    evil_path = tmp_path / f"o{EVIL}.onnx"
    if which == "compress-output-path":
        return [model, "-o", evil_path, "--ratio", "0.5"]
    shutil.copy(model, evil_path)
    if which == "bench-model-path":
        return ["bench", evil_path, "--iters", "1", "--warmup", "0"]
    return ["check", model, evil_path]


@pytest.mark.parametrize("which", ["inspect-input-name", "compress-output-path", "bench-model-path",
                                   "check-compressed-path"])
def test_control_characters_never_reach_stdout_raw(capfd, tmp_path, which):
    rc, out, _ = run(capfd, *_stdout_case(tmp_path, which))
    assert rc == 0
    assert "EVIL" in out  # the name or path is shown ...
    assert "\x1b" not in out  # ... escaped: not a terminal, so rich adds no colour; an ESC here is the name's


@pytest.mark.parametrize("mask,mode", [(0o002, 0o664), (0o077, 0o600), (0o022, 0o644)])
def test_every_report_follows_the_umask(capfd, tmp_path, mask, mode):
    """The JSON, Markdown and JUnit outputs of inspect, bench and check (the model is in test_reliability)."""
    a, b = tiny(tmp_path, "a.onnx"), tiny(tmp_path, "b.onnx", perturb=0.1)
    r = tmp_path / "r"
    old = os.umask(mask)
    try:
        assert run(capfd, "inspect", a, "--json", r / "i.json")[0] == 0
        assert run(capfd, "bench", a, "--iters", "1", "--warmup", "0", "--json", r / "b.json", "--markdown",
                   r / "b.md", "-q")[0] == 0
        assert run(capfd, "check", a, b, "--junit", r / "c.xml", "--json", r / "c.json", "--markdown", r / "c.md",
                   "-q")[0] == 0
    finally:
        os.umask(old)
    got = {p.name: stat.S_IMODE(p.stat().st_mode) for p in r.iterdir()}
    assert got == dict.fromkeys(["i.json", "b.json", "b.md", "c.xml", "c.json", "c.md"], mode)


# ============================================================================= foreign models: dim_value -1
def _dims(path: Path) -> list:
    m = onnx.load(path, load_external_data=False)
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in m.graph.input[0].type.tensor_type.shape.dim]


def _with_dims(src: Path, dst: Path, values: dict[int, int]) -> Path:
    m = onnx.load(src)
    dims = m.graph.input[0].type.tensor_type.shape.dim
    for i, v in values.items():
        dims[i].Clear()
        dims[i].dim_value = v
    onnx.save(m, dst)
    return dst


def test_minus_one_batch_through_the_cli(capfd, tmp_path):
    """PaddlePaddle's dim_value -1 batch: compress, inspect and check treat it as dynamic; the output keeps -1."""
    m1 = _with_dims(tiny(tmp_path), tmp_path / "m1.onnx", {0: -1})
    before = digest(tmp_path)
    assert run(capfd, m1, "-o", tmp_path / "o1.onnx", "--ratio", "0.5", "-q")[0] == 0
    assert _dims(tmp_path / "o1.onnx") == [-1, 3, 16, 16]
    assert run(capfd, m1, "-o", tmp_path / "o2.onnx", "--input-shape", "x:4,3,16,16", "-q")[0] == 0
    assert _dims(tmp_path / "o2.onnx") == [-1, 3, 16, 16]
    rc, out, _ = run(capfd, "inspect", m1, "--json", "-")
    assert rc == 0 and json.loads(out)["macs"] == 16 * 16 * 16 * 3 * 9 + 16 * 10
    rc, out, _ = run(capfd, "inspect", m1, "--input-shape", "x:4,3,16,16", "--json", "-")
    assert rc == 0 and json.loads(out)["macs"] == 4 * (16 * 16 * 16 * 3 * 9 + 16 * 10)
    assert run(capfd, "check", m1, tmp_path / "o2.onnx", "--batch", "3", "-q")[0] == 0  # runs at batch 3, no gate set
    assert {k: v for k, v in digest(tmp_path).items() if k in before} == before


def test_minus_one_spatial_dims_need_and_take_an_input_shape(capfd, tmp_path):
    mhw = _with_dims(tiny(tmp_path), tmp_path / "mhw.onnx", {0: -1, 2: -1, 3: -1})
    rc, _, err = run(capfd, mhw, "-q")
    assert rc == 2
    one_line(err, "dim 2")
    assert run(capfd, mhw, "-o", tmp_path / "o.onnx", "--input-shape", "x:1,3,16,16", "-q")[0] == 0
    assert _dims(tmp_path / "o.onnx") == [-1, 3, -1, -1]
    m0 = _with_dims(tiny(tmp_path), tmp_path / "m0.onnx", {0: 0, 2: 0, 3: 0})  # dim_value 0: dynamic to our shapes
    rc, out, _ = run(capfd, "inspect", m0, "--input-shape", "x:1,3,16,16", "--json", "-")
    assert rc == 0 and json.loads(out)["macs"] == 16 * 16 * 16 * 3 * 9 + 16 * 10


def test_minus_one_in_an_input_shape_spec_takes_the_model_dim(capfd, tmp_path):
    """-1 in --input-shape (as the exporter wrote the dim) means the model's own dim, or 1 for a free batch."""
    from onnxcompress.analysis.shapes import parse_input_shape, resolve_input_shapes
    from onnxcompress.errors import ShapeError

    mhw = _with_dims(tiny(tmp_path), tmp_path / "mhw.onnx", {0: -1, 2: -1, 3: -1})
    model = ir.load(mhw)
    assert parse_input_shape("x:-1,3,16,16") == ("x", (-1, 3, 16, 16))
    assert resolve_input_shapes(model, {"x": (-1, -1, 16, 20)}) == {"x": (1, 3, 16, 20)}
    assert resolve_input_shapes(model, {"x": (4, 3, 8, 8)}) == {"x": (4, 3, 8, 8)}
    with pytest.raises(ShapeError, match=r"dim 2 is dynamic \(dim_value -1\)"):
        resolve_input_shapes(model, {"x": (-1, 3, -1, 16)})
    with pytest.raises(ShapeError, match="dims must be positive, or -1"):
        parse_input_shape("x:-2,3,16,16")
    rc, out, _ = run(capfd, "inspect", mhw, "--input-shape", "x:-1,3,16,16", "--json", "-")
    assert rc == 0 and json.loads(out)["macs"] == 16 * 16 * 16 * 3 * 9 + 16 * 10
    assert run(capfd, mhw, "-o", tmp_path / "o.onnx", "--input-shape", "x:-1,-1,16,16", "-q")[0] == 0
    assert _dims(tmp_path / "o.onnx") == [-1, 3, -1, -1]


@pytest.mark.parametrize("extra", [[], ["--batch", "3"], ["--input-shape", "x:3,3,16,16"]],
                         ids=["default", "batch3", "input-shape"])
def test_minus_one_batch_in_bench(capfd, tmp_path, extra):
    m1 = _with_dims(tiny(tmp_path), tmp_path / "m1.onnx", {0: -1})
    rc, _, err = run(capfd, "bench", m1, "--iters", "1", "--warmup", "0", "-q", *extra)
    assert rc == 0, err
    assert err == ""
