"""Settings for the whole test suite (tests/ and the *_test.py files beside the modules)."""

import os

# A rule that raises is a bug: in the tests it fails loudly instead of becoming a blocker.
os.environ.setdefault("ONNXCOMPRESS_STRICT_RULES", "1")

# --recover auto means distillation where torch is installed (minutes per model): the suite's
# calibrated tests exercise the refit; the distillation tests ask for it by name.
os.environ.setdefault("ONNXCOMPRESS_AUTO_RECOVER", "refit")
