"""Settings for the whole test suite (tests/ and the *_test.py files beside the modules)."""

import os

# A rule that raises is a bug: in the tests it fails loudly instead of becoming a blocker.
os.environ.setdefault("ONNXCOMPRESS_STRICT_RULES", "1")
