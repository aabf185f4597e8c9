"""The one place that talks to onnxruntime: sessions, input feeds and runs.

Everything else (verification, shape measurement, single-node folding, onnxsim's guard,
the benchmark runner, calibration) goes through this module, so session options, log
levels and serialisation rules are decided once.

- ``open_session`` builds a session from an ``ir.Model``, a ``ModelProto``, bytes or a
  path (a path is read by onnxruntime itself, external data included; an ``ir.Model``'s
  weights are handed over by reference, see ``serialized.Serialized``);
- ``random_feeds`` / ``second_sizing`` make inputs (``npz_inputs`` reads them from a file);
- ``Session.run(feeds, outputs=...)`` runs, optionally exposing intermediate values,
  which the calibration work reads layer by layer; ``run_all`` joins a data set's batches.
"""

from __future__ import annotations

import logging
import os
from typing import Iterable, Sequence

import numpy as np
import onnx
import onnx_ir as ir

from onnxcompress.output_join import OutputJoin
from onnxcompress.serialized import Serialized

logger = logging.getLogger(__name__)

Shape = tuple[int, ...]

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
PROVIDERS = {"cpu": CPU, "cuda": CUDA}

#: onnxruntime's log severity: 4 = fatal only. Its errors come back as exceptions, which we turn into
#: our own one-line messages; its log lines (probing runs at a second sizing fail on purpose) would be noise
QUIET = 4
#: its warnings and errors, shown when Python logging is at DEBUG (the CLI's --debug)
VERBOSE = 2


def default_log_severity() -> int:
    """onnxruntime's own log lines follow ours: quiet, unless the root logger shows DEBUG."""
    return VERBOSE if logging.getLogger().isEnabledFor(logging.DEBUG) else QUIET

_NP_DTYPES = {
    ir.DataType.FLOAT: np.float32,
    ir.DataType.FLOAT16: np.float16,
    ir.DataType.DOUBLE: np.float64,
    ir.DataType.INT64: np.int64,
    ir.DataType.INT32: np.int32,
    ir.DataType.UINT8: np.uint8,
    ir.DataType.INT8: np.int8,
    ir.DataType.BOOL: np.bool_,
}


def np_dtype(dtype: ir.DataType | None) -> type:
    """The numpy dtype of an ONNX element type (float32 when unknown)."""
    return _NP_DTYPES.get(dtype, np.float32)


def graph_inputs(model: ir.Model) -> list[ir.Value]:
    """Real inputs: graph inputs that are not initializers (old opsets list both)."""
    inits = set(model.graph.initializers)
    return [v for v in model.graph.inputs if v.name not in inits]


# ----------------------------------------------------------------------------- feeds
#: ops that index a constant table with an input: (op, domain) -> {index input: table input}
INDEX_TABLES = {("Gather", ""): {1: 0},
                ("EmbedLayerNormalization", "com.microsoft"): {0: 2, 1: 4, 8: 3}}  # ids, segment ids, position ids
#: ops an index passes through on its way to the table
_INDEX_PASS = {"Cast", "Identity", "Unsqueeze", "Squeeze", "Reshape", "Flatten"}
#: random ints are drawn from [0, SMALL_INTS) unless a table they index is smaller
SMALL_INTS = 4


def index_bounds(nodes, rows) -> dict[str, int]:
    """Value name -> the smallest table it indexes (its ints must stay below), for random feeds.

    ``nodes``: (op, domain, input names, axis attribute or None) of every node; ``rows(name,
    axis)``: a constant table's size along ``axis``, or None. BERT's token types index a
    2-row table: a random 3 made onnxruntime refuse the model ("input index out of range").
    """
    uses: dict[str, list] = {}
    for op, domain, inputs, outputs, axis in nodes:
        for i, name in enumerate(inputs):
            uses.setdefault(name, []).append((op, domain or "", i, inputs, outputs, axis))

    def bound(name: str, depth: int = 0) -> int | None:
        found = []
        for op, domain, i, inputs, outputs, axis in uses.get(name, []):
            table = INDEX_TABLES.get((op, domain), {}).get(i)
            if table is not None and table < len(inputs) and inputs[table]:
                found.append(rows(inputs[table], axis if op == "Gather" else 0))
            elif op in _INDEX_PASS and i == 0 and depth < 4 and outputs:
                found.append(bound(outputs[0], depth + 1))
        sizes = [f for f in found if f]
        return min(sizes) if sizes else None

    return {name: b for name in list(uses) if (b := bound(name)) is not None}


