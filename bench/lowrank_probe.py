"""Probe: would a low-rank factorization keep more than channel removal at the same MACs? (issue 15, item 6)

Not a compression mode of onnxcompress; a measurement to decide whether one is worth building.
Every pointwise Conv (1x1, group 1) and every MatMul by a constant weight with both dims >= 32
(the CTC head's 18385 classes left out unless ``--head``) gets its data-aware rank-r projection:
with Y = W X its outputs on the calibration samples, and P the top r eigenvectors of Y Yᵀ, W becomes
P Pᵀ W (the bias is kept). That is the rank-r layer with the least output error on those samples;
written as two layers it costs r (C_in + C_out) MACs per position instead of C_in C_out. One shared
tolerance τ on each layer's relative lost output energy picks every layer's rank (rounded up to 8,
and left whole where factorizing would not pay), bisected until the model's MACs, counted as if
factorized, reach the target. The weights are replaced in place (same graph, same shapes), with no
refit or distillation afterwards, and the model is scored on every labelled split.

    python bench/lowrank_probe.py ppocrv5_rec --target 0.8 [--refit]

With ``--refit`` each factorized layer is fitted instead, in graph order, to the original's outputs from
the inputs the layers before it now give it (least squares, then the rank-r projection of the fit's own
outputs: reduced-rank regression), as onnxcompress's refit does for pruned layers. Rows are appended
to bench/lowrank_probe.jsonl; read in bench/ALLOCATION_ORACLE.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.distill_real import CACHE, SPLITS, meta  # noqa: E402
from bench.real.evaluate import predict, read_right  # noqa: E402
from onnxcompress.runtime import Session  # noqa: E402


def layer_macs(name: str, m: dict) -> tuple[dict[str, float], float]:
    """Per-layer MACs and the total, from ``onnxcompress inspect`` at the bench's input shape."""
    js = Path(tempfile.mkdtemp()) / "inspect.json"
    shape = ",".join(map(str, (1, *m["input_shape"])))
    subprocess.run([sys.executable, "-m", "onnxcompress", "inspect", str(CACHE / f"{name}.onnx"), "--input-shape",
                    f"{m['input_name']}:{shape}", "--json", str(js), "-q"], check=True)
    r = json.loads(js.read_text())
    return {lay["name"]: lay["macs"] for lay in r["layers"]}, float(r["macs"])


def candidates(model: onnx.ModelProto, head: bool) -> list[tuple[onnx.NodeProto, np.ndarray, str]]:
    """(node, weight as (C_out, C_in), kind) of every layer the probe factorizes."""
    inits = {t.name: t for t in model.graph.initializer}
    out = []
    for n in model.graph.node:
        if len(n.input) < 2 or n.input[1] not in inits:
            continue
        w = numpy_helper.to_array(inits[n.input[1]])
        if n.op_type == "Conv":
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            if w.ndim == 4 and w.shape[2:] == (1, 1) and group == 1 and min(w.shape[:2]) >= 32:
                out.append((n, w.reshape(w.shape[0], w.shape[1]), "conv"))
        elif n.op_type == "MatMul" and w.ndim == 2 and min(w.shape) >= 32 and (head or w.shape[1] < 4096):
            out.append((n, w.T, "matmul"))
    return out


def output_moments(name: str, m: dict, layers) -> dict[str, np.ndarray]:
    """Y Yᵀ of every candidate's output (before its bias) over the calibration samples."""
    sess = Session(str(CACHE / f"{name}.onnx"), expose=[n.input[0] for n, _, _ in layers], threads=2)
    x = np.load(CACHE / f"{name}.calib.npz")[m["input_name"]].astype(np.float32)
    moments: dict[str, np.ndarray] = {}
    for i in range(0, len(x), 16):
        outs = sess.run({m["input_name"]: x[i:i + 16]})
        for n, w, kind in layers:
            y = w.astype(np.float64) @ _columns(outs[n.input[0]], kind).astype(np.float64)
            moments[n.name] = moments.get(n.name, 0) + y @ y.T
    return moments


def _columns(a: np.ndarray, kind: str) -> np.ndarray:
    """A layer input as (C_in, positions)."""
    return a.transpose(1, 0, 2, 3).reshape(a.shape[1], -1) if kind == "conv" else a.reshape(-1, a.shape[-1]).T


