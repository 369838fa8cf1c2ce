"""Small helpers shared by every stage: atomic writes, hashing, threads, JSON."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from .errors import InputError, LagnhError


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 24) -> str:
    """SHA-256 hex digest of a file, read in chunks (bounded memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


# Files whose JSON "format" field marks a directory as written by this project.
MARKER_FILES = ("manifest.json", "meta.json", "run.json")
# errno values that mean "this target cannot be written" (bad --out), not a failure while running
_BAD_TARGET = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
               errno.ENAMETOOLONG, errno.ENOENT}


def os_error(e: OSError, path: str | os.PathLike, doing: str = "write") -> LagnhError:
    """The contract's error for an OSError on ``path``: a target that cannot be written
    (read-only, under a file, a directory) is bad input (exit 2); anything else, such as a
    full disk, is a failure while running (exit 1)."""
    why = e.strerror or type(e).__name__
    cls = InputError if e.errno in _BAD_TARGET else LagnhError
    return cls(f"cannot {doing} {path}: {why}")


def check_writable_target(path: str | os.PathLike, what: str = "output", directory: bool = False) -> Path:
    """Refuse, before any work, an output ``path`` that cannot be written: a directory where
    a file is wanted (or the reverse), a path under a regular file, or a read-only (or
    immutable) directory. Creates nothing."""
    path = Path(path)
    if path.exists():
        if path.is_dir() != directory:
            kind = "a directory" if path.is_dir() else "a file"
            raise InputError(f"{what} {path} is {kind}; give a {'directory' if directory else 'file'} path")
        owner = project_format(path.parent) if not directory else None
        if owner is not None:  # e.g. --json RUN/run.json: never overwrite a file of a lagnh directory
            raise InputError(f"refusing to overwrite {path}: it is part of a {owner} directory; choose another {what}")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"cannot write {what} {path}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {what} {path}: {parent} is read-only")
    return path


def project_format(path: str | os.PathLike) -> str | None:
    """The ``format`` this project wrote into directory ``path`` (its manifest.json,
    meta.json or run.json), or ``None`` when ``path`` is not such a directory."""
    path = Path(path)
    for name in MARKER_FILES:
        f = path / name
        if f.is_file():
            try:
                fmt = json.loads(f.read_text(encoding="utf-8")).get("format")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(fmt, str) and fmt.startswith("lagnh-"):
                return fmt
    return None


def _under(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def check_replaceable(
    out: str | os.PathLike,
    formats: Iterable[str],
    inputs: Iterable[str | os.PathLike] | Callable[[], Iterable[str | os.PathLike]] = (),
    markers: Iterable[str] = (),
) -> None:
    """Refuse (InputError) to replace or delete ``out`` unless this project wrote it.

    ``out`` must be a directory whose marker file names one of ``formats`` (or that holds
    one of the file names ``markers``), and must neither equal nor contain any of ``inputs``
    (paths, or a callable returning them: evaluated only here). Nothing else is ever removed:
    a user's folder passed as ``--out ... --overwrite`` stays untouched.
    """
    out = Path(out)
    formats = tuple(formats)
    if not out.is_dir() or out.is_symlink():
        raise InputError(f"refusing to replace {out}: it is not a directory written by lagnh; choose another --out")
    fmt = project_format(out)
    empty = not any(out.iterdir())  # nothing in it to lose
    if not empty and fmt not in formats and not any((out / m).exists() for m in markers):
        raise InputError(
            f"refusing to replace {out}: it is not a {' or '.join(formats)} directory written by lagnh "
            f"(found {'format ' + repr(fmt) if fmt else 'no lagnh manifest'}); choose another --out"
        )
    root = os.path.realpath(out)
    for p in inputs() if callable(inputs) else inputs:
        if _under(os.path.realpath(p), root):
            raise InputError(f"refusing to replace {out}: it holds the input {p}; choose another --out")


def remove_owned(path: str | os.PathLike, formats: Iterable[str], markers: Iterable[str] = ()) -> None:
    """``shutil.rmtree(path)`` only when this project wrote it (see :func:`check_replaceable`)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    check_replaceable(path, formats, markers=markers)
    shutil.rmtree(path)


@contextlib.contextmanager
def atomic_dir(
    out: str | os.PathLike,
    overwrite: bool = False,
    *,
    formats: Iterable[str] = (),
    inputs: Iterable[str | os.PathLike] | Callable[[], Iterable[str | os.PathLike]] = (),
) -> Iterator[Path]:
    """Build a directory in a temporary sibling and rename it to ``out`` on success.

    On any exception the temporary directory is removed and ``out`` is left untouched, so a
    half-written output never looks complete. With ``overwrite`` an existing ``out`` is
    replaced only if :func:`check_replaceable` accepts it (written by this project in one of
    ``formats``, holding none of ``inputs``); it is checked before any work starts.
    """
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise InputError(f"output directory {out} already exists; choose another --out or remove it")
        check_replaceable(out, formats, inputs)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as e:
        raise os_error(e, out, "create") from None
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise os_error(e, out, "create") from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path next to ``path``; rename it onto ``path`` on success.

    The temporary file is removed on every failure path (the caller's, or the rename's); a
    ``path`` that is a directory or cannot be written is bad input (InputError).
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a directory; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    except OSError as e:
        raise os_error(e, path) from None
    os.close(fd)
    tmp = Path(tmp)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make results private to their writer
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise os_error(e, path) from None


def read_text(path: str | os.PathLike, what: str) -> str:
    """A UTF-8 text file (a leading BOM is dropped); other encodings are bad input."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise os_error(e, path, f"read {what} file") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        hint = " (it looks like UTF-16)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise InputError(
            f"{what} file {path} is not UTF-8 text{hint}: undecodable byte at offset {e.start}; save it as UTF-8"
        ) from None


def read_json(path: str | os.PathLike, what: str = "JSON") -> dict:
    """A JSON object from a UTF-8 file; undecodable, invalid or non-object content is bad input."""
    text = read_text(path, what)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path} does not hold a JSON object")
    return obj


