"""``python -m onnxcompress``: Ctrl-C at any moment, even while the imports load, is one line and exit 130."""

try:
    from onnxcompress.cli import main
except KeyboardInterrupt:
    import sys

    sys.stderr.write("onnxcompress: interrupted\n")
    raise SystemExit(130) from None

raise SystemExit(main())
