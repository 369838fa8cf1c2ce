"""What this project may replace or delete: a directory is ours when its marker file
(``manifest.json``, ``meta.json`` or ``run.json``) names a ``lagnh-*`` format; nothing else
is ever removed, and an output path that cannot be written is refused before any work.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable, Iterable

from .errors import InputError

# Files whose JSON "format" field marks a directory as written by this project: the dataset
# directory's and an extraction's (manifest.json), a codes or index directory's (meta.json), the
# run directory's (run.json, lagnh_pyg.rundir.RUN_FILE; a test checks they agree: this bottom
# layer cannot import the run directory's module)
MARKER_FILES = ("manifest.json", "meta.json", "run.json")


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
            except (OSError, ValueError, AttributeError, RecursionError):  # not a marker of ours
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


def lagnh_owner(path: str | os.PathLike) -> tuple[Path, str] | None:
    """The nearest directory holding ``path`` (its real location, any depth up) that this
    project wrote, and its format; ``None`` when no lagnh directory holds it."""
    p = Path(os.path.realpath(path)).parent
    while True:
        fmt = project_format(p)
        if fmt is not None:
            return p, fmt
        if p.parent == p:
            return None
        p = p.parent


def check_output_file(
    path: str | os.PathLike,
    what: str,
    inputs: Iterable[str | os.PathLike] | Callable[[], Iterable[str | os.PathLike]] = (),
) -> Path:
    """The one check of every output *file* a command writes (``--out``, ``--html``,
    ``--json``...), before any work: it must be writable (:func:`check_writable_target`), and
    it may replace neither a file inside a directory lagnh wrote (a run, a dataset, an
    extraction: at any depth) nor a file the command reads (``inputs``: files, or a callable
    returning them, evaluated only when ``path`` exists). A new file may be created anywhere
    writable."""
    path = check_writable_target(path, what)
    if not path.exists():
        return path
    owner = lagnh_owner(path)
    if owner is not None:
        raise InputError(f"refusing to overwrite {path}: it is part of the {owner[1]} directory {owner[0]}; "
                         f"choose another {what}")
    real = os.path.realpath(path)
    name = os.path.basename(real)
    for p in inputs() if callable(inputs) else inputs:
        p = os.fspath(p)
        # most inputs have another name: resolve only the few that could be this file
        if os.path.basename(p) in (name, os.path.basename(path)) and os.path.realpath(p) == real:
            raise InputError(f"refusing to overwrite {path}: this command reads it; choose another {what}")
    return path


def check_output_dir(
    path: str | os.PathLike,
    what: str,
    inputs: Iterable[str | os.PathLike] = (),
    formats: Iterable[str] = (),
    may_hold_inputs: bool = False,
) -> Path:
    """An output *directory* that lagnh fills with files of its own (a report, a run, a work
    directory), before any work: writable (:func:`check_writable_target`); not inside a lagnh
    directory (a run, a dataset: their files are never replaced), and, when it is one itself,
    of one of ``formats`` (what the command would continue or replace); neither equal to,
    inside, nor (unless ``may_hold_inputs``) holding one of the ``inputs`` (folders or files the
    command reads)."""
    path = check_writable_target(path, what, directory=True)
    owner = lagnh_owner(path / "x")  # the directory itself, or one above it
    if owner is not None:
        if os.path.realpath(owner[0]) != os.path.realpath(path):
            raise InputError(f"{what} {path} is inside the {owner[1]} directory {owner[0]}; choose a directory outside it")
        if owner[1] not in tuple(formats):
            raise InputError(f"{what} {path} is a {owner[1]} directory; choose another {what}")
    root = os.path.realpath(path)
    for p in inputs:
        q = os.path.realpath(p)
        if _under(root, q) or (_under(q, root) and not may_hold_inputs):
            raise InputError(f"{what} {path} {'is or lies inside' if _under(root, q) else 'holds'} the input {p}; "
                             "choose a directory apart from the inputs")
    return path
