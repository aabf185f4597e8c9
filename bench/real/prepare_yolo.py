"""NudeNet's YOLOv8n detector (``320n.onnx``, 12 MB, one (N, 22, 2100) box-and-score output), with photos.

Copies ``320n.onnx`` out of the nudenet wheel, and draws three sets of 320x320 inputs,
preprocessed as nudenet does (padded right and bottom to a square, resized, RGB, 0-1), from
the photographs scikit-image and matplotlib ship (``skimage/data``, ``grace_hopper.jpg``):
every other sample comes from the three photos of people (astronaut, camera, grace_hopper),
the rest from all 27:

- ``calib``: 160 unlabelled crops (55-100% of the photo, mirrored half the time, brightness
  and contrast jittered);
- ``test``: 200 more crops drawn the same way;
- ``shift``: 200 crops drawn differently: 35-100% of the photo, a Gaussian blur, noise and JPEG
  at quality 20-60.

There are no human labels. What ``bench/yolo_head.py`` measures is how well a pruned model
keeps the original's detections on these photos (score 0.25, NMS 0.45, as nudenet reads them):
a prediction of accuracy, closer to it than random-input figures, not accuracy.

    python bench/real/prepare_yolo.py   # bench/.cache/real/nudenet_320n.{onnx,calib.npz,test.npz,shift.npz,json}
"""
from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import shutil
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from venvs import run_under

    run_under("real")

import numpy as np  # noqa: E402
from PIL import Image, ImageFilter, ImageOps  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.normpath(os.path.join(HERE, "..", ".cache", "real"))
NAME = "nudenet_320n"
PEOPLE = {"astronaut.png", "camera.png", "grace_hopper.jpg"}
SIZE = 320


def photos() -> list[tuple[str, Image.Image]]:
    import matplotlib
    import skimage

    data = os.path.join(os.path.dirname(skimage.__file__), "data")
    files = sorted(glob.glob(os.path.join(data, "*.png")) + glob.glob(os.path.join(data, "*.jpg")))
    files.append(os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data", "grace_hopper.jpg"))
    out = []
    for f in files:
        img = Image.open(f).convert("RGB")
        if min(img.size) >= 64:
            out.append((os.path.basename(f), img))
    return out


def preprocess(img: Image.Image) -> np.ndarray:
    """nudenet's reading: pad right and bottom to a square (black), resize to 320, RGB, 0-1, CHW."""
    side = max(img.size)
    square = Image.new("RGB", (side, side), (0, 0, 0))
    square.paste(img, (0, 0))
    return np.asarray(square.resize((SIZE, SIZE), Image.BILINEAR), np.float32).transpose(2, 0, 1) / 255.0


def draw(seed: int, n: int, shifted: bool, pool: list[tuple[str, Image.Image]]) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    people = [p for p in pool if p[0] in PEOPLE]
    out, names = np.empty((n, 3, SIZE, SIZE), np.float32), []
    for i in range(n):
        name, img = (people if i % 2 == 0 else pool)[rng.integers(len(people if i % 2 == 0 else pool))]
        w, h = img.size
        s = rng.uniform(0.35 if shifted else 0.55, 1.0)
        cw, ch = max(32, int(w * s)), max(32, int(h * s))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = img.crop((x0, y0, x0 + cw, y0 + ch))
        if rng.random() < 0.5:
            crop = ImageOps.mirror(crop)
        a = np.asarray(crop, np.float32)
        a = np.clip(a * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20), 0, 255)
        if shifted:
            a = np.asarray(Image.fromarray(a.astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0))),
                           np.float32)
            a = np.clip(a + rng.normal(0, rng.uniform(3, 12), a.shape), 0, 255)
            buf = io.BytesIO()
            Image.fromarray(a.astype(np.uint8)).save(buf, "JPEG", quality=int(rng.integers(20, 61)))
            crop = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
        else:
            crop = Image.fromarray(a.astype(np.uint8))
        out[i] = preprocess(crop)
        names.append(name)
    return out, names


def main() -> int:
    import nudenet

    os.makedirs(CACHE, exist_ok=True)
    src = os.path.join(os.path.dirname(nudenet.__file__), "320n.onnx")
    dst = os.path.join(CACHE, f"{NAME}.onnx")
    shutil.copyfile(src, dst)
    pool = photos()
    sets = {"calib": draw(41, 160, False, pool), "test": draw(42, 200, False, pool), "shift": draw(43, 200, True, pool)}
    for split, (x, names) in sets.items():
        np.savez_compressed(os.path.join(CACHE, f"{NAME}.{split}.npz"), images=x)
    with open(dst, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    meta = {"name": NAME, "input_name": "images", "input_shape": [3, SIZE, SIZE], "task": "detect",
            "package": "nudenet 3.4.2", "source_file": "nudenet/320n.onnx", "sha256": sha,
            "photos": [p[0] for p in pool], "splits": {k: len(v[1]) for k, v in sets.items()},
            "people_share": {k: sum(n in PEOPLE for n in v[1]) / len(v[1]) for k, v in sets.items()}}
    with open(os.path.join(CACHE, f"{NAME}.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"{NAME}: images (N,3,{SIZE},{SIZE}); {len(pool)} photos; calib 160, test 200, shift 200 -> {CACHE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
