"""Peak memory of reading a large calibration folder: thinned before decoding, so it stays bounded.

Writes N page-sized PNG images (640x640 RGB: 4.9 MB each as float32 model input), builds a
one-Conv model taking (N, 3, 640, 640), and reads the folder with ``load_calibration`` in a
fresh process, once with the default budget and once with ``--calib-samples 64``, under
/usr/bin/time: peak RSS, wall time and samples kept.

    python bench/calib_memory.py --images 2000     # results in bench/calib_memory.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

READ = """
import sys, time, json
sys.path.insert(0, {root!r})
from onnxcompress.calibration import load_calibration, ImageSpec
from onnxcompress.io import load_model
t = time.perf_counter()
cal = load_calibration({folder!r}, load_model({model!r}), ImageSpec(), limit={limit})
print(json.dumps({{"samples": cal.samples, "seconds": time.perf_counter() - t, "notes": cal.notes}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    a = ap.parse_args()
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from PIL import Image, ImageDraw

    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "pages"
        folder.mkdir()
        rng = np.random.default_rng(0)
        t = time.perf_counter()
        for i in range(a.images):
            img = Image.new("RGB", (640, 640), tuple(int(v) for v in rng.integers(180, 256, 3)))
            draw = ImageDraw.Draw(img)
            for y in range(20, 620, 40):
                draw.text((20, y), f"page {i} line {y} " * 4, fill=(0, 0, 0))
            img.save(folder / f"{i:05d}.png")
        written = time.perf_counter() - t
        w = numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "w")
        graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 640, 640])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
        model = Path(d) / "m.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
        rows = []
        for limit in (None, 64):
            code = READ.format(root=str(ROOT), folder=str(folder), model=str(model), limit=limit)
            p = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-c", code], capture_output=True, text=True)
            out = json.loads(p.stdout.strip().splitlines()[-1])
            rows.append({"calib_samples": limit, "images": a.images, **out,
                         "all_as_input_gb": round(a.images * 3 * 640 * 640 * 4 / 2**30, 2),
                         "peak_rss_mb": round(int(p.stderr.strip().splitlines()[-1]) / 1024)})
            print(json.dumps(rows[-1]), flush=True)
    (ROOT / "bench" / "calib_memory.json").write_text(json.dumps({"written_s": written, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
