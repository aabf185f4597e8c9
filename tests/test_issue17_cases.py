"""Issue 17, item 1: the reliability cases the first pass missed, and the rules behind them.

- a user file that parses but holds nothing (an ``--eval`` or ``--calib`` set of zero
  samples, a recipe without a setting) is one line and exit 2, not an internal error;
- initializers listed as graph inputs (old model-zoo exports) are constants when nothing
  feeds them: such a model compresses, even where the file declares no shape for them;
- a signal at any stage, also one that lands in a finaliser during the staged write or
  arrives while another error is on its way, is one line, exit 130 (SIGINT) or 143
  (SIGTERM), and leaves no output and no temporary file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxcompress.cli import main
from tests.conftest import MODELS

REPO = Path(__file__).resolve().parent.parent


def one_line(stderr: str, needle: str = "") -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert needle in lines[0], stderr
    assert "Traceback" not in stderr
    return lines[0]


def run_main(capfd, *args) -> tuple[int, str]:
    rc = main([str(a) for a in args])
    return rc, capfd.readouterr().err


# ----------------------------------------------------------------------------- files that hold nothing
@pytest.fixture
def digits(tmp_path) -> dict[str, Path]:
    z = np.load(MODELS / "digits_eval.npz")
    x, y = z["x"], z["y"]
    paths = {"calib": tmp_path / "calib.npz", "eval_empty": tmp_path / "eval0.npz", "calib_empty": tmp_path / "calib0.npz"}
    np.savez(paths["calib"], input=x[:64])
    np.savez(paths["eval_empty"], x=x[:0], y=y[:0])
    np.savez(paths["calib_empty"], input=x[:0])
    return paths


def test_eval_with_zero_samples_is_one_line(capfd, digits, tmp_path):
    model = MODELS / "digits_cnn.onnx"
    rc, err = run_main(capfd, model, "--calib", digits["calib"], "--eval", digits["eval_empty"], "--max-accuracy-drop",
                       "0.05", "-o", tmp_path / "c.onnx", "-q")
    assert rc == 2  # was 3: IndexError
    one_line(err, "holds no samples")
    rc, err = run_main(capfd, "check", model, model, "--eval", digits["eval_empty"], "-q")
    assert rc == 2
    one_line(err, "holds no samples")
    assert not (tmp_path / "c.onnx").exists()


@pytest.mark.parametrize("what", ["empty arrays", "zero-byte file", "folder of empty arrays"])
def test_calib_that_holds_nothing_is_one_line(capfd, digits, tmp_path, what):
    if what == "empty arrays":
        calib, needle = digits["calib_empty"], "holds no samples"
    elif what == "zero-byte file":
        calib, needle = tmp_path / "zero.npz", "cannot read"  # was exit 3: EOFError
        calib.write_bytes(b"")
    else:
        calib, needle = tmp_path / "d", "holds no samples"
        calib.mkdir()
        np.save(calib / "a.npy", np.zeros((0, 1, 8, 8), np.float32))
    rc, err = run_main(capfd, MODELS / "digits_cnn.onnx", "--calib", calib, "-o", tmp_path / "c.onnx", "-q")
    assert rc == 2
    one_line(err, needle)


@pytest.mark.parametrize("text", ["", "[compress]\n[check]\n"])
def test_recipe_without_a_setting_is_one_line(capfd, tmp_path, text):
    """An empty recipe was run as if absent: most likely the wrong file, and the gate it meant lost."""
    recipe = tmp_path / "r.toml"
    recipe.write_text(text)
    model = MODELS / "digits_cnn.onnx"
    for args in ([model, "-o", tmp_path / "c.onnx"], ["check", model, model]):
        rc, err = run_main(capfd, *args, "--recipe", recipe, "-q")
        assert rc == 2
        one_line(err, "holds no settings")
    assert not (tmp_path / "c.onnx").exists()


# ----------------------------------------------------------------------------- weights listed as graph inputs
def _weights_as_inputs(src: Path, dst: Path, *, declare_shape: bool, ir_version: int | None = None) -> Path:
    """``src`` with every initializer also listed as a graph input, as old exporters wrote them.

    Without ``declare_shape`` the inputs carry their element type only: onnxruntime runs
    such a file (the initializers are the values), the onnx checker refuses it.
    """
    model = onnx.load(src)
    listed = {i.name for i in model.graph.input}
    for t in model.graph.initializer:
        if t.name not in listed:
            shape = list(t.dims) if declare_shape else None
            model.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, shape))
    if ir_version is not None:
        model.ir_version = ir_version
    onnx.save(model, dst)
    return dst


@pytest.mark.parametrize("declare_shape", [True, False], ids=["declared", "no-shape"])
@pytest.mark.parametrize("src,ir_version", [("zoo_opset9_resnet.onnx", None), ("resnet_small.onnx", 3), ("resnet_small.onnx", None)])
@pytest.mark.parametrize("simplify", [True, False], ids=["simplify", "no-simplify"])
def test_weights_listed_as_inputs_compress(capfd, tmp_path, src, ir_version, declare_shape, simplify):
    model = _weights_as_inputs(MODELS / src, tmp_path / "old.onnx", declare_shape=declare_shape, ir_version=ir_version)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    real = {i.name: i for i in sess.get_inputs()}
    assert len(real) == 1  # onnxruntime runs it with the weights as constants
    out = tmp_path / "c.onnx"
    rc, err = run_main(capfd, model, "--ratio", "0.3", "-o", out, "-q", *([] if simplify else ["--no-simplify"]))
    assert rc == 0, err  # was 2 without declared shapes: "onnx checker rejected the output"
    pruned = onnx.load(out)
    onnx.checker.check_model(pruned, full_check=True)
    inits = {t.name: t for t in pruned.graph.initializer}
    for vi in pruned.graph.input:  # every listed weight declares its (pruned) tensor's shape
        if vi.name in inits:
            assert [d.dim_value for d in vi.type.tensor_type.shape.dim] == list(inits[vi.name].dims)
    assert pruned.ir_version >= 4 or {vi.name for vi in pruned.graph.input} >= set(inits)  # IR 3 lists them all
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in got.get_inputs()] == list(real)  # the same real inputs, nothing else to feed
    name, info = next(iter(real.items()))
    x = np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in info.shape]).astype(np.float32)
    assert np.isfinite(got.run(None, {name: x})[0]).all()


# ----------------------------------------------------------------------------- signals at every stage
# The child sends itself the signal when a named function is entered (``AT``), or from a
# finaliser that runs inside the staged write (``FINALISER``): a signal landing there used to
# print "Exception ignored ... Traceback" and be lost, so the command carried on and wrote its
# output, or reported the error the interrupted write raised (exit 2).
_CHILD = textwrap.dedent("""
    import gc, errno, functools, importlib, os, signal, sys
    from pathlib import Path
    sig = getattr(signal, os.environ["SIG"])
    at = os.environ.get("AT")
    if at:
        mod, _, attr = at.rpartition(":")
        owner = importlib.import_module(mod)
        *path, last = attr.split(".")
        for p in path:
            owner = getattr(owner, p)
        orig = getattr(owner, last)
        fired = []
        @functools.wraps(orig)
        def wrapper(*a, **k):
            if not fired:
                fired.append(1)
                os.kill(os.getpid(), sig)
            return orig(*a, **k)
        setattr(owner, last, wrapper)
    mode = os.environ.get("FINALISER")
    if mode:
        import onnx_ir as ir
        real_save = ir.save
        class Signals:
            def __del__(self):
                os.kill(os.getpid(), sig)
        def save(model, path, external_data=None, **kw):
            real_save(model, path, external_data=external_data, **kw)
            cycle = Signals()
            cycle.self = cycle
            del cycle
            gc.collect()  # the finaliser runs here, and Python handles the signal inside it
            if mode == "then-error":
                raise OSError(errno.EINTR, "Interrupted system call")
        ir.save = save
    if os.environ.get("SPILL_MIN_BYTES"):  # cut weights go to the output's data file from this size on
        import onnxcompress.spill
        onnxcompress.spill.MIN_BYTES = int(os.environ["SPILL_MIN_BYTES"])
    from onnxcompress.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _interrupt(ext: Path, sig: str, *args: str, **env) -> tuple[subprocess.CompletedProcess, Path]:
    tmp = ext.parent / "tmp"
    tmp.mkdir()
    out = ext.parent / "out"
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(ext), "-o", str(out / "c.onnx"), "--report",
                           str(ext.parent / "r.json"), "-q", *args], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "SIG": sig, "TMPDIR": str(tmp), **env})
    return proc, tmp


