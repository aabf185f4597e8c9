"""SliceGPT-style rotation of a LayerNorm residual stream against pruning its channels, on real weights.

Issue 16, item 2 asks to measure the exact alternative to pruning a pre-LN residual stream:
rotate the stream by the principal components of its calibration activations (SliceGPT,
Ashkboos et al. 2024) and delete the weakest directions. This script applies that rotation to
the paddle2onnx SVTR neck of the PP-OCR recognizers (decomposed LayerNorms over a stream of
D = 120 channels), keeps D' of the D directions, and scores the result on the labelled eval and
shift splits, next to onnxcompress's own pruning of the same stream to D' channels (the lossy
LayerNorm-stream group, calibrated ranking, ``--recover refit``; every other group kept whole).

The rotation, for a stream z that is written by linear layers and read through LayerNorms:
- every writer's output (and the stream's entry, through an inserted MatMul) is centred,
  ``W (I - 11'/D)``, so the stream has zero mean per token and LayerNorm equals RMSNorm;
- the stream is stored rotated and sliced: ``z = x Q_k`` with Q_k the D x D' top principal
  directions of the centred stream (all residual points, calibration fit split);
- each LayerNorm loses its mean subtraction, its variance becomes ``sum(z^2) / D`` (its
  ReduceMean over D' channels times D'/D), and its scale and shift fold into the reader
  (``W' = Q_k' diag(g) W``, ``b' = b + beta W``); where the LayerNorm output is not read by
  MatMuls only (the neck's last norm), ``Q_k'`` is inserted as a MatMul before the scale.
With D' = D the rotated model equals the original (checked: ``--check``).

    python bench/slicegpt_stream.py --model ppocrv6_rec --keep 112 96 80 64 [--json F]
    python bench/slicegpt_stream.py --table      # the markdown table of bench/SLICEGPT.md, from the JSON

Needs the project venv (onnx, onnxruntime) and bench/.cache/real (``bench/real/prepare.py``).
Scoring uses ``bench.distill_real.score``; the pruning rows run the CLI through this script's
``--prune-stream`` helper, which restricts the calibrated allocation to the stream group.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache" / "real"
OUT_JSON = ROOT / "bench" / "slicegpt_stream.json"
REPORT = ROOT / "bench" / "SLICEGPT.md"
sys.path.insert(0, str(ROOT))


@dataclass
class Norm:
    """One decomposed LayerNorm: x -> (x - mean) / sqrt(mean((x - mean)^2) + eps) * gamma + beta."""

    x: str
    mean: onnx.NodeProto
    sub: onnx.NodeProto
    var: onnx.NodeProto
    div: onnx.NodeProto
    scale: onnx.NodeProto
    shift: onnx.NodeProto


class Graph:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.g = model.graph
        self.producer = {o: n for n in self.g.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in self.g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.inits = {i.name: i for i in self.g.initializer}
        self.counter = 0

    def const(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        p = self.producer.get(name)
        if p is not None and p.op_type == "Constant":
            return numpy_helper.to_array(p.attribute[0].t)
        if p is not None and p.op_type == "Identity":
            return self.const(p.input[0])
        return None

    def add_init(self, stem: str, value: np.ndarray) -> str:
        self.counter += 1
        name = f"slicegpt.{stem}.{self.counter}"
        self.g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value.astype(np.float32)), name))
        return name

    def root(self, name: str) -> str:
        """Back through Identity nodes."""
        p = self.producer.get(name)
        while p is not None and p.op_type == "Identity":
            name = p.input[0]
            p = self.producer.get(name)
        return name

    def uses(self, name: str) -> list[onnx.NodeProto]:
        """Consumers of ``name`` and of its Identity aliases (not the Identities themselves)."""
        out = []
        for c in self.consumers.get(name, []):
            out += self.uses(c.output[0]) if c.op_type == "Identity" else [c]
        return out

    def one(self, name: str, op: str) -> onnx.NodeProto:
        cs = [c for c in self.uses(name) if c.op_type == op]
        if len(cs) != 1:
            raise ValueError(f"expected one {op} after {name}, found {len(cs)}")
        return cs[0]


def find_norms(G: Graph) -> list[Norm]:
    norms = []
    for n in G.g.node:
        if n.op_type != "ReduceMean":
            continue
        subs = [c for c in G.consumers.get(n.output[0], []) if c.op_type == "Sub" and c.input[0] == n.input[0]]
        if len(subs) != 1:
            continue
        sub = subs[0]
        pow_ = G.one(sub.output[0], "Pow")
        var = G.one(pow_.output[0], "ReduceMean")
        div = G.one(sub.output[0], "Div")
        scale = G.one(div.output[0], "Mul")
        shift = G.one(scale.output[0], "Add")
        norms.append(Norm(n.input[0], n, sub, var, div, scale, shift))
    return norms


def linear_after(G: Graph, name: str) -> tuple[onnx.NodeProto, onnx.NodeProto] | None:
    """(MatMul with a constant weight, Add of a constant bias) reading ``name``, or None."""
    mms = [c for c in G.uses(name) if c.op_type == "MatMul" and G.const(c.input[1]) is not None]
    if len(mms) != 1:
        return None
    adds = [c for c in G.uses(mms[0].output[0]) if c.op_type == "Add"]
    if len(adds) != 1 or G.const(adds[0].input[1]) is None:
        return None
    return mms[0], adds[0]


def writer_before(G: Graph, name: str) -> tuple[onnx.NodeProto, onnx.NodeProto]:
    add = G.producer[G.root(name)]
    mm = G.producer[G.root(add.input[0])]
    if add.op_type != "Add" or mm.op_type != "MatMul" or G.const(mm.input[1]) is None:
        raise ValueError(f"stream branch {name} is not written by MatMul + bias")
    return mm, add


@dataclass
class Stream:
    entry: str                    # the first stream tensor (not written by a linear layer)
    points: list[str]             # every stream tensor, entry first
    writers: list[tuple[onnx.NodeProto, onnx.NodeProto]]
    norms: list[Norm]


def find_stream(G: Graph) -> Stream:
    norms = find_norms(G)
    by_root = {G.root(n.x): n for n in norms}
    entry = G.root(norms[0].x)
    points, writers, s = [entry], [], entry
    while True:
        res = [c for c in G.uses(s) if c.op_type == "Add" and c is not by_root.get(s, norms[0]).shift]
        res = [c for c in res if G.const(c.input[1]) is None]
        if not res:
            break
        add = res[0]
        branch = add.input[1] if G.root(add.input[0]) == s else add.input[0]
        writers.append(writer_before(G, branch))
        s = add.output[0]
        points.append(s)
    used = [by_root[p] for p in points if p in by_root]
    return Stream(entry, points, writers, used)


def stream_activations(model: onnx.ModelProto, points: list[str], feeds: list[dict]) -> list[np.ndarray]:
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for p in points:
        if p not in have:
            m.graph.output.append(oh.make_empty_tensor_value_info(p))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    acts: list[list[np.ndarray]] = [[] for _ in points]
    for f in feeds:
        got = sess.run(points, f)
        for i, a in enumerate(got):
            acts[i].append(a.reshape(-1, a.shape[-1]).astype(np.float64))
    return [np.concatenate(a) for a in acts]


def principal_directions(acts: list[np.ndarray]) -> np.ndarray:
    d = acts[0].shape[1]
    cov = np.zeros((d, d))
    for a in acts:
        c = a - a.mean(axis=1, keepdims=True)  # the stream is centred per token
        cov += c.T @ c
    w, v = np.linalg.eigh(cov)
    return v[:, np.argsort(w)[::-1]]


def rotate(model: onnx.ModelProto, q: np.ndarray, keep: int) -> onnx.ModelProto:
    """The model with its stream rotated by ``q`` and cut to its first ``keep`` directions."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.value_info[:]  # the exporter's shapes say D channels
    G = Graph(m)
    st = find_stream(G)
    d = q.shape[0]
    qk = q[:, :keep]
    centre = np.eye(d) - 1.0 / d
    # entry: z0 = x0 (I - 11'/D) Q_k, an inserted MatMul
    z0 = "slicegpt.entry"
    for c in list(G.consumers.get(st.entry, [])):
        for i, name in enumerate(c.input):
            if name == st.entry:
                c.input[i] = z0
    at = list(G.g.node).index(G.producer[st.entry]) + 1
    G.g.node.insert(at, oh.make_node("MatMul", [st.entry, G.add_init("entry", centre @ qk)], [z0], name="slicegpt.entry"))
    for mm, add in st.writers:
        w, b = G.const(mm.input[1]), G.const(add.input[1])
        mm.input[1] = G.add_init("writer.w", w @ centre @ qk)
        add.input[1] = G.add_init("writer.b", b @ centre @ qk)
    for norm in st.norms:
        gamma, beta = G.const(norm.scale.input[1]).reshape(-1), G.const(norm.shift.input[1]).reshape(-1)
        norm.sub.input[1] = G.add_init("zero", np.zeros((), np.float32))      # no mean subtraction
        # variance over D' channels -> sum / D
        var_out = norm.var.output[0]
        scaled = var_out + ".slicegpt"
        for c in list(G.consumers.get(var_out, [])):
            for i, name in enumerate(c.input):
                if name == var_out:
                    c.input[i] = scaled
        at = list(G.g.node).index(norm.var) + 1
        G.g.node.insert(at, oh.make_node("Mul", [var_out, G.add_init("var", np.array(keep / d, np.float32))], [scaled]))
        out = norm.shift.output[0]
        readers = [c for c in G.uses(out) if c.op_type not in ("Shape",)]
        lin = [linear_after(G, out)] if len(readers) == 1 else []
        if lin and lin[0] is not None:
            mm, add = lin[0]
            w, b = G.const(mm.input[1]), G.const(add.input[1])
            mm.input[1] = G.add_init("reader.w", qk.T @ (gamma[:, None] * w))
            add.input[1] = G.add_init("reader.b", b + beta @ w)
            norm.scale.input[1] = G.add_init("one", np.ones(keep, np.float32))
            norm.shift.input[1] = G.add_init("zero", np.zeros(keep, np.float32))
            # a Shape of the norm's output reads D' now: read the entry's (same N, T and D) instead
            for c in G.uses(out):
                if c.op_type == "Shape":
                    c.input[0] = st.entry
        else:
            # back to the D channels before the scale: x = z Q_k'
            div_out = norm.div.output[0]
            back = div_out + ".slicegpt"
            norm.scale.input[0] = back
            at = list(G.g.node).index(norm.div) + 1
            G.g.node.insert(at, oh.make_node("MatMul", [div_out, G.add_init("exit", qk.T)], [back]))
    return m


