"""Calibration data: a few hundred real, unlabelled inputs, read from what users have.

``load_calibration(path, model)`` accepts:

- an ``.npz`` of arrays keyed by input name, samples stacked on axis 0;
- a folder of ``.npy``/``.npz`` files, one sample or one batch each (shapes may differ;
  an ``.npy`` feeds a model with a single input);
- a folder of images (``.png``/``.jpg``/``.bmp``...), with an ``ImageSpec`` that says how
  to turn them into the model's input (resize, scale, mean/std, channel order, layout).

Every array is checked against the model's input (rank, fixed dims, dtype) up front,
and a mismatch is one line naming the input, what was expected and what was found.

Memory is bounded: only the samples used are read. ``limit`` (``--calib-samples N``) takes
the first N. Without it, a set larger than ``MAX_CALIB_BYTES`` (512 MiB of model input; the
environment variable ``ONNXCOMPRESS_CALIB_BYTES`` changes it) is thinned to evenly spaced
samples that fit, chosen before anything is decoded: images are decoded one by one, and
the rows of an ``.npy`` or ``.npz`` member are streamed from the file (a compressed member
is decompressed as a stream, never held whole). The set's notes say how many were kept.
Models whose batch is fixed at 1 are fed one sample at a time. ``split`` keeps a
held-out part, which judges every decision fitted on the rest: a share of the samples, at most
``MAX_HELD_OUT`` of them. Every stage that judges holds the original's outputs for the whole
held-out part (the verification, the refit's judge, distillation's), so its size, not the
calibration set's, is what memory grows with: PP-OCRv6 rec, whose output is 3 MB a sample, peaked
at 10.6 GB with 512 held out and 6.3 GB with 256 (2048 samples, refit; bench/HELD_OUT_CAP.md).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx_ir as ir

from onnxcompress.calib_batch_axis import check_shared_batch_axis
from onnxcompress.errors import InputError
from onnxcompress.runtime import graph_inputs, np_dtype

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
#: keys of an .npz that hold labels, not inputs
LABEL_KEYS = {"y", "labels", "label", "targets", "target"}
#: the held-out part's size at most: a 1024-sample set holds out 256 (its share), a 2048-sample set 256 too
MAX_HELD_OUT = 256
#: samples per run when the model's batch is dynamic
DEFAULT_BATCH = 32
#: at most this many bytes of model input are held, unless --calib-samples asks for a count
MAX_CALIB_BYTES = 512 << 20


@dataclass
class ImageSpec:
    """How images become a model input. ``size`` is (height, width); None keeps the model's."""

    size: tuple[int, int] | None = None
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    channels: str = "RGB"  # RGB | BGR | L (grey)
    layout: str = "NCHW"  # NCHW | NHWC

    @classmethod
    def parse(cls, text: str) -> "ImageSpec":
        """``size=48x320,scale=0.0039,mean=0.5,std=0.5,channels=BGR,layout=NCHW`` (any subset)."""
        spec = cls()
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, _, val = part.partition("=")
            try:
                if key == "size":
                    h, w = val.lower().split("x")
                    spec.size = (int(h), int(w))
                elif key == "scale":
                    spec.scale = float(val)
                elif key in ("mean", "std"):
                    setattr(spec, key, tuple(float(x) for x in val.split("/")))
                elif key == "channels" and val.upper() in ("RGB", "BGR", "L"):
                    spec.channels = val.upper()
                elif key == "layout" and val.upper() in ("NCHW", "NHWC"):
                    spec.layout = val.upper()
                else:
                    raise ValueError(key)
            except ValueError:
                raise InputError(
                    f"--calib-image: cannot read {part!r} (keys: size=HxW, scale=F, mean=A/B/C, std=A/B/C, "
                    "channels=RGB|BGR|L, layout=NCHW|NHWC)"
                ) from None
        return spec