def input_moments(original: onnx.ModelProto, current: onnx.ModelProto, name: str, m: dict, lay: dict):
    """X_o X_cᵀ and X_c X_cᵀ of one layer's input, X_o in the original model and X_c in ``current``
    (the earlier layers already replaced), over the calibration samples."""
    value = lay["node"].input[0]
    sessions = [Session(model, expose=[value], threads=2) for model in (original, current)]
    x = np.load(CACHE / f"{name}.calib.npz")[m["input_name"]].astype(np.float32)
    cross = auto = 0
    for i in range(0, len(x), 16):
        xo, xc = (_columns(s.run({m["input_name"]: x[i:i + 16]}, [value])[value], lay["kind"]).astype(np.float64)
                  for s in sessions)
        cross, auto = cross + xo @ xc.T, auto + xc @ xc.T
    return cross, auto


def reduced_rank_refit(lay: dict, cross: np.ndarray, auto: np.ndarray, ridge: float = 1e-4) -> np.ndarray:
    """The rank-r W' with the least ||W X_o - W' X_c||: the least-squares fit, then projected on
    the top r principal directions of its own outputs (reduced-rank regression)."""
    w = lay["w"].astype(np.float64)
    reg = ridge * np.trace(auto) / len(auto)
    w_ls = np.linalg.solve(auto + reg * np.eye(len(auto)), (w @ cross).T).T
    ev, vec = np.linalg.eigh(w_ls @ auto @ w_ls.T)
    p = vec[:, ::-1][:, :lay["rank"]]
    return p @ (p.T @ w_ls)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--target", type=float, default=0.8)
    ap.add_argument("--head", action="store_true", help="factorize the CTC head's MatMul too")
    ap.add_argument("--refit", action="store_true", help="fit each factorized layer, in graph order, to the "
                    "original's outputs from the inputs the earlier factorized layers give it (reduced-rank "
                    "regression), instead of projecting its weight alone")
    args = ap.parse_args()
    m = meta(args.model)
    macs, total = layer_macs(args.model, m)
    model = onnx.load(CACHE / f"{args.model}.onnx")
    found = candidates(model, args.head)
    moments = output_moments(args.model, m, found)
    layers = []
    for n, w, kind in found:
        ev, vec = np.linalg.eigh(moments[n.name])
        cout, cin = w.shape
        layers.append({"node": n, "w": w, "kind": kind, "ev": ev[::-1].clip(min=0), "vec": vec[:, ::-1],
                       "cin": cin, "cout": cout, "full": macs[n.name], "per_position": macs[n.name] / (cout * cin)})

    def rank_cost(lay: dict, r: int) -> float:
        return r * (lay["cin"] + lay["cout"]) * lay["per_position"]

    def plan(tau: float) -> float:
        saved = 0.0
        for lay in layers:
            kept = np.cumsum(lay["ev"]) / max(lay["ev"].sum(), 1e-30)
            r = min(lay["cout"], -(-int(np.searchsorted(kept, 1 - tau) + 1) // 8) * 8)
            lay["rank"] = r if rank_cost(lay, r) < lay["full"] else lay["cout"]
            saved += lay["full"] - min(lay["full"], rank_cost(lay, lay["rank"]))
        return saved

    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if plan(mid) >= total * (1 - args.target) else (mid, hi)
    saved = plan(hi)
    inits = {t.name: t for t in model.graph.initializer}
    original = onnx.load(CACHE / f"{args.model}.onnx")
    ranks = {}
    for lay in layers:  # graph order: each refit sees the layers before it already replaced
        if lay["rank"] < lay["cout"]:
            if args.refit:
                wr = reduced_rank_refit(lay, *input_moments(original, model, args.model, m, lay)).astype(np.float32)
            else:
                p = lay["vec"][:, :lay["rank"]]
                wr = (p @ (p.T @ lay["w"].astype(np.float64))).astype(np.float32)
            t = inits[lay["node"].input[1]]
            new = wr.reshape(numpy_helper.to_array(t).shape) if lay["kind"] == "conv" else wr.T
            t.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(new), t.name))
            ranks[lay["node"].name] = f"{lay['rank']} of {min(lay['cout'], lay['cin'])}"
    out = Path(tempfile.mkdtemp()) / f"{args.model}.lowrank.onnx"
    onnx.save(model, out)
    row = {"model": args.model, "target": args.target, "head": args.head, "refit": args.refit, "tau": hi,
           "macs_kept_if_factorized": round(1 - saved / total, 4), "ranks": ranks}
    for split in SPLITS:
        p = CACHE / f"{args.model}.{split}.npz"
        if p.exists():
            d = np.load(p)
            right = read_right(predict(str(out), d[m["input_name"]].astype(np.float32), m), d["labels"], m["task"])
            row[split] = round(float(right.mean()), 4)
    print(json.dumps(row))
    with (ROOT / "bench" / "lowrank_probe.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