def load_feeds(name: str, n: int | None, start: int = 0) -> list[dict]:
    meta = json.loads((CACHE / f"{name}.json").read_text())
    data = np.load(CACHE / f"{name}.calib.npz")
    x = data[meta["input_name"]].astype(np.float32)
    x = x[start:start + n] if n else x[start:]
    return [{meta["input_name"]: x[i:i + 1]} for i in range(len(x))]


def macs_of(path: str, name: str) -> float:
    meta = json.loads((CACHE / f"{name}.json").read_text())
    shape = ",".join(map(str, (1, *meta["input_shape"])))
    with tempfile.TemporaryDirectory() as tmp:
        js = os.path.join(tmp, "i.json")
        subprocess.run([sys.executable, "-m", "onnxcompress", "inspect", path, "--input-shape",
                        f"{meta['input_name']}:{shape}", "--json", js, "-q"], check=True, capture_output=True)
        rep = json.loads(Path(js).read_text())
    return float(rep["totals"]["macs"]) if "totals" in rep else float(rep["macs"])


def held_out_drift(orig: str, path: str, feeds: list[dict]) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    a = ort.InferenceSession(orig, so, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    num = den = 0.0
    for f in feeds:
        ra, rb = a.run(None, f)[0].astype(np.float64), b.run(None, f)[0].astype(np.float64)
        num += float(np.square(ra - rb).sum())
        den += float(np.square(ra).sum())
    return (num / den) ** 0.5


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ppocrv6_rec")
    ap.add_argument("--keep", type=int, nargs="*", default=[112, 96, 80, 64])
    ap.add_argument("--check", action="store_true", help="only check that keeping every direction is exact")
    ap.add_argument("--json", default=str(OUT_JSON))
    ap.add_argument("--skip-prune", action="store_true")
    ap.add_argument("--table", action="store_true", help="print the markdown table from --json and exit")
    args = ap.parse_args(argv)
    if args.table:
        print(table(json.loads(Path(args.json).read_text())))
        return 0
    from bench.distill_real import score

    name = args.model
    src = CACHE / f"{name}.onnx"
    model = onnx.load(str(src))
    fit, held = load_feeds(name, 96), load_feeds(name, None, start=96)
    st = find_stream(Graph(model))
    print(f"{name}: stream of {len(st.points)} points, {len(st.writers)} writers, {len(st.norms)} norms", flush=True)
    q = principal_directions(stream_activations(model, st.points, fit))
    d = q.shape[0]
    rows = []
    out_dir = CACHE / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    base_macs = macs_of(str(src), name)
    for keep in ([d] if args.check else args.keep):
        path = out_dir / f"{name}.slicegpt{keep}.onnx"
        t = time.perf_counter()
        onnx.save(rotate(model, q, keep), str(path))
        row = {"model": name, "method": "slicegpt", "stream_width": keep, "of": d, "seconds": round(time.perf_counter() - t, 2),
               "macs_kept": round(macs_of(str(path), name) / base_macs, 4),
               "held_out_drift": round(held_out_drift(str(src), str(path), held), 5)}
        if not args.check:
            row.update({s: score(name, path, s) for s in ("eval", "shift")})
        print(json.dumps(row), flush=True)
        rows.append(row)
        if not args.skip_prune and not args.check and keep < d:
            rows.append(prune_row(name, keep, d, base_macs, held, score))
            print(json.dumps(rows[-1]), flush=True)
    if not args.check:
        old = json.loads(Path(args.json).read_text()) if Path(args.json).exists() else []
        keyf = lambda r: (r["model"], r["method"], r["stream_width"])
        merged = {keyf(r): r for r in old}
        merged.update({keyf(r): r for r in rows})
        Path(args.json).write_text(json.dumps(sorted(merged.values(), key=keyf), indent=1) + "\n")
    return 0


def table(rows: list[dict]) -> str:
    lines = ["| model | stream width | method | MACs kept | held-out drift | eval | shift |", "|---|---:|---|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["model"], -r["stream_width"], r["method"])):
        if "error" in r:
            lines.append(f"| {r['model']} | {r['stream_width']} / {r['of']} | {r['method']} | - | - | refused by the floor | - |")
            continue
        lines.append(f"| {r['model']} | {r['stream_width']} / {r['of']} | {r['method']} | {r['macs_kept']:.2%} | "
                     f"{r['held_out_drift']:.3f} | {r['eval']:.3f} | {r['shift']:.3f} |")
    return "\n".join(lines)


def prune_row(name: str, keep: int, d: int, base_macs: float, held: list[dict], score) -> dict:
    """onnxcompress's calibrated pruning of the stream group alone to ``keep`` channels (refit)."""
    from bench.distill_real import command

    path = CACHE / "out" / f"{name}.streamprune{keep}.onnx"
    rep = Path(tempfile.mkdtemp()) / "r.json"
    cmd = command(name, 0.999, "refit", path, rep, 300, None)
    cmd[1:3] = [str(Path(__file__).resolve()), "--prune-stream", str(d - keep)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        return {"model": name, "method": "prune+refit", "stream_width": keep, "of": d, "error": proc.stderr.strip()[-400:]}
    src = CACHE / f"{name}.onnx"
    return {"model": name, "method": "prune+refit", "stream_width": keep, "of": d,
            "seconds": round(time.perf_counter() - t, 1), "macs_kept": round(macs_of(str(path), name) / base_macs, 4),
            "held_out_drift": round(held_out_drift(str(src), str(path), held), 5),
            **{s: score(name, path, s) for s in ("eval", "shift")}}


def prune_stream_cli(remove: int, argv: list[str]) -> int:
    """The CLI with its allocation replaced: ``remove`` atoms of the LayerNorm-stream group, nothing else.

    The stream is the group whose filters include two or more MatMuls (its writers: the
    attention output projections and the MLPs' second layers); the per-group sweep is skipped,
    since nothing is chosen by it.
    """
    import onnxcompress.pruning.calibrated as C
    from onnxcompress.pruning.sensitivity import GroupSensitivity

    def measure(masked, groups, scores, roots, sample, macs_per_atom, round_to, **_):
        return [GroupSensitivity(g.key, g.names, len(g.atoms), macs_per_atom.get(g.key, 0.0)) for g in groups]

    def allocate(sens, total, goal):
        lossy = [g for g in sens if sum("MatMul" in n for n in g.names) >= 2]
        if len(lossy) != 1:
            raise SystemExit(f"expected one stream group, found {len(lossy)}")
        return {g.key: (remove if g is lossy[0] else 0) for g in sens}, 0.0

    C.measure, C.allocate = measure, allocate
    from onnxcompress.cli import main as cli

    return cli(argv)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--prune-stream":
        raise SystemExit(prune_stream_cli(int(sys.argv[2]), sys.argv[3:]))
    raise SystemExit(main())
