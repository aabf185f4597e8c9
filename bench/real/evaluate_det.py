"""Offline accuracy evaluation for the dense-map text detectors (DBNet) prepared by
bench/real/prepare_det.py.

Only needs numpy + onnxruntime, so it runs from the project venv:

    python bench/real/evaluate_det.py MODEL.onnx NAME [--split eval|shift] [--limit N]

NAME is ppocr_det or ppocrv3_det. It prints one JSON line. From Python:

    from bench.real.evaluate_det import evaluate, paths_for
    onnx_path, npz, meta = paths_for("ppocr_det", split="eval")
    evaluate("pruned.onnx", npz, meta)   # -> {"hmean":..,"precision":..,"recall":..,"n":..,...}

Pipeline (see DET.md): the stored uint8 BGR page (640x640) is normalised exactly as
rapidocr's detector does for that model, run through onnxruntime, and the probability map is
post-processed with an axis-aligned re-implementation of rapidocr's DBPostProcess
(thresh 0.3, 2x2 dilation, box_thresh 0.5 with "fast" box score, unclip 1.6, min size 3,
then filter_tag_det_res). The detections are matched greedily to the ground-truth text-line
boxes at IoU >= 0.5 and precision / recall / hmean are summed over the split (ICDAR style).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.normpath(os.path.join(HERE, "..", ".cache", "real"))

IOU_THRESH = 0.5


# ----------------------------------------------------------------------------- preprocessing
def preprocess(img_bgr: np.ndarray, norm: dict) -> np.ndarray:
    """uint8 BGR page(s) (..., H, W, 3) -> float32 model input (..., 3, H, W).

    Bit-identical to the package's detector preprocessing for a page whose size is already a
    multiple of 32 and is kept (the resize is then a no-op):
      * rapidocr 1.4.x DetPreProcess (norm["arith"] == "float64"): mean/std are float64 arrays,
        (img.astype(f32) * (1/255) - mean) / std in float64, cast to float32 at the end.
      * rapidocr 1.2.x ch_ppocr_v3_det NormalizeImage (norm["arith"] == "float32"): scale,
        mean and std are float32, everything is float32.
    """
    mean, std, scale = norm["mean"], norm["std"], norm["scale"]
    img = img_bgr.astype(np.float32)
    if norm.get("arith", "float64") == "float32":
        y = (img * np.float32(scale) - np.array(mean, np.float32)) / np.array(std, np.float32)
    else:
        y = (img * scale - np.array(mean, np.float64)) / np.array(std, np.float64)
    y = y.astype(np.float32)
    return np.ascontiguousarray(np.moveaxis(y, -1, -3))


# ----------------------------------------------------------------------------- DB post-processing
def _components(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """8-connected components of a 2-D bool mask -> list of inclusive bboxes (x0, y0, x1, y1).

    Run-length union-find: fast enough in pure numpy/python for text probability maps."""
    H, W = mask.shape
    d = np.diff(np.pad(mask.astype(np.int8), ((0, 0), (1, 1))), axis=1)
    sr, sc = np.nonzero(d == 1)   # run starts (row, col)
    _, ec = np.nonzero(d == -1)   # run ends (exclusive), same order as starts
    n = len(sr)
    if n == 0:
        return []
    parent = list(range(n))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    row_start = np.searchsorted(sr, np.arange(H + 1))
    sc_l, ec_l = sc.tolist(), ec.tolist()
    for r in range(1, H):
        a0, a1 = int(row_start[r - 1]), int(row_start[r])
        b0, b1 = a1, int(row_start[r + 1])
        if a0 == a1 or b0 == b1:
            continue
        i, j = a0, b0
        while i < a1 and j < b1:
            # 8-connectivity: runs [s, e) touch if s_a <= e_b and s_b <= e_a
            if sc_l[i] <= ec_l[j] and sc_l[j] <= ec_l[i]:
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[rj] = ri
            if ec_l[i] < ec_l[j]:
                i += 1
            else:
                j += 1
    roots = np.fromiter((find(k) for k in range(n)), np.int64, n)
    uniq, lab = np.unique(roots, return_inverse=True)
    m = len(uniq)
    x0 = np.full(m, W, np.int64)
    y0 = np.full(m, H, np.int64)
    x1 = np.full(m, -1, np.int64)
    y1 = np.full(m, -1, np.int64)
    np.minimum.at(x0, lab, sc)
    np.minimum.at(y0, lab, sr)
    np.maximum.at(x1, lab, ec - 1)
    np.maximum.at(y1, lab, sr)
    return list(zip(x0.tolist(), y0.tolist(), x1.tolist(), y1.tolist()))


def db_boxes(prob: np.ndarray, thresh: float = 0.3, box_thresh: float = 0.5,
             unclip_ratio: float = 1.6, min_size: int = 3, use_dilation: bool = True,
             dest_hw: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned DBPostProcess on one (H, W) probability map.

    Returns (boxes (K, 4) float32 x0,y0,x1,y1 in destination pixels, scores (K,))."""
    H, W = prob.shape
    dh, dw = dest_hw or (H, W)
    seg = prob > thresh
    if use_dilation:  # cv2.dilate with a 2x2 kernel, default anchor (1,1): max of (y-1..y, x-1..x)
        m = seg.copy()
        m[1:, :] |= seg[:-1, :]
        m[:, 1:] |= seg[:, :-1]
        m[1:, 1:] |= seg[:-1, :-1]
        seg = m
    boxes, scores = [], []
    for (x0, y0, x1, y1) in _components(seg):
        w, h = x1 - x0, y1 - y0          # minAreaRect of the contour points (pixel centres)
        if min(w, h) < min_size:
            continue
        score = float(prob[y0:y1 + 1, x0:x1 + 1].mean())  # box_score_fast
        if score < box_thresh:
            continue
        dist = (w * h) * unclip_ratio / (2.0 * (w + h))   # unclip: area * ratio / perimeter
        ex0, ey0, ex1, ey1 = x0 - dist, y0 - dist, x1 + dist, y1 + dist
        if min(ex1 - ex0, ey1 - ey0) < min_size + 2:
            continue
        bx0 = min(max(round(ex0 / W * dw), 0), dw)
        bx1 = min(max(round(ex1 / W * dw), 0), dw)
        by0 = min(max(round(ey0 / H * dh), 0), dh)
        by1 = min(max(round(ey1 / H * dh), 0), dh)
        # filter_tag_det_res: clip to the image, drop boxes 3 px or thinner
        bx0, bx1 = min(bx0, dw - 1), min(bx1, dw - 1)
        by0, by1 = min(by0, dh - 1), min(by1, dh - 1)
        if bx1 - bx0 <= 3 or by1 - by0 <= 3:
            continue
        boxes.append((bx0, by0, bx1, by1))
        scores.append(score)
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32)


