"""Input and output paths: inputs must be regular files; outputs are checked up front and written atomically.

Every command checks every file it will write (the model, its external data, reports)
before any work starts, so a bad path costs nothing and a failed command leaves no
output. An output may never be, or share files with, an input: the model, its external
data, or any other file the command reads. Files are written under temporary names
beside their destinations (``Staging``) and renamed into place together, so a symlink
at a destination is replaced, never followed, and an interrupted command leaves no
temporaries. New files get the permissions the umask allows, like any other tool's.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

from onnxcompress.errors import InputError

PathLike = str | os.PathLike

#: File names that mean "standard output", not a file.
STDOUT = "-"


class OutputError(InputError):
    """An output path is unusable: it is an input, not a regular file, or cannot be written."""


def kind(mode: int) -> str:
    """What a file is, in words, from its ``st_mode``."""
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symlink"),
    ):
        if test(mode):
            return name
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def require_regular_file(path: PathLike, what: str = "input") -> Path:
    """``path`` as a ``Path`` when it is a regular file (symlinks followed); InputError otherwise.

    Only ``stat`` is called: a FIFO would block an ``open`` and a device would be read forever.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise InputError(f"no such file: {p}") from None
    except OSError as exc:
        raise InputError(f"cannot read {what} {p}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"expected a file, got a directory: {p}")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{what} {p} is {kind(st.st_mode)}, not a regular file")
    return p


