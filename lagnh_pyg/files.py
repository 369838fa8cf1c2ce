"""Files written and read safely: atomic writes (a file or a directory built in a temporary
sibling and renamed into place), strict UTF-8 / JSON / ``.npy`` reading, SHA-256 hashing, and
the contract's error for an ``OSError`` (a target that cannot be written is bad input).
"""

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
from .ownership import check_replaceable


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


def text_lines(text: str) -> list[str]:
    """The lines of a one-item-a-line text: split at ``\n`` only (``str.splitlines`` also
    splits at U+0085, U+2028 and other separators an id may not hold, and would shift every
    later line); a ``\r`` before it is dropped; no empty last line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def write_lines(path: str | os.PathLike, lines: Iterable[str]) -> None:
    """File paths one a line, as the OS gives them: UTF-8, where a name that is not UTF-8
    keeps its own bytes (``surrogateescape``). No path may hold a line break (the folder
    listing skips such names)."""
    with open(path, "w", encoding="utf-8", errors="surrogateescape", newline="\n") as f:
        for line in lines:
            f.write(f"{line}\n")


def read_lines(path: str | os.PathLike) -> list[str]:
    """The lines of a :func:`write_lines` file (paths that are not UTF-8 come back as they were)."""
    with open(path, encoding="utf-8", errors="surrogateescape", newline="\n") as f:
        text = f.read().removeprefix("\ufeff")
    return text.removesuffix("\n").split("\n") if text else []


def read_json(path: str | os.PathLike, what: str = "JSON") -> dict:
    """A JSON object from a UTF-8 file; undecodable, invalid or non-object content is bad input."""
    text = read_text(path, what)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    except RecursionError:
        raise InputError(f"{path} is not valid JSON (nested too deeply)") from None
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


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file (never a half-written file)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


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