def model_index_bounds(model: ir.Model) -> dict[str, int]:
    """``index_bounds`` of an onnx-ir model, for its graph inputs only."""
    nodes = [(n.op_type, n.domain, [v.name if v is not None else "" for v in n.inputs], [v.name for v in n.outputs],
              n.attributes["axis"].as_int() if "axis" in n.attributes else 0) for n in model.graph]
    consts = {v.name: v for v in model.graph.initializers.values()}

    def rows(name: str, axis: int) -> int | None:
        v = consts.get(name)
        dims = list(v.shape) if v is not None and v.shape is not None else []
        return int(dims[axis]) if dims and -len(dims) <= axis < len(dims) and isinstance(dims[axis], int) else None

    inputs = {v.name for v in graph_inputs(model)}
    return {k: b for k, b in index_bounds(nodes, rows).items() if k in inputs}


def proto_index_bounds(proto: onnx.ModelProto) -> dict[str, int]:
    """``index_bounds`` of a ``ModelProto`` (tensor data is not read), for its graph inputs only."""
    nodes = [(n.op_type, n.domain, list(n.input), list(n.output),
              next((a.i for a in n.attribute if a.name == "axis"), 0)) for n in proto.graph.node]
    dims = {t.name: list(t.dims) for t in proto.graph.initializer}

    def rows(name: str, axis: int) -> int | None:
        d = dims.get(name)
        return int(d[axis]) if d and -len(d) <= axis < len(d) else None

    inputs = {vi.name for vi in proto.graph.input}
    return {k: b for k, b in index_bounds(nodes, rows).items() if k in inputs}


def random_array(rng: np.random.Generator, shape, dtype, high: int | None = None) -> np.ndarray:
    """Standard normal floats, 0/1 booleans, small non-negative ints (below ``high`` when given:
    the size of a table the input indexes).

    Raises ``InputError``, not numpy's ``MemoryError``, when the array does not fit.
    """
    from onnxcompress.errors import InputError

    try:
        if np.issubdtype(dtype, np.floating):
            return rng.standard_normal(shape).astype(dtype)
        if dtype == np.bool_:
            return rng.integers(0, 2, shape).astype(bool)
        return rng.integers(0, max(1, min(SMALL_INTS, high or SMALL_INTS)), shape).astype(dtype)
    except MemoryError as exc:
        raise InputError(f"not enough memory for random inputs of shape {tuple(shape)}: {exc}") from None


def random_feeds(model: ir.Model, input_shapes: dict[str, Shape], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random feeds for every real input of ``model``.

    Sizes are checked before anything is allocated: past half the machine's memory (a
    float is drawn in float64 first), ``InputError`` names the input and its largest dim.
    A negative ``seed`` is an ``InputError`` too.
    """
    import math

    from onnxcompress.errors import InputError

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"--seed must be a non-negative integer, got {seed!r}")
    try:
        limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        limit = 8 << 30
    inputs, total = [], 0
    for v in graph_inputs(model):
        dims, dtype = [int(d) for d in input_shapes[v.name]], np_dtype(v.dtype)
        neg = next((i for i, d in enumerate(dims) if d < 0), None)
        if neg is not None:
            raise InputError(f"input {v.name!r} dim {neg} is {dims[neg]}: give a positive size with --input-shape")
        count = math.prod(dims)
        total += count * (np.dtype(dtype).itemsize + (8 if np.issubdtype(dtype, np.floating) else 0))
        if total > limit:
            big = max(range(len(dims)), key=lambda i: dims[i]) if dims else 0
            raise InputError(
                f"input {v.name!r} of shape {tuple(dims)} needs {count:,} random values, more than this machine's "
                f"memory allows ({limit / 2**30:,.1f} GiB for inputs); dim {big} is {dims[big] if dims else 0:,}: "
                "pin a smaller size with --input-shape (or --batch)"
            )
        inputs.append((v.name, tuple(dims), dtype))
    rng = np.random.default_rng(seed)
    bounds = model_index_bounds(model) if any(not np.issubdtype(d, np.floating) for _, _, d in inputs) else {}
    return {name: random_array(rng, shape, dtype, bounds.get(name)) for name, shape, dtype in inputs}


def proto_random_feeds(proto: onnx.ModelProto, shapes: dict[str, Shape], seed: int) -> dict[str, np.ndarray]:
    """``random_feeds`` for a ``ModelProto`` (inputs without a given shape are skipped)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    bounds = proto_index_bounds(proto)
    for vi in proto.graph.input:
        if vi.name in shapes:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
            feeds[vi.name] = random_array(rng, shapes[vi.name], dtype, bounds.get(vi.name))
    return feeds


