"""``python -m onnxcompress``: Ctrl-C at any moment, even while the imports load, is one line and exit 130."""

try:
    from onnxcompress.cli import main
except (KeyboardInterrupt, ImportError) as exc:
    import sys

    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, KeyboardInterrupt):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        raise
    sys.stderr.write("onnxcompress: interrupted\n")
    raise SystemExit(130) from None

raise SystemExit(main())
