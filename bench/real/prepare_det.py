"""Prepare the dense-map text detectors (DBNet) + offline labelled pages for
bench/real/evaluate_det.py.

Run with the separate venv (see bench/real/requirements.txt):

    .venv-real/bin/python bench/real/prepare_det.py [--only NAME ...] [--n-calib 128]
                                                       [--n-eval 200] [--n-shift 200]

For every model NAME (ppocr_det, ppocrv3_det) it writes into bench/.cache/real/:
    NAME.onnx        copied verbatim out of the PyPI wheel
    NAME.calib.npz   128 unlabelled pages, preprocessed float32 model input under key `x`
                     (N, 3, 640, 640), split seed 1
    NAME.eval.npz    200 labelled pages (split seed 2), same style as calib:
                     `image` uint8 BGR (N, 640, 640, 3), `boxes` float32 (N, Bmax, 4)
                     x0,y0,x1,y1 text-line boxes padded with -1
    NAME.shift.npz   200 labelled pages drawn differently (split seed 3): other fonts, tiny and
                     huge text, coloured backgrounds, low contrast, noise, blur, JPEG
    NAME.json        metadata (input/output names, shapes, normalisation, post-processing,
                     provenance, seeds)

ppocr_det comes from the installed rapidocr-onnxruntime 1.4.4. ppocrv3_det comes from the
rapidocr-onnxruntime 1.2.3 wheel, which cannot be installed next to 1.4.4: it is fetched with
`pip download --no-deps` into bench/.cache/real/wheels/ (once) and the .onnx is read out of
the zip, checked against the wheel's RECORD and a pinned sha256.

Both models see the same pages (seed stream [31, split, i]); only the normalisation differs.
Everything is deterministic.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import subprocess
import sys
import time
import zipfile
from importlib import metadata as ilm

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from evaluate_det import db_boxes, greedy_match, preprocess  # noqa: E402

CACHE = os.path.normpath(os.path.join(HERE, "..", ".cache", "real"))
FONT_DIR = "/usr/share/fonts/truetype/dejavu"
PAGE = 640

SPLIT_CALIB, SPLIT_EVAL, SPLIT_SHIFT = 1, 2, 3
DATA_ID = 31  # page stream shared by both detectors

POSTPROCESS = dict(thresh=0.3, box_thresh=0.5, unclip_ratio=1.6, min_size=3, use_dilation=True,
                   score_mode="fast", iou_thresh=0.5)

MODELS = {
    "ppocr_det": dict(
        package="rapidocr-onnxruntime", version="1.4.4",
        member="rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        sha256="d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
        installed=True,
        # rapidocr 1.4.4 config.yaml Det: mean/std [0.5]*3, DetPreProcess float64 arithmetic
        normalize=dict(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5], scale=1 / 255.0, arith="float64",
                       channel_order="BGR"),
    ),
    "ppocrv3_det": dict(
        package="rapidocr-onnxruntime", version="1.2.3",
        member="rapidocr_onnxruntime/models/ch_PP-OCRv3_det_infer.onnx",
        sha256="3439588c030faea393a54515f51e983d8e155b19a2e8aba7891934c1cf0de526",
        installed=False,
        # rapidocr 1.2.3 ch_ppocr_v3_det/config.yaml NormalizeImage (ImageNet stats applied to
        # the BGR image in HWC order, float32 arithmetic)
        normalize=dict(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], scale=1 / 255.0,
                       arith="float32", channel_order="BGR"),
    ),
}


def rng_for(split: int, i: int) -> np.random.Generator:
    return np.random.default_rng([DATA_ID, split, i])


def sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# ----------------------------------------------------------------------------- model files
def model_bytes(name: str, cache: str) -> tuple[bytes, str]:
    """Returns (onnx bytes, source description)."""
    spec = MODELS[name]
    if spec["installed"]:
        import rapidocr_onnxruntime as r
        v = ilm.version("rapidocr-onnxruntime")
        if v != spec["version"]:
            raise RuntimeError(f"need rapidocr-onnxruntime=={spec['version']}, found {v}")
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(r.__file__))),
                            spec["member"])
        with open(path, "rb") as f:
            data = f.read()
        src = spec["member"]
    else:
        wdir = os.path.join(cache, "wheels")
        os.makedirs(wdir, exist_ok=True)
        whl = os.path.join(wdir, f"rapidocr_onnxruntime-{spec['version']}-py3-none-any.whl")
        if not os.path.exists(whl):
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                            f"{spec['package']}=={spec['version']}", "-d", wdir], check=True)
        with zipfile.ZipFile(whl) as z:
            data = z.read(spec["member"])
            record = z.read(f"rapidocr_onnxruntime-{spec['version']}.dist-info/RECORD").decode()
        want = [ln.split(",")[1] for ln in record.splitlines() if ln.startswith(spec["member"] + ",")][0]
        got = "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        if got != want:
            raise RuntimeError(f"{spec['member']}: RECORD says {want}, file is {got}")
        src = f"{os.path.basename(whl)}:{spec['member']}"
    if sha256_bytes(data) != spec["sha256"]:
        raise RuntimeError(f"{name}: unexpected sha256 {sha256_bytes(data)}")
    return data, src


# ----------------------------------------------------------------------------- text content
from prepare import WORDS  # noqa: E402  (the recognizer bench's word list: one text source for both)


def token(rng: np.random.Generator) -> str:
    k = rng.random()
    if k < 0.80:
        w = WORDS[int(rng.integers(0, len(WORDS)))]
        return w.capitalize() if rng.random() < 0.2 else w
    if k < 0.88:
        return f"{rng.integers(1, 9999)}.{rng.integers(0, 100):02d}"
    if k < 0.93:
        return f"{rng.integers(1990, 2030)}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}"
    return str(int(rng.integers(1, 10 ** int(rng.integers(1, 6)))))


def line_text(rng, font, max_w: float) -> str:
    """Words joined by single spaces, filling a random fraction of max_w."""
    target = max_w * rng.uniform(0.25, 1.0)
    words = [token(rng)]
    while True:
        w = token(rng)
        cand = " ".join(words + [w])
        if font.getlength(cand) > target:
            break
        words.append(w)
    if rng.random() < 0.15:
        words[-1] += rng.choice([".", ",", ":", ";"])
    s = " ".join(words)
    while len(words) > 1 and font.getlength(s) > max_w:
        words.pop()
        s = " ".join(words)
    return s


# ----------------------------------------------------------------------------- page styles
STYLE_CLEAN = dict(
    fonts=["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf"],
    sizes=[(9, 32)],
    lead=(1.0, 1.8),
)
STYLE_SHIFT = dict(
    fonts=["DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansCondensed.ttf",
           "DejaVuSansCondensed-BoldOblique.ttf", "DejaVuSerifCondensed-Italic.ttf",
           "DejaVuSans-Oblique.ttf", "DejaVuSans-ExtraLight.ttf", "DejaVuSerif-Italic.ttf"],
    sizes=[(8, 13), (36, 56)],  # much smaller or much larger than calib/eval
    lead=(1.15, 1.5),  # tighter line spacing
)
_FONT_CACHE: dict = {}
LINE_PROBE = "Hbdfhklgjpqy"  # glyphs spanning cap/ascender height to descender depth


def font(fname: str, size: int) -> ImageFont.FreeTypeFont:
    k = (fname, size)
    if k not in _FONT_CACHE:
        _FONT_CACHE[k] = ImageFont.truetype(os.path.join(FONT_DIR, fname), size)
    return _FONT_CACHE[k]


def colours(rng, shift: bool):
    if not shift:
        base = rng.uniform(215, 252)
        bg = np.clip(base + rng.uniform(-12, 6, 3), 0, 255)
        fg = rng.uniform(0, 130, 3)
        return bg, fg
    k = rng.random()
    if k < 0.4:  # coloured background, dark (possibly coloured) text
        bg = rng.uniform(110, 255, 3)
        fg = rng.uniform(0, 90, 3)
    elif k < 0.75:  # low contrast
        bg = np.clip(rng.uniform(150, 230) + rng.uniform(-25, 25, 3), 0, 255)
        fg = np.clip(bg - rng.uniform(40, 80), 0, 255)
    else:  # mid-gray/coloured background, darker text
        bg = rng.uniform(140, 210, 3)
        fg = rng.uniform(0, 50, 3)
    return bg, fg


def render_page(rng: np.random.Generator, shift: bool) -> tuple[np.ndarray, np.ndarray]:
    """Returns (uint8 BGR page (640, 640, 3), float32 (K, 4) text-line boxes x0,y0,x1,y1)."""
    style = STYLE_SHIFT if shift else STYLE_CLEAN
    bg, fg = colours(rng, shift)
    img = Image.new("RGB", (PAGE, PAGE), tuple(int(v) for v in bg))
    if rng.random() < 0.5:  # gentle illumination gradient
        g = np.linspace(0, 1, PAGE, dtype=np.float32)
        amp = rng.uniform(-18, 18)
        a = np.asarray(img, np.float32) + (amp * (g[:, None] if rng.random() < 0.5 else g[None, :]))[..., None]
        img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    distract = rng.random() < (0.8 if shift else 0.5)
    margin = int(rng.integers(16, 48))
    boxes = []
    y = margin + int(rng.integers(0, 30))
    bottom = PAGE - margin
    while True:
        if distract and rng.random() < 0.18:  # horizontal rule or empty box outline
            col = tuple(int(v) for v in np.clip(fg + rng.uniform(0, 80, 3), 0, 255))
            if rng.random() < 0.6:
                t = int(rng.integers(1, 4))
                x0 = margin + int(rng.integers(0, 60))
                x1 = PAGE - margin - int(rng.integers(0, 200))
                yy = y + int(rng.integers(4, 12))
                if yy + t > bottom:
                    break
                draw.rectangle([x0, yy, x1, yy + t - 1], fill=col)
                y = yy + t + int(rng.integers(8, 20))
            else:
                h = int(rng.integers(20, 70))
                x0 = margin + int(rng.integers(0, 300))
                x1 = min(PAGE - margin, x0 + int(rng.integers(40, 300)))
                if y + h + 4 > bottom:
                    break
                draw.rectangle([x0, y + 4, x1, y + 4 + h], outline=col, width=int(rng.integers(1, 3)))
                y = y + h + int(rng.integers(14, 26))
            continue
        # a paragraph: 1-4 lines with the same font, size, columns and alignment
        lo, hi = style["sizes"][int(rng.integers(0, len(style["sizes"])))]
        size = int(rng.integers(lo, hi + 1))
        f = font(style["fonts"][int(rng.integers(0, len(style["fonts"])))], size)
        asc, desc = f.getmetrics()
        k = rng.random()
        ncol = 1 if (size > 24 or k < 0.55) else (2 if k < 0.85 else 3)  # 3 ~ a table row
        gutter = max(16, int(size * rng.uniform(0.8, 3.0)))
        col_w = (PAGE - 2 * margin - gutter * (ncol - 1)) / ncol
        align = rng.choice(["left", "left", "left", "center", "right"])
        lead = rng.uniform(*style["lead"])
        nlines = int(rng.integers(1, 5))
        stop = False
        for _ in range(nlines):
            if y + asc + desc > bottom:
                stop = True
                break
            for c in range(ncol):
                cx = margin + c * (col_w + gutter)
                text = line_text(rng, f, col_w)
                w = f.getlength(text)
                if w > col_w:
                    continue
                if align == "left":
                    x = cx + (rng.uniform(0, 0.15) * (col_w - w) if rng.random() < 0.3 else 0)
                elif align == "center":
                    x = cx + (col_w - w) / 2
                else:
                    x = cx + col_w - w
                x = int(round(x))
                # exact ink box: render the line alone into a mask
                l, t, r, b = f.getbbox(text)
                mask = Image.new("L", (int(r - l) + 4, int(b - t) + 4), 0)
                ImageDraw.Draw(mask).text((2 - l, 2 - t), text, font=f, fill=255)
                bb = mask.getbbox()
                if bb is None:
                    continue
                draw.text((x, y), text, font=f, fill=tuple(int(v) for v in fg))
                # label = text-line box: ink extent horizontally; vertically at least the
                # font's ascender-to-descender band (as if the line had "H" and "g"), so a line
                # like "we are on" is not labelled with an x-height-only box
                _, bt, _, bb3 = f.getbbox(LINE_PROBE)
                box = (x + l - 2 + bb[0], min(y + t - 2 + bb[1], y + bt),
                       x + l - 2 + bb[2], max(y + t - 2 + bb[3], y + bb3))
                boxes.append(box)
                if distract and rng.random() < 0.12:  # underline just below the line
                    yy = box[3] + int(rng.integers(1, 4))
                    draw.rectangle([box[0] - 2, yy, box[2] + 2, yy + int(rng.integers(0, 2))],
                                   fill=tuple(int(v) for v in fg))
            y += int(round(size * lead))
        if stop:
            break
        y += int(rng.integers(0, 2 * size))
    # degradations
    if not shift:
        if rng.random() < 0.2:
            img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 0.7))))
        a = np.asarray(img, np.float32)
        a = a + rng.normal(0.0, float(rng.uniform(0, 4)), a.shape).astype(np.float32)
        a = np.clip(a, 0, 255).astype(np.uint8)
    else:
        if rng.random() < 0.6:
            img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.7, 1.6))))
        a = np.asarray(img, np.float32)
        a = a + rng.normal(0.0, float(rng.uniform(5, 18)), a.shape).astype(np.float32)
        a = np.clip(a, 0, 255).astype(np.uint8)
        if rng.random() < 0.6:
            q = int(rng.integers(10, 35))
            ok, enc = cv2.imencode(".jpg", a[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
            a = cv2.imdecode(enc, cv2.IMREAD_COLOR)[:, :, ::-1]
    bgr = np.ascontiguousarray(a[:, :, ::-1])  # rapidocr reads images with cv2 -> BGR
    return bgr, np.asarray(boxes, np.float32).reshape(-1, 4)


def make_pages(split: int, n: int):
    shift = split == SPLIT_SHIFT
    imgs, boxes = [], []
    for i in range(n):
        im, bx = render_page(rng_for(split, i), shift)
        imgs.append(im)
        boxes.append(bx)
    bmax = max(len(b) for b in boxes)
    B = np.full((n, bmax, 4), -1, np.float32)
    for i, b in enumerate(boxes):
        B[i, :len(b)] = b
    return np.stack(imgs), B


# ----------------------------------------------------------------------------- checks
def check_preprocess(img_bgr: np.ndarray, name: str) -> None:
    """Assert that preprocess() is bit-identical to the package's own detector preprocessing."""
    x = preprocess(img_bgr, MODELS[name]["normalize"])
    if name == "ppocr_det":
        from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess
        ref = DetPreProcess(PAGE, "min", [0.5] * 3, [0.5] * 3)(img_bgr)[0]
    else:  # rapidocr 1.2.3 NormalizeImage + ToCHWImage (resize is a no-op at 640x640)
        scale = np.float32(1.0 / 255.0)
        mean = np.array(MODELS[name]["normalize"]["mean"]).reshape(1, 1, 3).astype("float32")
        std = np.array(MODELS[name]["normalize"]["std"]).reshape(1, 1, 3).astype("float32")
        ref = ((img_bgr.astype(np.float32) * scale - mean) / std).transpose(2, 0, 1)
    if not (ref.dtype == np.float32 and np.array_equal(x, ref)):
        raise AssertionError(f"{name}: preprocess() differs from the package preprocessing")