def second_sizing(model: ir.Model, pinned: dict[str, Shape], *, spatial_only: bool = False) -> dict[str, Shape] | None:
    """The pinned input shapes with every symbolic dim moved (batch + 1, others doubled).

    None when nothing is symbolic (or, with ``spatial_only``, when only the batch is).
    """
    alt, moved = {}, False
    for v in graph_inputs(model):
        dims = list(pinned[v.name])
        if v.shape is not None:
            for i, d in enumerate(v.shape):
                if not (isinstance(d, int) and d > 0):  # symbolic, or -1/0 (dynamic as exported)
                    dims[i] = dims[i] + 1 if i == 0 else dims[i] * 2
                    moved = moved or i > 0 or not spatial_only
        alt[v.name] = tuple(dims)
    return alt if moved else None


# ----------------------------------------------------------------------------- sessions
def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


#: weights past which sessions that are not timed skip onnxruntime's packed weight copies
PREPACK_MAX_BYTES = 256 << 20


def _weight_bytes(ser: Serialized) -> int:
    """About how many bytes of weights the session will hold."""
    if ser.shared:
        return sum(a.nbytes for a in ser.shared.values())
    src = ser.source
    if isinstance(src, bytes):
        return len(src)
    try:
        from onnxcompress.io import file_bytes

        return file_bytes(src)
    except OSError:
        return 0


def open_session(
    model: ir.Model | onnx.ModelProto | Serialized | bytes | str | os.PathLike,
    *,
    providers: Sequence[str] = ("cpu",),
    threads: int | None = None,
    optimize: bool = True,
    log_severity: int | None = None,
    prepack: bool | None = None,
):
    """An ``onnxruntime.InferenceSession``; ``providers`` are short names (cpu, cuda).

    An ``ir.Model``'s big weights reach the session by reference (see ``Serialized``).
    ``prepack``: let onnxruntime keep a packed copy of constant MatMul/Gemm/Conv weights (faster
    runs, a second copy of those weights). None (the default) turns it off past
    ``PREPACK_MAX_BYTES`` of weights: a 1.5 GB MatMul weight took 3.1 GB of RSS with it, 1.6 GB
    without. Timed sessions ask for it explicitly.
    """
    import onnxruntime as ort

    ser = model if isinstance(model, Serialized) else Serialized(model)
    if prepack is None:
        prepack = _weight_bytes(ser) <= PREPACK_MAX_BYTES

    def options():
        opts = ort.SessionOptions()
        opts.log_severity_level = default_log_severity() if log_severity is None else log_severity
        if threads:
            opts.intra_op_num_threads = threads
        if not optimize:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if not prepack:
            opts.add_session_config_entry("session.disable_prepacking", "1")
        return opts

    names = [PROVIDERS.get(p, p) for p in providers]
    opts = options()
    if ser.ortvalues is None:
        ser.ortvalues = {n: ort.OrtValue.ortvalue_from_numpy(a) for n, a in ser.shared.items()}
    for name, value in ser.ortvalues.items():
        opts.add_initializer(name, value)
    try:
        sess = ort.InferenceSession(ser.source, opts, providers=names)
    except Exception as exc:
        if not ser.shared or "external" not in str(exc).lower():
            raise
        # An onnxruntime that reads external data before taking the given tensors: serialise all.
        logger.info("onnxruntime refused the shared weights (%s); serialising the whole model", exc)
        sess = ort.InferenceSession(ser.data, options(), providers=names)
    sess._onnxcompress_serialized = ser  # keeps the temporary files and the shared tensors alive
    return sess