@dataclass
class CalibrationSet:
    """Real input samples for one model, grouped into runnable batches."""

    #: each entry is one feed dict (a batch of one or more samples)
    chunks: list[dict[str, np.ndarray]]
    source: str = ""
    #: the model's batch is fixed at this size (1 for most fixed exports), else None
    fixed_batch: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def samples(self) -> int:
        return sum(_batch(c) for c in self.chunks)

    def batches(self, size: int = DEFAULT_BATCH) -> Iterator[dict[str, np.ndarray]]:
        """Feeds of at most ``size`` samples (exactly ``fixed_batch`` for fixed-batch models)."""
        step = self.fixed_batch or size
        for chunk in self.chunks:
            n = _batch(chunk)
            for i in range(0, n, step):
                yield {k: v[i : i + step] for k, v in chunk.items()}

    def split(self, held_out: float = 0.25, seed: int = 0,
              max_held: int = MAX_HELD_OUT) -> tuple["CalibrationSet", "CalibrationSet"]:
        """(fit, held-out) by whole samples, deterministic; both keep at least one sample, and the
        held-out part at most ``max_held``."""
        samples = [s for c in self.chunks for s in _unstack(c)]
        if len(samples) < 2:
            raise InputError(f"calibration data {self.source}: need at least 2 samples, found {len(samples)}")
        order = np.random.default_rng(seed).permutation(len(samples))
        n_hold = min(len(samples) - 1, max(1, min(max_held, int(round(held_out * len(samples))))))
        hold = sorted(order[:n_hold].tolist())
        fit = sorted(order[n_hold:].tolist())
        return (
            CalibrationSet(_restack([samples[i] for i in fit]), self.source + " (fit)", self.fixed_batch),
            CalibrationSet(_restack([samples[i] for i in hold]), self.source + " (held out)", self.fixed_batch),
        )

    def subset(self, n: int) -> "CalibrationSet":
        """The first ``n`` samples."""
        samples = [s for c in self.chunks for s in _unstack(c)][:n]
        return CalibrationSet(_restack(samples), self.source, self.fixed_batch)


def _batch(feeds: dict[str, np.ndarray]) -> int:
    return int(next(iter(feeds.values())).shape[0]) if feeds else 0


def _unstack(feeds: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    return [{k: v[i : i + 1] for k, v in feeds.items()} for i in range(_batch(feeds))]


def _restack(samples: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Consecutive samples of equal shapes joined into one chunk."""
    chunks: list[list[dict[str, np.ndarray]]] = []
    for s in samples:
        sig = {k: v.shape[1:] for k, v in s.items()}
        if chunks and {k: v.shape[1:] for k, v in chunks[-1][0].items()} == sig:
            chunks[-1].append(s)
        else:
            chunks.append([s])
    return [{k: np.concatenate([s[k] for s in group]) for k in group[0]} for group in chunks]


def load_calibration(
    path: str | os.PathLike, model: ir.Model, image_spec: ImageSpec | None = None, limit: int | None = None
) -> CalibrationSet:
    """Read, check and batch calibration data for ``model`` (see the module docstring)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"--calib: no such file or folder: {p}")
    if not p.is_dir():
        from onnxcompress.paths import require_regular_file

        require_regular_file(p, "--calib")
    inputs = graph_inputs(model)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
        images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
        arrays = [f for f in files if f.suffix.lower() in (".npy", ".npz")]
        if images and not arrays:
            units = [(f, 1) for f in images]
        elif arrays:
            units = [(f, _sample_count(f, inputs)) for f in arrays]
        else:
            raise InputError(f"--calib: {p} holds no .npy, .npz or image files")
    elif p.suffix.lower() in (".npz", ".npy"):
        units = [(p, _sample_count(p, inputs))]
    else:
        raise InputError(f"--calib: {p} is not an .npz, .npy or a folder")
    total = sum(n for _, n in units)
    notes: list[str] = []
    if limit is not None:
        wanted = np.arange(min(limit, total))
    else:
        wanted = np.arange(total)
        per_sample = _sample_bytes(units, inputs, image_spec)
        budget = int(os.environ.get("ONNXCOMPRESS_CALIB_BYTES", MAX_CALIB_BYTES))
        if per_sample and total * per_sample > budget:
            n = max(2, budget // per_sample)
            wanted = np.unique(np.linspace(0, total - 1, n).round().astype(np.int64))
            notes.append(f"read {len(wanted)} of {total} samples, evenly spaced ({per_sample / 2**20:.1f} MB each, "
                         f"{budget / 2**30:.2g} GiB budget; --calib-samples N takes the first N instead)")
    chunks, first = [], 0
    for f, n in units:
        rows = wanted[(wanted >= first) & (wanted < first + n)] - first
        first += n
        if not len(rows):
            continue
        if f.suffix.lower() in IMAGE_SUFFIXES:
            chunks.append(_load_images([f], inputs, image_spec or ImageSpec()))
        else:
            chunks.append(_load_array_file(f, inputs, rows if len(rows) < n else None))
    fixed = _fixed_batch(inputs)
    for c in chunks:
        _check_chunk(c, inputs, p)
    cal = CalibrationSet(_restack([s for c in chunks for s in _unstack(c)]), str(p), fixed, notes)
    if cal.samples == 0:
        raise InputError(f"--calib: {p} holds no samples")
    return cal


def _fixed_batch(inputs: list[ir.Value]) -> int | None:
    for v in inputs:
        if v.shape is not None and len(v.shape) and isinstance(v.shape[0], int) and v.shape[0] > 0:
            return int(v.shape[0])
    return None


def _array_keys(f: Path, inputs: list[ir.Value]) -> dict[str, str | None]:
    """Input name -> the array's key in ``f`` (None: the whole .npy), after the same checks as loading."""
    names = [v.name for v in inputs]
    if f.suffix.lower() == ".npy":
        if len(inputs) != 1:
            raise InputError(f"--calib: {f.name} is a single array but the model has {len(inputs)} inputs; use .npz keyed by input name")
        return {names[0]: None}
    try:
        with zipfile.ZipFile(f) as z:
            keys = [n[:-4] for n in z.namelist() if n.endswith(".npy")]
    except Exception as exc:  # noqa: BLE001 - a truncated or empty file, a bad zip: all the same to the user
        raise InputError(f"--calib: cannot read {f}: {type(exc).__name__ if not str(exc) else exc}") from exc
    missing = [n for n in names if n not in keys]
    if missing:
        # A single-input model takes the one array that is not a label (an eval set works as is).
        data = [k for k in keys if k not in LABEL_KEYS]
        if len(names) == 1 and len(data) == 1:
            return {names[0]: data[0]}
        raise InputError(f"--calib: {f.name} has no array for input {missing[0]!r} (found keys {sorted(keys)})")
    return {n: n for n in names}


def _header(fp) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fp)  # (shape, fortran_order, dtype)
    return np.lib.format.read_array_header_2_0(fp)


def _open_member(f: Path, key: str | None):
    if key is None:
        return open(f, "rb"), None
    z = zipfile.ZipFile(f)
    return z.open(key + ".npy"), z


def _sample_count(f: Path, inputs: list[ir.Value]) -> int:
    """Samples in ``f``, from the first input's array header (nothing is decompressed)."""
    key = next(iter(_array_keys(f, inputs).values()))
    try:
        fp, z = _open_member(f, key)
        with fp:
            shape, _, _ = _header(fp)
        if z is not None:
            z.close()
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"--calib: cannot read {f}: {type(exc).__name__ if not str(exc) else exc}") from exc
    v = inputs[0]
    if v.shape is not None and len(shape) == len(v.shape) - 1:
        return 1  # one sample without its batch axis
    return int(shape[0]) if shape else 0