def rapidocr_hmean(onnx_path: str, images: np.ndarray, gt_boxes: np.ndarray, norm: dict) -> float:
    """Cross-check: the same pages post-processed by rapidocr's own DBPostProcess +
    filter_tag_det_res (rotated boxes -> axis-aligned min/max)."""
    import onnxruntime as ort
    from rapidocr_onnxruntime.ch_ppocr_det.utils import DBPostProcess
    from rapidocr_onnxruntime.ch_ppocr_det.text_detect import TextDetector
    s = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    post = DBPostProcess(thresh=0.3, box_thresh=0.5, max_candidates=1000, unclip_ratio=1.6,
                         score_mode="fast", use_dilation=True)
    filt = TextDetector.filter_tag_det_res.__get__(object.__new__(TextDetector))
    tp = nd = ng = 0
    for img, gt in zip(images, gt_boxes):
        y = s.run(None, {"x": preprocess(img[None], norm)})[0]
        quads, _ = post(y, img.shape[:2])
        quads = filt(quads.astype(np.float32), img.shape[:2])
        det = np.array([[q[:, 0].min(), q[:, 1].min(), q[:, 0].max(), q[:, 1].max()] for q in quads],
                       np.float32).reshape(-1, 4)
        gt = gt[gt[:, 0] >= 0]
        tp += greedy_match(det, gt)
        nd += len(det)
        ng += len(gt)
    p, r = tp / max(nd, 1), tp / max(ng, 1)
    return 2 * p * r / (p + r) if p + r else 0.0


