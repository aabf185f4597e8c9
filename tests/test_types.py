"""The rule interface and the pruning engines type-check (mypy, configured in pyproject.toml).

A rule that reaches past its declared context (``AnalysisContext``, ``RewriteContext``,
``FoldContext``) or returns something the engine does not act on fails here.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                    reason="mypy is not installed (it comes with the test extra: pip install -e '.[test]')")
def test_channels_and_pruning_type_check():
    proc = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    errors = [ln for ln in proc.stdout.splitlines() if ": error:" in ln]
    assert proc.returncode == 0 and not errors, "\n".join(errors or [proc.stdout[-2000:], proc.stderr[-2000:]])