def _sample_bytes(units, inputs: list[ir.Value], image_spec: ImageSpec | None) -> int:
    """Bytes of one sample as the model takes it (float32 for images), from the first unit."""
    f, n = units[0]
    if f.suffix.lower() in IMAGE_SUFFIXES:
        a = _load_images([f], inputs, image_spec or ImageSpec())
        return int(sum(x.nbytes for x in a.values()))
    total = 0
    for name, key in _array_keys(f, inputs).items():
        fp, z = _open_member(f, key)
        with fp:
            shape, _, dtype = _header(fp)
        if z is not None:
            z.close()
        total += int(np.prod(shape, dtype=np.int64)) * dtype.itemsize // max(n, 1)
    return total


def _read_rows(f: Path, key: str | None, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` (sorted) along axis 0 of one array, read as a stream: one row in memory at a time."""
    fp, z = _open_member(f, key)
    try:
        with fp:
            shape, fortran, dtype = _header(fp)
            if fortran or dtype.hasobject or not shape:
                raise ValueError("not a C-ordered numeric array")
            row_shape = tuple(shape[1:])
            row_bytes = int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize
            out = np.empty((len(rows), *row_shape), dtype)
            at = 0
            for j, r in enumerate(rows):
                skip = (int(r) - at) * row_bytes
                while skip > 0:  # a compressed stream cannot seek: read and drop
                    got = len(fp.read(min(skip, 1 << 24)))
                    if not got:
                        raise ValueError("truncated array")
                    skip -= got
                buf = fp.read(row_bytes)
                if len(buf) != row_bytes:
                    raise ValueError("truncated array")
                out[j] = np.frombuffer(buf, dtype).reshape(row_shape)
                at = int(r) + 1
            return out
    finally:
        if z is not None:
            z.close()


def _load_array_file(f: Path, inputs: list[ir.Value], rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The arrays of ``f`` for each input; with ``rows``, only those samples, streamed from the file."""
    keys = _array_keys(f, inputs)
    try:
        if rows is not None:
            try:
                out = {name: _read_rows(f, key, rows) for name, key in keys.items()}
            except ValueError:  # Fortran order, object arrays, an odd header: read whole, then take the rows
                return {k: v[rows] for k, v in _load_array_file(f, inputs).items()}
        elif f.suffix.lower() == ".npy":
            out = {name: np.load(f, allow_pickle=False) for name in keys}
        else:
            with np.load(f, allow_pickle=False) as z:
                out = {name: z[key] for name, key in keys.items()}
    except Exception as exc:  # noqa: BLE001 - a truncated or empty file, a bad zip: all the same to the user
        raise InputError(f"--calib: cannot read {f}: {type(exc).__name__ if not str(exc) else exc}") from exc
    # One sample without its batch axis gets one.
    for v in inputs:
        if v.shape is not None and out[v.name].ndim == len(v.shape) - 1:
            out[v.name] = out[v.name][None]
    return out


def _check_chunk(feeds: dict[str, np.ndarray], inputs: list[ir.Value], src: Path) -> None:
    sizes = {k: int(v.shape[0]) if v.ndim else 0 for k, v in feeds.items()}
    for v in inputs:
        a = feeds[v.name]
        want_dtype = np.dtype(np_dtype(v.dtype))
        expected = "x".join(str(d) if isinstance(d, int) and d > 0 else "?" for d in v.shape) if v.shape is not None else "?"
        found = f"{'x'.join(map(str, a.shape))} {a.dtype}"
        if a.dtype != want_dtype:
            if np.issubdtype(a.dtype, np.number) and np.issubdtype(want_dtype, np.floating):
                feeds[v.name] = a = a.astype(want_dtype)
            else:
                raise InputError(f"--calib {src.name}: input {v.name!r} expects {expected} {want_dtype}, found {found}")
        if v.shape is not None and len(v.shape) == 0:
            raise InputError(f"--calib {src.name}: input {v.name!r} is a scalar (rank 0), and --calib stacks samples "
                             f"on axis 0: models with scalar inputs cannot be calibrated (unsupported)")
        if a.ndim and a.shape[0] == 0:
            raise InputError(f"--calib {src.name}: input {v.name!r} holds no samples (shape {found})")
        if v.shape is None:
            continue
        ok = a.ndim == len(v.shape) and a.size > 0 and all(
            not (isinstance(d, int) and d > 0) or a.shape[i] == d for i, d in enumerate(v.shape) if i > 0
        )
        if not ok:
            raise InputError(f"--calib {src.name}: input {v.name!r} expects {expected} {want_dtype}, found {found}")
    if len(set(sizes.values())) > 1:
        raise InputError(f"--calib {src.name}: inputs hold different sample counts {sizes}")
    check_shared_batch_axis(inputs, src)


def _load_images(files: list[Path], inputs: list[ir.Value], spec: ImageSpec) -> dict[str, np.ndarray]:
    if len(inputs) != 1:
        raise InputError(f"--calib: a folder of images feeds one input, but the model has {len(inputs)}")
    try:
        from PIL import Image
    except ImportError:
        raise InputError("--calib with images needs Pillow: pip install 'onnxcompress[images]'") from None
    v = inputs[0]
    shape = list(v.shape) if v.shape is not None else []
    size = spec.size
    if size is None and len(shape) == 4:
        hw = shape[2:4] if spec.layout == "NCHW" else shape[1:3]
        if all(isinstance(d, int) and d > 0 for d in hw):
            size = (int(hw[0]), int(hw[1]))
    if size is None:
        raise InputError(f"--calib: input {v.name!r} has no fixed height and width; give --calib-image size=HxW")
    mode = "L" if spec.channels == "L" else "RGB"
    out = []
    for f in files:
        try:
            img = Image.open(f).convert(mode).resize((size[1], size[0]), Image.BILINEAR)
        except OSError as exc:
            raise InputError(f"--calib: cannot read image {f}: {exc}") from exc
        a = np.asarray(img, dtype=np.float32)
        a = a[..., None] if a.ndim == 2 else a
        if spec.channels == "BGR":
            a = a[..., ::-1]
        a = (a * spec.scale - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
        out.append(a.transpose(2, 0, 1) if spec.layout == "NCHW" else a)
    return {v.name: np.stack(out).astype(np_dtype(v.dtype))}
