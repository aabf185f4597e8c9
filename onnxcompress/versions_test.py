from __future__ import annotations

import json
import platform
from importlib import metadata

import numpy as np
import onnx

import onnxcompress

from onnxcompress.check_report import CheckReport
from onnxcompress.report import CompressReport, ModelStats
from onnxcompress.versions import DISTRIBUTIONS, library_versions


def test_versions_name_the_installed_libraries_and_none_for_absent_ones():
    v = library_versions()
    assert list(v) == ["python", "onnxcompress", *DISTRIBUTIONS]
    assert v["onnxcompress"] == onnxcompress.__version__
    assert v["python"] == platform.python_version()
    assert v["numpy"] == metadata.version("numpy") and np.__version__ == v["numpy"]
    assert v["onnx"] == onnx.__version__
    assert v["onnxruntime"] is not None and v["onnxcompress"] is not None
    for name, version in v.items():
        assert version is None or (isinstance(version, str) and version[0].isdigit()), (name, version)


def test_compress_and_check_reports_carry_the_versions():
    rep = CompressReport(input=None, output=None, config={}, before=ModelStats(0, 0, 0), after=ModelStats(0, 0, 0))
    assert json.loads(rep.to_json())["versions"] == library_versions()
    first = rep.to_dict()
    first["versions"]["numpy"] = "edited"  # a report's copy is its own
    assert rep.to_dict()["versions"]["numpy"] == np.__version__
    check = CheckReport(model="a.onnx", compressed="b.onnx")
    assert json.loads(check.to_json())["versions"] == library_versions()


def test_version_option_prints_every_library_and_exits_zero(capsys):
    from onnxcompress.cli import main

    try:
        code = main(["--version"])
    except SystemExit as exc:  # argparse's exit, as for --help
        code = exc.code
    out = capsys.readouterr().out.splitlines()
    assert code in (0, None)
    v = library_versions()
    assert out[0] == f"onnxcompress {v['onnxcompress']}"
    assert f"onnxruntime {v['onnxruntime']}" in out[1] and f"numpy {v['numpy']}" in out[1]
    assert out[1].startswith(f"python {platform.python_version()}, ")
