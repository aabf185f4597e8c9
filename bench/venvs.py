"""The separate interpreters some scripts need: torch, PaddlePaddle, TensorFlow, the real-model packages.

The project venv (``.venv``) holds the package and its tests only. A script that exports
models or copies them out of other packages runs under its own venv, found in this order:
an option where the script has one (``--python``, ``--tf-python``), the environment
variable below, or a folder at the repository root (all git-ignored). Create each once:

=======  ==============================  ================  =============================================
name     variable                        default           create with (from the repository root)
=======  ==============================  ================  =============================================
torch    ``ONNXCOMPRESS_TORCH_PYTHON``   ``.venv-torch``   ``python3 -m venv .venv-torch && .venv-torch/bin/pip install -e . -r bench/requirements-torch.txt``
paddle   ``ONNXCOMPRESS_PADDLE_PYTHON``  ``.venv-paddle``  ``python3 -m venv .venv-paddle && .venv-paddle/bin/pip install paddlepaddle paddle2onnx packaging``
tf       ``ONNXCOMPRESS_TF_PYTHON``      ``.venv-tf``      ``python3 -m venv .venv-tf && .venv-tf/bin/pip install tensorflow-cpu tf2onnx``
real     ``ONNXCOMPRESS_REAL_PYTHON``    ``.venv-real``    ``python3 -m venv .venv-real && .venv-real/bin/pip install -r bench/real/requirements.txt``
=======  ==============================  ================  =============================================

``python bench/run_suite.py`` (or any script that calls ``run_under``) started from another
interpreter re-executes itself under its venv, so the project venv can launch everything.
Only the standard library is imported here.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: name -> (environment variable, default venv folder at the repository root, module that proves it)
VENVS = {
    "torch": ("ONNXCOMPRESS_TORCH_PYTHON", ".venv-torch", "torch"),
    "paddle": ("ONNXCOMPRESS_PADDLE_PYTHON", ".venv-paddle", "paddle"),
    "tf": ("ONNXCOMPRESS_TF_PYTHON", ".venv-tf", "tensorflow"),
    "real": ("ONNXCOMPRESS_REAL_PYTHON", ".venv-real", "rapidocr_onnxruntime"),
}


def interpreter(name: str, option: str | None = None) -> Path:
    """The Python of venv ``name``: ``option`` if given, else its variable, else ``ROOT/<default>/bin/python``."""
    variable, folder, _ = VENVS[name]
    chosen = option or os.environ.get(variable)
    return Path(chosen) if chosen else ROOT / folder / "bin" / "python"


def missing(name: str, python: Path) -> str:
    """One line saying where the interpreter was looked for and how to create it."""
    variable, folder, _ = VENVS[name]
    return (f"no {name} interpreter at {python}: set {variable}, or create {folder} "
            f"(see bench/venvs.py for the one command)")


def run_under(name: str, option: str | None = None) -> None:
    """Re-execute the running script under venv ``name`` unless this interpreter already has it.

    Returns when the current interpreter imports the venv's module (or is that venv's
    Python); otherwise replaces the process, or exits with one line when there is none.
    """
    _, _, module = VENVS[name]
    python = interpreter(name, option)
    if importlib.util.find_spec(module) is not None:
        return
    if not python.exists():
        raise SystemExit(missing(name, python))
    if Path(sys.executable).absolute() == python.absolute():
        raise SystemExit(f"{python} has no module {module!r}: install it into that venv (see bench/venvs.py)")
    os.execv(str(python), [str(python), *sys.argv])