# ----------------------------------------------------------------------------- matching
def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a (n,4), b (m,4) x0,y0,x1,y1 -> (n,m) IoU."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float64)
    a = a.astype(np.float64)[:, None]
    b = b.astype(np.float64)[None]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


def greedy_match(det: np.ndarray, gt: np.ndarray, thr: float = IOU_THRESH) -> int:
    """One-to-one greedy matching by descending IoU; returns the number of matches >= thr."""
    iou = iou_matrix(det, gt)
    if iou.size == 0:
        return 0
    di, gi = np.nonzero(iou >= thr)
    order = np.argsort(-iou[di, gi], kind="stable")
    used_d, used_g, tp = set(), set(), 0
    for k in order:
        d, g = int(di[k]), int(gi[k])
        if d in used_d or g in used_g:
            continue
        used_d.add(d)
        used_g.add(g)
        tp += 1
    return tp


def _box_mask(boxes: np.ndarray, H: int, W: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    for x0, y0, x1, y1 in boxes:
        m[int(round(y0)):int(round(y1)), int(round(x0)):int(round(x1))] = True
    return m


# ----------------------------------------------------------------------------- model running
def _session(model_path: str, threads: int | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])


def predict_maps(model_path: str, images: np.ndarray, meta: dict, batch: int = 4,
                 threads: int | None = None):
    """Yields (index, (H, W) float32 probability map) for uint8 BGR pages (N, H, W, 3)."""
    sess = _session(model_path, threads)
    in_name = meta["input_name"]
    names = [o.name for o in sess.get_outputs()]
    oi = names.index(meta["output_name"]) if meta["output_name"] in names else 0
    d0 = [i.shape for i in sess.get_inputs() if i.name == in_name][0][0]
    bs = d0 if isinstance(d0, int) and d0 > 0 else batch
    for s in range(0, len(images), bs):
        xb = preprocess(images[s:s + bs], meta["normalize"])
        n = len(xb)
        if n != bs and isinstance(d0, int):
            xb = np.concatenate([xb, np.repeat(xb[-1:], bs - n, axis=0)])
        y = sess.run(None, {in_name: xb})[oi]
        y = y.reshape(len(xb), -1, y.shape[-2], y.shape[-1])[:, 0]
        for k in range(n):
            yield s + k, y[k]


