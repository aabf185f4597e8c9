from onnxcompress.cli import main

raise SystemExit(main())
