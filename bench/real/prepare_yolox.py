"""ddddocr's character detector (YOLOX-style, 20 MB, 416x416) with unlabelled calibration images.

Copies ``common_det.onnx`` out of the ddddocr wheel and renders 128 click-captcha-like images
(coloured, noisy backgrounds with 3-6 large rotated glyphs), preprocessed as ddddocr does:
letterboxed into 416x416 with padding 114, CHW, float32 0-255. There are no labels: the
detector serves the allocation-time measurements (``bench/taylor_vs_sweep.py``), judged by
held-out fidelity. Runs under the real-model venv (``bench/venvs.py``).

    python bench/real/prepare_yolox.py      # bench/.cache/real/ddddocr_det.{onnx,calib.npz,json}
"""
from __future__ import annotations

import json
import os
import shutil
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from venvs import run_under

    run_under("real")

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter, ImageFont  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.normpath(os.path.join(HERE, "..", ".cache", "real"))
FONT_DIR = "/usr/share/fonts/truetype/dejavu"
FONTS = ["DejaVuSans-Bold.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSans.ttf", "DejaVuSerif.ttf"]
GLYPHS = "ABDEFGHKMNPRTWXYabdefghkmnpqrtwy2345678"


def render(rng: np.random.Generator) -> Image.Image:
    w, h = int(rng.integers(280, 360)), int(rng.integers(140, 200))
    base = rng.integers(90, 240, 3)
    grad = np.linspace(0, 1, w)[None, :, None] * rng.integers(-60, 60, 3)[None, None, :]
    a = np.clip(base[None, None, :] + grad + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(a).filter(ImageFilter.GaussianBlur(1.5))
    for _ in range(int(rng.integers(3, 7))):
        font = ImageFont.truetype(os.path.join(FONT_DIR, FONTS[rng.integers(0, len(FONTS))]), int(rng.integers(28, 48)))
        g = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
        ImageDraw.Draw(g).text((8, 2), GLYPHS[rng.integers(0, len(GLYPHS))], font=font,
                              fill=tuple(int(v) for v in rng.integers(0, 256, 3)) + (255,))
        g = g.rotate(float(rng.uniform(-40, 40)), resample=Image.BILINEAR)
        img.paste(g, (int(rng.integers(0, w - 64)), int(rng.integers(0, h - 64))), g)
    return img


def letterbox(img: Image.Image, size: int = 416) -> np.ndarray:
    r = min(size / img.height, size / img.width)
    small = img.resize((int(img.width * r), int(img.height * r)), Image.BILINEAR)
    out = np.full((size, size, 3), 114, np.uint8)
    out[: small.height, : small.width] = np.asarray(small)[:, :, ::-1]  # ddddocr decodes with cv2: BGR
    return out.transpose(2, 0, 1).astype(np.float32)


def main() -> int:
    import ddddocr

    os.makedirs(CACHE, exist_ok=True)
    src = os.path.join(os.path.dirname(ddddocr.__file__), "common_det.onnx")
    shutil.copyfile(src, os.path.join(CACHE, "ddddocr_det.onnx"))
    x = np.stack([letterbox(render(np.random.default_rng([31, 1, i]))) for i in range(128)])
    np.savez_compressed(os.path.join(CACHE, "ddddocr_det.calib.npz"), images=x)
    import onnxruntime as ort

    name = ort.InferenceSession(src, providers=["CPUExecutionProvider"]).get_inputs()[0].name
    if name != "images":
        np.savez_compressed(os.path.join(CACHE, "ddddocr_det.calib.npz"), **{name: x})
    meta = {"name": "ddddocr_det", "input_name": name, "input_shape": [3, 416, 416], "task": "detect",
            "package": "ddddocr", "source_file": "ddddocr/common_det.onnx", "n_calib": 128}
    with open(os.path.join(CACHE, "ddddocr_det.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"ddddocr_det: {name} (N,3,416,416), 128 calibration images -> {CACHE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
