"""Scale benchmark: time and peak memory of the whole CLI against the onnx-ir I/O floor.

Builds two models without torch (numpy + onnx.helper, weights streamed straight into an
external data file so the builder never holds them all):

- ``resnet50``: a ResNet-50-shaped classifier (bottlenecks [3, 4, 6, 3], BatchNorm after
  every conv, random weights and statistics), about 100 MB;
- ``wide2g``: a wide residual 3x3 conv stack (1024 channels at 4x4, BatchNorm), about
  2.3 GB of float32 weights, i.e. a model past protobuf's 2 GB limit.

Then, in one run, it measures with ``/usr/bin/time -f "%M %e"`` (peak RSS, wall time):
the floor (``onnx_ir.load`` + ``onnx_ir.save`` with external data, in a fresh process),
``python -m onnxcompress MODEL -o OUT --ratio 0.5``, and the same with ``--no-simplify``,
and writes ``bench/SCALE.md`` (table of ratios) and ``bench/.cache/scale/results.json``.

    python bench/scale_bench.py                 # both models, 1 repeat
    python bench/scale_bench.py --models resnet50 --repeat 3
    python bench/scale_bench.py --stages        # also the per-pass timings from --report
    git archive COMMIT onnxcompress | tar -x -C /tmp/old   # an older checkout, measured in the same run:
    python bench/scale_bench.py --baseline /tmp/old
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache" / "scale"
#: tensors smaller than this stay inside the .onnx file (onnx's own default threshold)
INLINE_BYTES = 1024
_ALIGN = 4096


# ----------------------------------------------------------------------------- building
class StreamingBuilder:
    """Collects nodes, and writes each weight to the data file as soon as it is made."""

    def __init__(self, path: Path, seed: int = 0) -> None:
        self.path = path
        self.data_name = path.name + ".data"
        self.data = open(path.with_name(self.data_name), "wb")  # noqa: SIM115 - closed in save()
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def weight(self, hint: str, array: np.ndarray) -> str:
        name = self.name(hint)
        array = np.ascontiguousarray(array)
        t = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(array.dtype), dims=array.shape)
        if array.nbytes < INLINE_BYTES:
            t.raw_data = array.tobytes()
        else:
            pad = (-self.data.tell()) % _ALIGN
            self.data.write(b"\0" * pad)
            offset = self.data.tell()
            self.data.write(array.tobytes())
            t.data_location = TensorProto.EXTERNAL
            for k, v in (("location", self.data_name), ("offset", str(offset)), ("length", str(array.nbytes))):
                t.external_data.add(key=k, value=v)
        self.inits.append(t)
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out + "_node", **attrs))
        return out

    def conv_bn(self, x: str, cin: int, cout: int, k: int, stride: int = 1, relu: bool = True) -> str:
        fan_in = cin * k * k
        w = (self.rng.standard_normal((cout, cin, k, k), dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in)))
        y = self.node("Conv", [x, self.weight("w", w)], kernel_shape=[k, k], strides=[stride, stride],
                      pads=[k // 2] * 4)
        scale = self.rng.uniform(0.5, 1.0, cout).astype(np.float32)
        bias = (self.rng.standard_normal(cout, dtype=np.float32) * np.float32(0.1))
        mean = (self.rng.standard_normal(cout, dtype=np.float32) * np.float32(0.1))
        var = self.rng.uniform(0.5, 1.5, cout).astype(np.float32)
        y = self.node("BatchNormalization", [y] + [self.weight(n, a) for n, a in
                                                   (("g", scale), ("b", bias), ("m", mean), ("v", var))])
        return self.node("Relu", [y]) if relu else y

    def head(self, x: str, cin: int, classes: int) -> str:
        y = self.node("GlobalAveragePool", [x])
        y = self.node("Flatten", [y], axis=1)
        w = self.rng.standard_normal((classes, cin), dtype=np.float32) * np.float32(1.0 / np.sqrt(cin))
        b = np.zeros(classes, dtype=np.float32)
        return self.node("Gemm", [y, self.weight("fc_w", w), self.weight("fc_b", b)], transB=1)

    def save(self, x_name: str, in_shape: list, out: str, out_shape: list, graph_name: str) -> Path:
        self.data.close()
        graph = helper.make_graph(
            self.nodes, graph_name,
            [helper.make_tensor_value_info(x_name, TensorProto.FLOAT, in_shape)],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
            initializer=self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        self.path.write_bytes(model.SerializeToString())
        return self.path


def build_resnet50(path: Path) -> Path:
    """ResNet-50 layout (torchvision's v1.5: stride in the 3x3), BN unfolded, external data."""
    b = StreamingBuilder(path, seed=50)
    y = b.conv_bn("input", 3, 64, 7, stride=2)
    y = b.node("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for stage, (blocks, width) in enumerate(zip([3, 4, 6, 3], [64, 128, 256, 512])):
        for i in range(blocks):
            stride = 2 if (i == 0 and stage > 0) else 1
            h = b.conv_bn(y, cin, width, 1)
            h = b.conv_bn(h, width, width, 3, stride=stride)
            h = b.conv_bn(h, width, width * 4, 1, relu=False)
            short = b.conv_bn(y, cin, width * 4, 1, stride=stride, relu=False) if i == 0 else y
            y = b.node("Relu", [b.node("Add", [h, short])])
            cin = width * 4
    out = b.head(y, cin, 1000)
    return b.save("input", ["N", 3, 224, 224], out, ["N", 1000], "resnet50")


def build_wide(path: Path, channels: int = 1024, blocks: int = 31) -> Path:
    """A residual stack of 3x3 convs at 4x4: 2 * blocks convs of channels^2 * 9 floats (2.3 GB)."""
    b = StreamingBuilder(path, seed=2)
    y = b.conv_bn("input", 64, channels, 1)
    for _ in range(blocks):
        h = b.conv_bn(y, channels, channels, 3)
        h = b.conv_bn(h, channels, channels, 3, relu=False)
        y = b.node("Relu", [b.node("Add", [h, y])])
    out = b.head(y, channels, 1000)
    return b.save("input", ["N", 64, 4, 4], out, ["N", 1000], "wide2g")


def _dense(b: StreamingBuilder, x: str, cin: int, cout: int, relu: bool = True) -> str:
    w = b.rng.standard_normal((cin, cout), dtype=np.float32) * np.float32(1.0 / np.sqrt(cin))
    y = b.node("Gemm", [x, b.weight("fc_w", w), b.weight("fc_b", np.zeros(cout, np.float32))])
    return b.node("Relu", [y]) if relu else y


def build_huge_gemm(path: Path) -> Path:
    """Issue 17's shape: convs of 2048-4096 filters on an 8x8 map, then one 16384 x 16384 Gemm
    (1.07 GB, the largest single tensor) in a 2.4 GB model."""
    b = StreamingBuilder(path, seed=17)
    y = b.conv_bn("input", 256, 2048, 3)
    y = b.conv_bn(y, 2048, 2048, 3)
    y = b.conv_bn(y, 2048, 4096, 3)
    y = b.conv_bn(y, 4096, 4096, 3)
    y = b.conv_bn(y, 4096, 2048, 1)
    y = b.node("Flatten", [b.node("GlobalAveragePool", [y])], axis=1)
    y = _dense(b, y, 2048, 16384)
    y = _dense(b, y, 16384, 16384)
    out = _dense(b, y, 16384, 1000, relu=False)
    return b.save("input", ["N", 256, 8, 8], out, ["N", 1000], "huge_gemm")


def build_embedding(path: Path) -> Path:
    """An embedding-like 1.5 GB MatMul weight (4096 x 98304) after one 1024 -> 4096 layer: pruning
    the 4096 hidden features slices the big weight's rows."""
    b = StreamingBuilder(path, seed=15)
    h = _dense(b, "input", 1024, 4096)
    w = b.rng.standard_normal((4096, 98304), dtype=np.float32) * np.float32(1.0 / 64)
    out = b.node("MatMul", [h, b.weight("embed", w)])
    return b.save("input", ["N", 1024], out, ["N", 98304], "embedding1g5")


BUILDERS = {"resnet50": build_resnet50, "wide2g": build_wide, "huge_gemm": build_huge_gemm,
            "embedding1g5": build_embedding}


#: --ratio per model: issue 17 measured the huge Gemm at 0.3, the others at 0.5
RATIO = {"huge_gemm": 0.3}


def model_path(name: str) -> Path:
    return CACHE / name / f"{name}.onnx"


def ensure_model(name: str, rebuild: bool = False) -> Path:
    path = model_path(name)
    if rebuild or not path.exists() or not path.with_name(path.name + ".data").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        BUILDERS[name](path)
        print(f"built {path} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return path


def model_size(path: Path) -> int:
    return path.stat().st_size + path.with_name(path.name + ".data").stat().st_size


# ----------------------------------------------------------------------------- measuring
FLOOR = """
import sys, onnx_ir as ir
src, dst = sys.argv[1], sys.argv[2]
m = ir.load(src)
ir.save(m, dst, external_data=dst.rsplit("/", 1)[-1] + ".data")
"""


def src_env(src: str | None) -> dict | None:
    """The environment that makes ``python -m onnxcompress`` import the package from ``src``."""
    if src is None:
        return None
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


def timed(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd`` under /usr/bin/time; peak RSS (bytes) and wall seconds."""
    tfile = CACHE / "time.txt"
    # Run outside the repository: ``python -m`` puts the working directory first on sys.path.
    proc = subprocess.run(["/usr/bin/time", "-o", str(tfile), "-f", "%M %e", *cmd],
                          capture_output=True, text=True, env=env, cwd=CACHE)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    kb, secs = tfile.read_text().split()[-2:]
    return {"rss": int(kb) * 1024, "time": float(secs)}


def clean(out: Path) -> None:
    for p in (out, out.with_name(out.name + ".data")):
        if p.exists():
            p.unlink()


def measure(name: str, repeat: int, stages: bool, baseline: str | None = None) -> dict:
    """Floor, CLI and CLI --no-simplify (and the same from ``baseline``), interleaved, ``repeat`` times."""
    path = ensure_model(name)
    work = CACHE / name / "out"
    work.mkdir(exist_ok=True)
    out = work / "out.onnx"
    size = model_size(path)
    cli = [sys.executable, "-m", "onnxcompress", str(path), "-o", str(out), "--ratio", str(RATIO.get(name, 0.5)), "-q"]
    # This checkout's package, not whichever one the interpreter would import from CACHE (an
    # editable install of another checkout, say).
    here = src_env(str(ROOT))
    commands = {"floor": ([sys.executable, "-c", FLOOR, str(path), str(out)], None),
                "cli": (cli, here), "cli_nosimplify": ([*cli, "--no-simplify"], here)}
    if baseline:
        commands.update({"base_cli": (cli, src_env(baseline)), "base_cli_nosimplify": ([*cli, "--no-simplify"], src_env(baseline))})
    runs: dict[str, list[dict]] = {k: [] for k in commands}
    timings: dict[str, dict] = {}
    for _ in range(repeat):
        for key, (cmd, env) in commands.items():
            report = work / f"{key}.json"
            if stages and key != "floor":
                cmd = [*cmd, "--report", str(report)]
            clean(out)
            # The previous command's output is still being written back: flush it first, so no command
            # pays for the one before it (the CLI ran right after the floor's 2.4 GB write, 0.5 s slower).
            os.sync()
            runs[key].append(timed(cmd, env))
            if stages and key != "floor":
                timings[key] = json.loads(report.read_text()).get("timings", {})
                report.unlink()
            clean(out)
    best = {k: {"time": min(r["time"] for r in v), "rss": max(r["rss"] for r in v)} for k, v in runs.items()}
    return {"model": name, "size": size, "runs": runs, "best": best, "timings": timings}


def markdown(results: list[dict], baseline: str | None = None) -> str:
    rows = [("cli", "CLI"), ("cli_nosimplify", "CLI --no-simplify")]
    if baseline:
        rows = [("base_cli", "CLI, before"), ("cli", "CLI, after"),
                ("base_cli_nosimplify", "--no-simplify, before"), ("cli_nosimplify", "--no-simplify, after")]
    lines = [
        "# Scale: whole-CLI time and peak memory against the I/O floor",
        "",
        "Regenerate with `python bench/scale_bench.py` (the models are rebuilt under `bench/.cache/scale/`; "
        "`--baseline DIR` also measures another checkout of the package in the same run).",
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, shared with other "
        "jobs, so times move by tens of percent between runs: compare ratios within one run.",
        "Floor = a fresh process that runs `onnx_ir.load` + `onnx_ir.save` with external data (imports included). "
        "CLI = `python -m onnxcompress MODEL -o OUT --ratio R` (R = 0.3 for huge_gemm, as issue 17 measured it, else 0.5; random verification inputs). Time is the best of "
        "the repeats and peak RSS (`/usr/bin/time %M`) the worst.",
        "",
        "| model | size | run | time | floor time | time / floor | peak RSS | RSS / size |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        b, size = r["best"], r["size"]
        floor = b["floor"]["time"]
        lines.append(f"| {r['model']} | {size / 1e6:,.0f} MB | floor (load + save) | {floor:.2f} s | {floor:.2f} s | 1.00x | "
                     f"{b['floor']['rss'] / 1e6:,.0f} MB | {b['floor']['rss'] / size:.2f}x |")
        for key, label in rows:
            if key in b:
                lines.append(f"| {r['model']} | {size / 1e6:,.0f} MB | {label} | {b[key]['time']:.2f} s | {floor:.2f} s | "
                             f"{b[key]['time'] / floor:.2f}x | {b[key]['rss'] / 1e6:,.0f} MB | {b[key]['rss'] / size:.2f}x |")
    if any(r["timings"] for r in results):
        lines += ["", "Per-pass seconds of the last repeat (the report's `timings`; imports, the size of the input "
                  "file and the save come on top):", ""]
        for r in results:
            for key, t in r["timings"].items():
                parts = ", ".join(f"{k[:-2]} {v:.2f}" for k, v in t.items())
                lines.append(f"- {r['model']}, {dict(rows).get(key, key)}: {parts}")
    return "\n".join(lines) + "\n"


BEGIN, END = "<!-- generated by bench/scale_bench.py -->", "<!-- end of generated part -->"


def write_markdown(path: Path, generated: str) -> None:
    """Replace the generated part of ``path`` (between the markers), keeping the notes around it."""
    block = f"{BEGIN}\n{generated}{END}\n"
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        text = head + block + ("\n" + tail if tail else "")
    else:
        text = block + text
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(BUILDERS), choices=list(BUILDERS))
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--stages", action="store_true", help="also record the per-pass timings (--report)")
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--markdown", default=str(ROOT / "bench" / "SCALE.md"))
    ap.add_argument("--keep", action="store_true", help="keep the generated models (they are deleted otherwise)")
    ap.add_argument("--baseline", metavar="DIR", help="also measure the onnxcompress package found in DIR (PYTHONPATH)")
    args = ap.parse_args(argv)
    free = shutil.disk_usage(ROOT).free
    if free < 8e9:
        print(f"only {free / 1e9:.1f} GB free; the 2 GB model needs about 7 GB", file=sys.stderr)
    CACHE.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        ensure_model(name, args.rebuild)
    if args.build_only:
        return 0
    results = []
    for name in args.models:
        r = measure(name, args.repeat, args.stages, args.baseline)
        b = r["best"]
        print(f"{name}: floor {b['floor']['time']:.2f} s; cli {b['cli']['time']:.2f} s "
              f"({b['cli']['time'] / b['floor']['time']:.2f}x, RSS {b['cli']['rss'] / r['size']:.2f}x size); "
              f"--no-simplify {b['cli_nosimplify']['time']:.2f} s "
              f"({b['cli_nosimplify']['time'] / b['floor']['time']:.2f}x, "
              f"RSS {b['cli_nosimplify']['rss'] / r['size']:.2f}x)", file=sys.stderr)
        results.append(r)
        if not args.keep:
            shutil.rmtree(CACHE / name, ignore_errors=True)
    (CACHE / "results.json").write_text(json.dumps(results, indent=1))
    write_markdown(Path(args.markdown), markdown(results, args.baseline))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