def _tensors(graph) -> Iterable:
    """Every TensorProto of an ONNX graph, subgraphs and Constant attributes included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for g in attr.graphs:
                yield from _tensors(g)


def external_data_files(model_path: PathLike) -> list[Path]:
    """The external data files an ONNX file refers to (none when it cannot be parsed)."""
    import mmap

    import onnx

    p = Path(model_path)
    try:
        if not stat.S_ISREG(os.stat(p).st_mode):  # a FIFO would block the open below
            return []
    except (OSError, ValueError):
        return []
    try:
        # Parsing a big model costs a fair share of its load time; a file that never says
        # "location" (the key every external tensor carries) has no external data.
        with open(p, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            if m.find(b"\x0a\x08location") < 0:  # key = "location", as protobuf encodes it
                return []
        proto = onnx.load(p, load_external_data=False)
    except Exception:  # noqa: BLE001 - not a model: loading it reports the problem properly
        return []
    found: dict[str, None] = {}
    for t in _tensors(proto.graph):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            for kv in t.external_data:
                # a location that is not text, or holds a NUL, names no file we could write over
                if kv.key == "location" and isinstance(kv.value, str) and kv.value and "\x00" not in kv.value:
                    found[kv.value] = None
    return [p.parent / loc for loc in found]


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _entry(path: Path) -> Path:
    """The directory entry a write replaces: the parent resolved, the name kept (a symlink is the entry)."""
    return Path(os.path.realpath(path.parent)) / path.name


class _Inputs:
    """What a command reads: files (by inode, so links and ``..`` cannot hide them) and folders."""

    def __init__(self, inputs: Iterable[PathLike | None], models: Iterable[PathLike | None] = ()):
        self.files: dict[tuple[int, int], str] = {}
        self.dirs: list[tuple[Path, str]] = []
        models = {str(m) for m in models if m is not None}
        for item in [*inputs, *models]:
            if item is None or str(item) == STDOUT:
                continue
            p = Path(item)
            if p.is_dir():
                self.dirs.append((Path(os.path.realpath(p)), f"the input folder {p}"))
                continue
            self._add(p, f"the input {p}")
            if (str(item) in models or p.suffix.lower() == ".onnx") and p.is_file():
                for data in external_data_files(p):
                    self._add(data, f"the external data of {p}")

    def _add(self, p: Path, desc: str) -> None:
        ident = _identity(p)
        if ident is not None:
            self.files.setdefault(ident, desc)

    def owner(self, out: Path) -> str | None:
        """Which input ``out`` would overwrite, or None."""
        ident = _identity(out)
        if ident is not None and ident in self.files:
            return self.files[ident]
        if os.path.lexists(out):
            real = Path(os.path.realpath(out))
            for d, desc in self.dirs:
                if real == d or d in real.parents:
                    return f"a file in {desc}"
        return None


def _nearest_existing(d: Path) -> Path:
    d = Path(os.path.abspath(d))
    while not os.path.lexists(d) and d != d.parent:
        d = d.parent
    return d


def _check_one(label: str, out: Path, inputs: _Inputs) -> None:
    owner = inputs.owner(out)
    if owner is not None:
        raise OutputError(f"refusing to overwrite the input: {label} {out} is {owner}")
    try:
        st = os.lstat(out)
    except FileNotFoundError:
        st = None
    except (OSError, ValueError) as exc:
        raise OutputError(f"cannot write {label} {out}: {getattr(exc, 'strerror', None) or exc}") from None
    if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        # A symlink is replaced, not followed; anything else but a regular file is refused.
        raise OutputError(f"cannot write {label} {out}: it is {kind(st.st_mode)}, not a regular file")
    parent = _nearest_existing(out.parent)
    if not parent.is_dir():
        raise OutputError(f"cannot write {label} {out}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
        raise OutputError(f"cannot write {label} {out}: {parent} is not writable")


def validate_outputs(
    inputs: Iterable[PathLike | None],
    outputs: Mapping[str, PathLike | None],
    *,
    models: Iterable[PathLike | None] = (),
) -> dict[str, Path]:
    """Check every output path before anything is written; return them as ``Path``s by label.

    ``inputs`` are the files and folders the command reads (None is skipped); an ``.onnx``
    input, and every one of ``models`` whatever its name, brings its external data files. ``outputs`` maps a label for messages (``--report``) to a path;
    None and ``-`` (standard output) are skipped. Refused, with an ``OutputError`` (exit 2):
    a path that is, or links to, an input; an existing directory, FIFO, device or socket;
    a folder that cannot be written; two outputs naming the same file.
    """
    ins = _Inputs(inputs, models)
    checked: dict[str, Path] = {}
    seen: dict[Path, str] = {}
    for label, value in outputs.items():
        if value is None or str(value) == STDOUT:
            continue
        out = Path(value)
        if str(value) == "" or out.name in ("", ".", ".."):
            raise OutputError(f"cannot write {label} {str(value)!r}: not a file name")
        _check_one(label, out, ins)
        entry = _entry(out)
        if entry in seen:
            raise OutputError(f"{label} and {seen[entry]} name the same file: {out}")
        seen[entry] = label
        checked[label] = out
    return checked


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _describe_os_error(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if exc.errno == errno.EDQUOT:
        return "disk quota exceeded"
    return exc.strerror or str(exc)


def write_error(dest: PathLike, exc: OSError) -> OutputError:
    """An ``OutputError`` naming ``dest`` for an ``OSError`` raised while writing it."""
    return OutputError(f"cannot write {dest}: {_describe_os_error(exc)}")


class Staging:
    """Files written under temporary names beside their destinations, renamed into place by ``commit``.

    Nothing reaches a destination before ``commit``. Leaving the ``with`` block removes
    every temporary, whatever the exit (an error, Ctrl-C, SIGTERM turned into an
    exception), and any folder this staging created for them.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []
        self._temps: list[Path] = []
        self._made_dirs: list[Path] = []

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.discard(keep_dirs=exc_type is None and not self._pending)

    def _parent(self, dest: Path) -> Path:
        missing = []
        d = dest.parent
        while not os.path.lexists(d) and d != d.parent:
            missing.append(d)
            d = d.parent
        try:
            for m in reversed(missing):
                m.mkdir()
                self._made_dirs.append(m)
        except OSError as exc:
            raise write_error(dest, exc) from None
        return dest.parent

    def temp_dir(self, dest: PathLike) -> Path:
        """A fresh folder beside ``dest`` for files that go there (removed after commit or discard)."""
        dest = Path(dest)
        try:
            d = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=self._parent(dest)))
        except OSError as exc:
            raise write_error(dest, exc) from None
        self._temps.append(d)
        return d

    def add(self, tmp: PathLike, dest: PathLike) -> None:
        """Rename ``tmp`` to ``dest`` on commit (in the order added)."""
        self._pending.append((Path(tmp), Path(dest)))

    def text(self, dest: PathLike, text: str) -> Path:
        """Stage ``text`` for ``dest``; returns the temporary file."""
        dest = Path(dest)
        try:
            fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=self._parent(dest))
        except OSError as exc:
            raise write_error(dest, exc) from None
        tmp = Path(name)
        self._temps.append(tmp)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:
            raise write_error(dest, exc) from None
        self.add(tmp, dest)
        return tmp

    def commit(self) -> list[Path]:
        """Give every staged file the umask's permissions and rename it into place."""
        mode = 0o666 & ~current_umask()
        done = []
        for tmp, dest in self._pending:
            try:
                os.chmod(tmp, mode)
                os.replace(tmp, dest)
            except OSError as exc:
                raise write_error(dest, exc) from None
            done.append(dest)
        self._pending.clear()
        self.discard(keep_dirs=True)
        return done

    def discard(self, keep_dirs: bool = False) -> None:
        """Remove every temporary (and, unless ``keep_dirs``, the folders made for them)."""
        self._pending.clear()
        for t in reversed(self._temps):
            try:
                if t.is_dir() and not t.is_symlink():
                    shutil.rmtree(t, ignore_errors=True)
                else:
                    t.unlink(missing_ok=True)
            except OSError:
                pass
        self._temps.clear()
        if not keep_dirs:
            for d in reversed(self._made_dirs):
                try:
                    d.rmdir()
                except OSError:
                    pass
        self._made_dirs.clear()


def write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (a symlink there is replaced), with the umask's permissions."""
    with Staging() as st:
        st.text(path, text)
        st.commit()
    return Path(path)