class Session:
    """A CPU session over a model, with named runs and intermediate outputs.

    ``expose`` names values inside the graph to add as extra outputs, so one run returns
    both the model's outputs and the activations a calibration step needs.
    """

    def __init__(
        self,
        model: ir.Model | onnx.ModelProto | Serialized | str | os.PathLike,
        *,
        expose: Iterable[str] = (),
        optimize: bool = True,
        threads: int | None = None,
    ):
        expose = [n for n in expose if n]
        if expose:
            # An in-memory model keeps its weights shared (no copy); anything else is re-serialised.
            model = Serialized(model, extra_outputs=expose) if isinstance(model, ir.Model) else with_outputs(model, expose)
            # Fusions would swallow the exposed values; keep the graph as written.
            optimize = False
        self.session = open_session(model, optimize=optimize, threads=threads)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, feeds: dict[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        names = list(outputs) if outputs is not None else self.output_names
        feeds = {k: v for k, v in feeds.items() if k in self.input_names}
        return dict(zip(names, self.session.run(names, feeds)))

    def run_all(self, batches: Sequence[dict[str, np.ndarray]], outputs: Sequence[str] | None = None,
                shared: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Outputs over several batches, joined batch-first (``output_join``).

        A batch over ``RUN_INPUT_BYTES`` runs in parts (see ``split_feeds``). ``shared`` feeds (masks,
        weights) go whole with every part and never count as a batch.
        """
        parts = [p for f in batches for p in split_feeds(f)]
        join = OutputJoin([feeds_batch(f) for f in parts])  # each part copied in as it comes
        for f in parts:
            join.add(self.run({**f, **shared} if shared else f, outputs))
        return join.result()


#: input bytes one run may take; a bigger feed runs in parts along its batch. onnxruntime's
#: activations grow with the batch: a 640x640 text detector at batch 32 held several GB.
RUN_INPUT_BYTES = 8 << 20


def feeds_batch(feeds: dict[str, np.ndarray]) -> int:
    """The batch of a feed: the leading dim of its largest array."""
    big = max(feeds.values(), key=lambda a: a.nbytes)
    return int(big.shape[0]) if big.ndim else 1


def split_feeds(feeds: dict[str, np.ndarray], limit: int = RUN_INPUT_BYTES) -> list[dict[str, np.ndarray]]:
    """``feeds`` as parts of at most ``limit`` input bytes each (at least one sample per part).

    Arrays whose leading dim is the batch are sliced; the others (masks, shapes) go whole to every part.
    """
    n = feeds_batch(feeds) if feeds else 1
    total = sum(a.nbytes for a in feeds.values())
    if n <= 1 or total <= limit:
        return [feeds]
    step = max(1, int(limit // max(total / n, 1)))
    return [{k: (v[i : i + step] if v.ndim and v.shape[0] == n else v) for k, v in feeds.items()} for i in range(0, n, step)]


def with_outputs(model: ir.Model | onnx.ModelProto | Serialized | str | os.PathLike, names: Sequence[str]) -> onnx.ModelProto:
    """A proto of ``model`` whose graph also outputs the named values (in that order)."""
    if isinstance(model, ir.Model):
        proto = ir.to_proto(model)
    elif isinstance(model, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
    else:
        data = model.data if isinstance(model, Serialized) else os.fspath(model)
        proto = onnx.load_from_string(data) if isinstance(data, bytes) else onnx.load(data)
    known = {o.name for o in proto.graph.output}
    for n in names:
        if n not in known:
            proto.graph.output.append(onnx.ValueInfoProto(name=n))
            known.add(n)
    return proto


def run_model(model, feeds: dict[str, np.ndarray], **kwargs) -> dict[str, np.ndarray]:
    """One run of a model on one set of feeds (a fresh session)."""
    return Session(model, **kwargs).run(feeds)


def run_single_node(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run a tiny one-node model as written (no graph optimisation)."""
    sess = open_session(proto, optimize=False)
    return [np.asarray(r) for r in sess.run(None, feeds)]
