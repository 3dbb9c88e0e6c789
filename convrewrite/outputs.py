"""Where we write: every output path checked before anything is written, never onto a file we
read, and each file (or model + external-data pair) switched in atomically.

Why one module: the promises "the input is never written over" and "a bad output path means
nothing is written" only hold if every writer (model, copy, report) goes through the same checks
and the same staging. A path "is" a file we read when it is the same name, the same name spelled
differently (``./``, ``..``, absolute, a symlink: compared by realpath), or another name of the same
inode (a hard link: compared by ``st_dev``/``st_ino``).

A model with external data is replaced as one unit: the new data file gets a fresh name derived
from its content (so the output stays byte-deterministic), is renamed into place first, the model
that references it last; only then is the old model's data file removed. A crash at any point
leaves the old pair or the new pair (plus, at worst, an unreferenced new data file).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import onnx

from .errors import BadInputError

STAGING_PREFIX = "."        # staging files are hidden names in the destination folder


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def ordinary_mode() -> int:
    """What ``open(path, "w")`` would give a new file: 0o666 less the umask (not mkstemp's 0o600)."""
    return 0o666 & ~_umask()


def same_file(a: "str | os.PathLike", b: "str | os.PathLike") -> bool:
    """Whether two spellings name one file: the same realpath, or the same inode (hard link)."""
    if os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b)):
        return True
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _folder(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def check_writable(flag: str, path: Path) -> None:
    """``path`` can be created or replaced: not a directory, its folder exists, is a folder (not a
    regular file) and is writable."""
    if path.is_dir():
        raise BadInputError(f"{flag} {path} is a directory; give a file name")
    folder = _folder(path)
    probe = folder
    while not probe.exists() and probe != probe.parent and str(probe) not in ("", "."):
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise BadInputError(f"{flag} {path}: {probe} is not a folder")
    if not folder.exists():
        raise BadInputError(f"{flag} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BadInputError(f"{flag} {path}: folder {folder} is not writable")


def check_outputs(outputs: Iterable[tuple[str, Path]],
                  reads: Iterable[tuple[str, Path]]) -> None:
    """Fail (exit 2, one line) before anything is written if any output path cannot be written,
    is (or aliases) a file we read, or is the same file as another output."""
    outputs = [(flag, Path(p)) for flag, p in outputs]
    reads = [(what, Path(p)) for what, p in reads]
    for flag, path in outputs:
        for what, read in reads:
            if same_file(path, read):
                raise BadInputError(f"{flag} {path} is {what}; refusing to overwrite it")
        check_writable(flag, path)
    for i, (flag, path) in enumerate(outputs):
        for other_flag, other in outputs[:i]:
            if same_file(path, other):
                raise BadInputError(f"{flag} {path} is the same file as {other_flag} {other}; "
                                    "refusing to overwrite it")


# ---------------------------------------------------------------- atomic writes

def _cannot_write(path: Path, exc: OSError) -> BadInputError:
    return BadInputError(f"cannot write {path}: {exc.strerror or exc}")


def write_atomic(path: "str | os.PathLike", write: Callable[[object], None]) -> None:
    """Stage ``write(file)`` in a hidden file beside ``path``, then rename it over ``path``.

    The staged file gets ordinary permissions (umask-respecting) and is removed on any failure.
    """
    path = Path(path)
    staged = None
    try:
        fd, staged = tempfile.mkstemp(dir=_folder(path), prefix=f"{STAGING_PREFIX}{path.name}.",
                                      suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(staged, ordinary_mode())
        os.replace(staged, path)
        staged = None
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    finally:
        if staged is not None:
            _remove(Path(staged))


def write_text(path: "str | os.PathLike", text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


class Reservation:
    """A staging file made now for a text written later (the report, whose content is known only
    after the model is written): if the folder refuses files, that shows before the model is
    written, so a failing --report leaves nothing behind. ``commit`` writes and renames;
    ``discard`` (always safe to call) removes the staging file if it was not committed."""

    def __init__(self, path: "str | os.PathLike"):
        self.path = Path(path)
        try:
            fd, name = tempfile.mkstemp(dir=_folder(self.path),
                                        prefix=f"{STAGING_PREFIX}{self.path.name}.", suffix=".tmp")
        except OSError as exc:
            raise _cannot_write(self.path, exc) from None
        os.close(fd)
        self.staged: Path | None = Path(name)

    def commit(self, text: str) -> None:
        try:
            with open(self.staged, "wb") as f:
                f.write(text.encode("utf-8"))
            os.chmod(self.staged, ordinary_mode())
            os.replace(self.staged, self.path)
            self.staged = None
        except OSError as exc:
            raise _cannot_write(self.path, exc) from None
        finally:
            self.discard()

    def discard(self) -> None:
        if self.staged is not None:
            _remove(self.staged)
            self.staged = None


def copy_file(src: "str | os.PathLike", dst: "str | os.PathLike") -> None:
    """Byte-for-byte copy, atomic like every other write."""
    def write(f):
        with open(src, "rb") as source:
            shutil.copyfileobj(source, f)
    write_atomic(dst, write)


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()
    except OSError:
        pass


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_file_name(model_name: str, digest: str) -> str:
    """``out.onnx`` + content digest → ``out.onnx.<16 hex>.data``: fresh whenever the data changes,
    the same for the same data (deterministic output)."""
    return f"{model_name}.{digest[:16]}.data"


def _our_data_name(model_name: str, name: str) -> bool:
    """Data names this module gives (or gave, before content digests) to ``model_name``'s data."""
    if name == f"{model_name}.data":
        return True
    prefix, suffix = f"{model_name}.", ".data"
    middle = name[len(prefix):-len(suffix)] if name.startswith(prefix) and \
        name.endswith(suffix) else ""
    return len(middle) == 16 and all(c in "0123456789abcdef" for c in middle)


def external_locations(path: Path, limit: int = 64 << 20) -> list[str]:
    """External-data locations a model file on disk references ([] if it is not a readable ONNX
    file, or too big to be one that keeps its tensors outside)."""
    try:
        if not path.is_file() or path.stat().st_size > limit:
            return []
        model = onnx.load(str(path), load_external_data=False)
    except Exception:       # noqa: BLE001 - whatever was there is replaced anyway
        return []
    return sorted({e.value for t in tensors_of(model) if t.data_location == onnx.TensorProto.EXTERNAL
                   for e in t.external_data if e.key == "location"})


def tensors_of(model: onnx.ModelProto):
    """Every TensorProto a model holds: initializers and attribute tensors, subgraphs and
    functions included (where external data can hide)."""
    def of_graph(g: onnx.GraphProto):
        yield from g.initializer
        for s in g.sparse_initializer:
            yield s.values
            yield s.indices
        for node in g.node:
            yield from of_nodes([node])

    def of_nodes(nodes):
        for node in nodes:
            for a in node.attribute:
                if a.HasField("t"):
                    yield a.t
                yield from a.tensors
                if a.HasField("g"):
                    yield from of_graph(a.g)
                for sub in a.graphs:
                    yield from of_graph(sub)
    yield from of_graph(model.graph)
    for fn in model.functions:
        yield from of_nodes(fn.node)


def save_model_files(model: onnx.ModelProto, path: "str | os.PathLike", *, external_data: bool,
                     protected: Iterable["str | os.PathLike"] = ()) -> list[Path]:
    """Write ``model`` to ``path`` (with its tensors in one fresh external-data file beside it when
    ``external_data``), as one unit; never onto a ``protected`` file. Returns the files written.

    With ``external_data`` the model given is spent: onnx's external-data save clears its tensors'
    raw_data (``graph.save_model`` hands over a copy, so its caller's model is not modified).
    """
    path = Path(path)
    folder = _folder(path)
    protected = [Path(p) for p in protected]
    old_locations = external_locations(path)
    try:
        tmp = tempfile.mkdtemp(dir=folder, prefix=f"{STAGING_PREFIX}{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    staged = Path(tmp) / path.name
    new_data: Path | None = None
    placed_data = False
    try:
        if external_data:
            staging_name = "staged.data"
            onnx.save_model(model, str(staged), save_as_external_data=True,
                            all_tensors_to_one_file=True, location=staging_name,
                            size_threshold=1024)
            staged_data = Path(tmp) / staging_name
            if staged_data.exists():
                name = data_file_name(path.name, _sha256(staged_data))
                new_data = folder / name
                for p in protected:
                    if same_file(new_data, p):
                        raise BadInputError(f"the external data {new_data} of -o {path} would be "
                                            f"{p}, a file read; refusing to overwrite it")
                _relocate(staged, staging_name, name)
                os.chmod(staged_data, ordinary_mode())
                existed = new_data.exists()
                os.replace(staged_data, new_data)           # 1. the new data, under a fresh name
                placed_data = not existed
        else:
            onnx.save_model(model, str(staged))
        os.chmod(staged, ordinary_mode())
        os.replace(staged, path)                            # 2. the switch
        placed_data = False
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    finally:
        if placed_data and new_data is not None:            # the switch failed: old pair stays
            _remove(new_data)
        _remove(Path(tmp))
    for location in old_locations:                          # 3. the old pair's data, last
        old = folder / location
        if (new_data is None or location != new_data.name) and _our_data_name(path.name, location) \
                and not any(same_file(old, p) for p in protected):
            _remove(old)
    return [path] + ([new_data] if new_data is not None else [])


def _relocate(model_file: Path, old: str, new: str) -> None:
    """Point every external tensor of a staged model file at ``new`` instead of ``old``."""
    staged = onnx.load(str(model_file), load_external_data=False)
    for t in tensors_of(staged):
        for e in t.external_data:
            if e.key == "location" and e.value == old:
                e.value = new
    with open(model_file, "wb") as f:
        f.write(staged.SerializeToString())
