"""User tags as auxiliary semantics: a tag CSV matched to a folder's images, tag cells split
into terms, and the multi-hot of the terms over a vocabulary of those used often enough.

The CSV has a header and one row per image:

- ``path`` (or ``file``, ``file_name``, ``filename``, ``image``): the image, relative to the
  folder, or its bare file name when that is unique;
- ``tags``: user tags separated by ``;`` or ``|`` — the auxiliary semantics, a multi-hot over
  the tags used by at least ``min_tag_count`` images (stored sparse for large vocabularies);
- ``labels`` (optional): ground-truth classes, same separators — used only for evaluation.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..errors import InputError
from ..files import read_text
from ..text import bad_char, describe_char, escape_text

PATH_COLUMNS = ("path", "file", "file_name", "filename", "image")


_SEP = re.compile(r"[;|]")


def split_terms(cell: str | None) -> list[str]:
    """``"dog; beach|Sky "`` -> ``["dog", "beach", "sky"]`` (lower-cased, de-duplicated, ordered)."""
    if not cell:
        return []
    out: list[str] = []
    for t in _SEP.split(cell):
        t = t.strip().lower()
        if t and t not in out:
            out.append(t)
    return out


@dataclass
class TagTable:
    """The CSV's rows matched to images: tags and labels per image (empty lists where absent)."""

    tags: list[list[str]]
    labels: list[list[str]] | None  # None when the CSV has no labels column


def read_tag_csv(path: str | os.PathLike, images: Sequence[str]) -> TagTable:
    """Parse the tag CSV and match its rows to ``images`` (relative paths from :func:`list_images`)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"tag CSV {path} does not exist")
    by_path = {p: i for i, p in enumerate(images)}
    names: dict[str, int] = {}
    for i, p in enumerate(images):
        n = p.rsplit("/", 1)[-1]
        names[n] = -1 if n in names else i  # -1: ambiguous bare name
    tags: list[list[str]] = [[] for _ in images]
    labels: list[list[str]] = [[] for _ in images]
    seen = np.zeros(len(images), dtype=bool)
    unmatched = []
    with io.StringIO(read_text(path, "tag CSV"), newline="") as f:
        reader = csv.DictReader(f)
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        if not header:
            raise InputError(f"tag CSV {path} is empty; it needs a header row with a path column and tags")
        reader.fieldnames = header
        col = next((c for c in PATH_COLUMNS if c in header), None)
        if col is None:
            raise InputError(f"tag CSV {path} has no image column; name one of {', '.join(PATH_COLUMNS)} (found: {', '.join(header)})")
        if "tags" not in header and "labels" not in header:
            raise InputError(f"tag CSV {path} has neither a 'tags' nor a 'labels' column (found: {', '.join(header)})")
        for line, row in enumerate(reader, start=2):
            key = (row.get(col) or "").strip().replace("\\", "/")
            key = key.removeprefix("./")
            if not key:
                raise InputError(f"tag CSV {path}, line {line}: empty {col!r}")
            i = by_path.get(key)
            if i is None:
                i = names.get(key.rsplit("/", 1)[-1])
                if i == -1:
                    raise InputError(f"tag CSV {path}, line {line}: file name {key!r} matches several images; give the relative path")
            if i is None:
                unmatched.append(key)
                continue
            if seen[i]:
                raise InputError(f"tag CSV {path}, line {line}: image {images[i]!r} appears twice")
            seen[i] = True
            tags[i] = split_terms(row.get("tags"))
            labels[i] = split_terms(row.get("labels"))
            for term in tags[i] + labels[i]:
                if bad_char(term) is not None:
                    raise InputError(f"tag CSV {path}, line {line}: the term {escape_text(term)[:60]!r} holds "
                                     f"{describe_char(bad_char(term))}; tags and labels must be text without "
                                     "control characters")
    if unmatched:
        raise InputError(
            f"tag CSV {path} names {len(unmatched)} image(s) not in the folder (first: {', '.join(unmatched[:3])})"
        )
    return TagTable(tags=tags, labels=labels if "labels" in header else None)


def multi_hot(terms: Sequence[Sequence[str]], min_count: int = 1) -> tuple[sp.csr_matrix, list[str]]:
    """Rows of terms -> a CSR multi-hot over the terms used by at least ``min_count`` rows (sorted)."""
    vocab = sorted({t for ts in terms for t in ts})
    if not vocab:
        raise InputError("no tags or labels found in the CSV")
    col = {t: j for j, t in enumerate(vocab)}
    indptr = np.zeros(len(terms) + 1, dtype=np.int64)
    indices = []
    for i, ts in enumerate(terms):
        indices.extend(col[t] for t in ts)
        indptr[i + 1] = len(indices)
    m = sp.csr_matrix(
        (np.ones(len(indices), dtype=np.float32), np.asarray(indices, dtype=np.int64), indptr),
        shape=(len(terms), len(vocab)),
    )
    keep, names = vocabulary(np.asarray(m.sum(0)).ravel(), vocab, min_count)
    return m[:, keep].tocsr(), names


def vocabulary(counts: np.ndarray, names: Sequence[str] | None, min_count: int) -> tuple[np.ndarray, list[str] | None]:
    """Columns used by at least ``min_count`` items, and their names."""
    if min_count < 1:
        raise InputError(f"--min-tag-count must be at least 1, got {min_count}")
    keep = np.flatnonzero(np.asarray(counts).ravel() >= min_count)
    if keep.size == 0:
        raise InputError(f"no tag is used by {min_count} or more items; lower --min-tag-count")
    return keep, None if names is None else [names[i] for i in keep]