def npy_header(path: str | os.PathLike, what: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a ``.npy`` file from its header, checked against the file's size
    (a truncated or non-.npy file is bad input, found without reading the data)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            major, _minor = np.lib.format.read_magic(f)
            if major == 1:
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            offset = f.tell()
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputError(f"{what} file {path} does not exist") from None
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"{what} file {path} is not a valid .npy file ({str(e).splitlines()[0][:120]})") from None
    want = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if dtype.hasobject:
        raise InputError(f"{what} file {path} holds Python objects; save a numeric array")
    if size < want:
        raise InputError(f"{what} file {path} is truncated ({size} of {want} bytes for shape {shape})")
    return tuple(int(d) for d in shape), dtype


def load_npy(path: str | os.PathLike, what: str, mmap_mode: str | None = None) -> np.ndarray:
    """``np.load`` of a checked ``.npy`` file (see :func:`npy_header`); never unpickles."""
    npy_header(path, what)
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"cannot read {what} file {path}: {str(e).splitlines()[0][:120]}") from None


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    """``np.save`` through a temporary file (never a half-written .npy)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def set_threads(n: int | None) -> None:
    """Set torch's intra-op threads (small graph ops suffer badly from oversubscription)."""
    if n is None or n <= 0:
        return
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:  # pragma: no cover
        pass


@contextlib.contextmanager
def threads_set(n: int | None) -> Iterator[None]:
    """:func:`set_threads` for the duration of a block; torch's and FAISS's thread counts are
    restored afterwards (a library call must not leave them changed)."""
    if n is None or n <= 0:
        yield
        return
    import torch

    old_torch = torch.get_num_threads()
    try:
        import faiss

        old_faiss = faiss.omp_get_max_threads()
    except ImportError:  # pragma: no cover - faiss is a dependency
        old_faiss = None
    set_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old_torch)
        if old_faiss is not None:
            faiss.omp_set_num_threads(old_faiss)


def software_versions() -> dict[str, str]:
    """Versions of the packages that decide results, for reports and manifests."""
    import platform
    import sys
    from importlib import metadata

    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    # distribution metadata, so that recording versions never imports torch or faiss
    for dist in ("numpy", "torch", "torch-geometric", "faiss-cpu", "faiss-gpu", "scipy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    from . import __version__

    versions["lagnh_pyg"] = __version__
    return versions


def drop_mapped_pages(arr) -> None:
    """Take the resident pages of a memory-mapped array (``np.memmap``, e.g. a dataset's
    features) out of this process's memory after a pass over it: ``madvise(MADV_DONTNEED)``.
    They stay in the page cache, so a later read costs no disk I/O; but mapped pages count in
    the process's RSS, and a pass over a million 512-d rows would otherwise leave 2 GiB there.
    Anything that is not a memory map (or a platform without madvise) is left as it is."""
    import mmap

    while arr is not None and not isinstance(getattr(arr, "_mmap", None), mmap.mmap):
        arr = getattr(arr, "base", None)
    if arr is None or not hasattr(mmap, "MADV_DONTNEED"):
        return
    try:
        arr._mmap.madvise(mmap.MADV_DONTNEED)
    except (OSError, ValueError):  # a closed map
        pass