# ----------------------------------------------------------------------------- main
def prepare(names, n_calib: int, n_eval: int, n_shift: int, out: str = CACHE) -> list[dict]:
    os.makedirs(out, exist_ok=True)
    import onnx
    import onnxruntime as ort
    t0 = time.perf_counter()
    calib_imgs, _ = make_pages(SPLIT_CALIB, n_calib)
    eval_imgs, eval_boxes = make_pages(SPLIT_EVAL, n_eval)
    shift_imgs, shift_boxes = make_pages(SPLIT_SHIFT, n_shift)
    print(f"rendered {n_calib}+{n_eval}+{n_shift} pages in {time.perf_counter() - t0:.1f}s")
    metas = []
    shared = {}
    for name in names:
        spec = MODELS[name]
        data, src = model_bytes(name, out)
        dst = os.path.join(out, f"{name}.onnx")
        with open(dst, "wb") as f:
            f.write(data)
        check_preprocess(eval_imgs[0], name)
        s = ort.InferenceSession(dst, providers=["CPUExecutionProvider"])
        inp, outp = s.get_inputs()[0], s.get_outputs()[0]
        norm = spec["normalize"]
        xc = preprocess(calib_imgs, norm)
        np.savez_compressed(os.path.join(out, f"{name}.calib.npz"), **{inp.name: xc})
        for split, imgs, bx in (("eval", eval_imgs, eval_boxes), ("shift", shift_imgs, shift_boxes)):
            p = os.path.join(out, f"{name}.{split}.npz")
            if split in shared:  # identical pages for every detector: copy the first file
                with open(shared[split], "rb") as fi, open(p, "wb") as fo:
                    fo.write(fi.read())
            else:
                np.savez_compressed(p, image=imgs, boxes=bx)
                shared[split] = p
        y = s.run(None, {inp.name: xc[:1]})[0]
        mp = onnx.load(dst)
        meta = dict(
            name=name,
            task="dbnet_text_detection",
            input_name=inp.name,
            input_shape=list(xc.shape[1:]),
            input_shape_declared=[d if isinstance(d, int) else str(d) for d in inp.shape],
            output_name=outp.name,
            output_shape_declared=[d if isinstance(d, int) else str(d) for d in outp.shape],
            output_shape_actual_1=list(y.shape),
            output_is_probability=bool(y.min() >= 0 and y.max() <= 1),
            normalize=norm,
            postprocess=POSTPROCESS,
            eval_format=dict(image="uint8 (N,640,640,3) BGR HWC, preprocess with `normalize`",
                             boxes="float32 (N,Bmax,4) x0,y0,x1,y1 text-line ink boxes, -1 padded"),
            package=spec["package"],
            package_version=spec["version"],
            source_file=src,
            sha256=sha256_bytes(data),
            ir_version=mp.ir_version,
            opset={(d.domain or "ai.onnx"): d.version for d in mp.opset_import},
            n_calib=int(len(xc)), n_eval=int(len(eval_imgs)), n_shift=int(len(shift_imgs)),
            n_boxes_eval=int((eval_boxes[..., 0] >= 0).sum()),
            n_boxes_shift=int((shift_boxes[..., 0] >= 0).sum()),
            seeds=dict(data_id=DATA_ID, calib_split=SPLIT_CALIB, eval_split=SPLIT_EVAL,
                       shift_split=SPLIT_SHIFT, rng="np.random.default_rng([data_id, split, i])"),
        )
        with open(os.path.join(out, f"{name}.json"), "w") as f:
            json.dump(meta, f, indent=1)
        metas.append(meta)
        print(f"{name}: {inp.name} {meta['input_shape']} -> {outp.name} {meta['output_shape_actual_1']} "
              f"({spec['package']}=={spec['version']}) -> {out}  [{time.perf_counter() - t0:.1f}s]")
    return metas


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=None, help=f"subset of {list(MODELS)}")
    ap.add_argument("--n-calib", type=int, default=128)
    ap.add_argument("--n-eval", type=int, default=200)
    ap.add_argument("--n-shift", type=int, default=200)
    ap.add_argument("--out", default=CACHE)
    ap.add_argument("--check-rapidocr", type=int, default=0, metavar="N",
                    help="also score the first N eval/shift pages with rapidocr's own DBPostProcess")
    a = ap.parse_args(argv)
    names = a.only or list(MODELS)
    prepare(names, a.n_calib, a.n_eval, a.n_shift, a.out)
    if a.check_rapidocr:
        for name in names:
            meta = json.load(open(os.path.join(a.out, f"{name}.json")))
            for split in ("eval", "shift"):
                d = np.load(os.path.join(a.out, f"{name}.{split}.npz"))
                h = rapidocr_hmean(os.path.join(a.out, f"{name}.onnx"), d["image"][:a.check_rapidocr],
                                   d["boxes"][:a.check_rapidocr], meta["normalize"])
                print(f"{name} {split}: hmean with rapidocr DBPostProcess (first {a.check_rapidocr}) = {h:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