def _left(ext: Path, tmp: Path) -> list[str]:
    """What the command left: anything beside the input, and our temporaries (onnxruntime's .ses aside)."""
    beside = sorted(p.name for p in ext.parent.iterdir() if p.name not in ("dynamo_ext.onnx", "dynamo_ext.onnx.data", "tmp"))
    return beside + sorted(p.name for p in tmp.iterdir() if p.name != ".ses")


@pytest.mark.parametrize("sig,code,word", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
@pytest.mark.parametrize("mode", ["swallowed", "then-error"])
def test_signal_in_a_finaliser_during_the_staged_write(ext, sig, code, word, mode):
    proc, tmp = _interrupt(ext, sig, FINALISER=mode)
    assert proc.returncode == code, proc.stderr  # was 0 (output written) or 2 ("Interrupted system call")
    one_line(proc.stderr, word)  # was "Exception ignored in ... Traceback"
    assert _left(ext, tmp) == []


#: with --ratio 0.5 and every cut weight written into the output's staged data file as the prune
#: pass goes (``spill``): a signal then, or while the rest is appended to it, leaves nothing either
SPILL_STAGES = [
    "onnxcompress.spill:Region.write",
    "onnxcompress.spill:Region.seal",
    "onnxcompress.verify:VerifyPass.call",
    "onnxcompress.spill:DataSink.complete",
    "onnxcompress.io:_stage_with_sink",
]


@pytest.mark.parametrize("sig,code,word", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
@pytest.mark.parametrize("stage,spill", [(s, False) for s in [
    "onnxcompress.io:load_model",
    "onnxcompress.verify:ReferencePass.call",
    "onnxcompress.passes.prune:PrunePass.call",
    "onnxcompress.passes.simplify:SimplifyPass.call",
    "onnxcompress.verify:VerifyPass.call",
    "onnxcompress.io:stage_model",
    "onnx_ir:save",
    "onnxcompress.paths:Staging.text",
    "onnxcompress.paths:Staging.commit",
]] + [(s, True) for s in SPILL_STAGES])
def test_signal_at_every_stage(ext, stage, spill, sig, code, word):
    """(Exit 130/143 also shows that the run reached the named step: the signal is sent from it.)"""
    args, env = (["--ratio", "0.5"], {"SPILL_MIN_BYTES": "1"}) if spill else ([], {})
    proc, tmp = _interrupt(ext, sig, *args, AT=stage, **env)
    assert proc.returncode == code, proc.stderr
    one_line(proc.stderr, word)
    assert _left(ext, tmp) == []


def test_second_ctrl_c_does_not_cut_the_cleanup_short(ext):
    """The first Ctrl-C stops the command; one during the cleanup used to leave the staged folder behind."""
    proc, tmp = _interrupt(ext, "SIGINT", AT="onnxcompress.paths:Staging.discard", FINALISER="then-error")
    assert proc.returncode == 130, proc.stderr
    one_line(proc.stderr, "interrupted")
    assert _left(ext, tmp) == []