def evaluate(model_path: str, npz_path: str, meta_path: str, batch: int = 4,
             threads: int | None = None, limit: int | None = None) -> dict:
    """Detection precision / recall / hmean (IoU >= 0.5, greedy one-to-one, summed over the
    split) plus pixel-level precision/recall/F1 of the binarised map (prob > thresh) against the
    ground-truth box masks."""
    with open(meta_path) as f:
        meta = json.load(f)
    data = np.load(npz_path)
    images, gt_all = data["image"], data["boxes"]
    if limit:
        images, gt_all = images[:limit], gt_all[:limit]
    pp = meta["postprocess"]
    H, W = images.shape[1:3]
    tp = n_det = n_gt = 0
    pix_tp = pix_pred = pix_gt = 0
    for i, prob in predict_maps(model_path, images, meta, batch=batch, threads=threads):
        gt = gt_all[i]
        gt = gt[gt[:, 0] >= 0]
        det, _ = db_boxes(prob, thresh=pp["thresh"], box_thresh=pp["box_thresh"],
                          unclip_ratio=pp["unclip_ratio"], min_size=pp["min_size"],
                          use_dilation=pp["use_dilation"], dest_hw=(H, W))
        tp += greedy_match(det, gt, pp.get("iou_thresh", IOU_THRESH))
        n_det += len(det)
        n_gt += len(gt)
        pm = prob > pp["thresh"]
        gm = _box_mask(gt, *prob.shape) if prob.shape == (H, W) else \
            _box_mask(gt * np.array([prob.shape[1] / W, prob.shape[0] / H] * 2), *prob.shape)
        pix_tp += int(np.count_nonzero(pm & gm))
        pix_pred += int(np.count_nonzero(pm))
        pix_gt += int(np.count_nonzero(gm))
    p = tp / n_det if n_det else 0.0
    r = tp / n_gt if n_gt else 0.0
    pp_ = pix_tp / pix_pred if pix_pred else 0.0
    pr_ = pix_tp / pix_gt if pix_gt else 0.0
    return dict(hmean=2 * p * r / (p + r) if p + r else 0.0, precision=p, recall=r,
                n=int(len(images)), n_gt=int(n_gt), n_det=int(n_det), tp=int(tp),
                pixel_f1=2 * pp_ * pr_ / (pp_ + pr_) if pp_ + pr_ else 0.0,
                pixel_precision=pp_, pixel_recall=pr_)


def paths_for(name: str, split: str = "eval", cache: str = CACHE) -> tuple[str, str, str]:
    return (os.path.join(cache, f"{name}.onnx"), os.path.join(cache, f"{name}.{split}.npz"),
            os.path.join(cache, f"{name}.json"))


def run_cli(argv, evaluate, paths_for, description: str, name_help: str, default_name: str | None = None) -> int:
    """The evaluators' shared command line: score MODEL on NAME's split, print one JSON line."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="ONNX model to evaluate (original or pruned)")
    ap.add_argument("name", nargs="?" if default_name else None, default=default_name, help=name_help)
    ap.add_argument("--split", default="eval", choices=["eval", "shift"])
    ap.add_argument("--cache", default=CACHE, help="directory with NAME.{eval,shift}.npz / NAME.json")
    ap.add_argument("--batch", type=int, default=4, help="pages per run if the batch dim is dynamic")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--limit", type=int, default=None, help="evaluate only the first N pages")
    a = ap.parse_args(argv)
    _, npz, js = paths_for(a.name, a.split, a.cache)
    t0 = time.perf_counter()
    r = evaluate(a.model, npz, js, batch=a.batch, threads=a.threads, limit=a.limit)
    r = dict(name=a.name, split=a.split, **{k: (round(v, 4) if isinstance(v, float) else v)
                                           for k, v in r.items()},
             time_s=round(time.perf_counter() - t0, 1))
    print(json.dumps(r))
    return 0


def main(argv=None) -> int:
    return run_cli(argv, evaluate, paths_for, __doc__, "dataset/model name: ppocr_det or ppocrv3_det")


if __name__ == "__main__":
    sys.exit(main())
