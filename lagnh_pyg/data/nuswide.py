"""NUS-WIDE under the 21-most-frequent-concept protocol.

Reads the files of the official release (found under one root directory, at any depth up to
two, or named explicitly):

- ``Concepts81.txt``: the 81 concept names, one a line;
- ``Groundtruth/AllLabels/Labels_<concept>.txt``: one 0/1 a line per image (269,648 lines);
- ``AllTags1k.txt``: one line per image, 1,000 space-separated 0/1 tag indicators;
  ``TagList1k.txt``: the 1,000 tag names;
- ``ImageList/Imagelist.txt``: the image of each line (``C:\\ImageData\\Flickr\\actor\\0001_2124494179.jpg``).

Protocol (docs/method.md, "Data and protocol"): keep the images carrying at least one of the ``n_concepts`` (21) most
frequent concepts; labels are those concepts. Queries: ``per_concept`` (200) images sampled
per concept with ``seed``, the union of the samples (about 3,156 in the paper); train:
``n_train`` (5,000) images sampled from the rest; database: everything else. Tags become the
auxiliary semantics (stored sparse), restricted to tags used by ``min_tag_count`` kept images.
Item ids are ``<concept folder>/<file name>``; the Flickr photo id also names an item when
aligning given features.
"""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..errors import InputError
from ..extract.tags import vocabulary
from .sources import Catalog

logger = logging.getLogger(__name__)

FILES = {
    "concepts": ("Concepts81.txt",),
    "labels_dir": ("Groundtruth/AllLabels", "AllLabels"),
    "tags": ("AllTags1k.txt",),
    "tag_names": ("TagList1k.txt",),
    "image_list": ("ImageList/Imagelist.txt", "Imagelist.txt", "ImageList.txt"),
}


def find_file(root: Path, what: str, given: str | os.PathLike | None = None) -> Path | None:
    """The release file ``what`` (a key of ``FILES``): ``given``, else searched under ``root``."""
    if given is not None:
        p = Path(given)
        if not p.exists():
            raise InputError(f"NUS-WIDE {what.replace('_', ' ')} {p} does not exist")
        return p
    for name in FILES[what]:
        for pattern in (name, f"*/{name}", f"*/*/{name}"):
            hits = sorted(root.glob(pattern))
            if hits:
                return hits[0]
    return None


def _need(root: Path, what: str, given, option: str) -> Path:
    p = find_file(root, what, given)
    if p is None:
        raise InputError(f"cannot find NUS-WIDE {' or '.join(FILES[what])} under {root}; name it with {option}")
    return p


def _digits(tokens: list[bytes], where: str) -> np.ndarray:
    """Whitespace-split tokens that must be non-negative integers -> int array (fast path for 0/1)."""
    joined = b"".join(tokens)
    if len(joined) == len(tokens):
        arr = np.frombuffer(joined, dtype=np.uint8).astype(np.int16) - 48
        if arr.size and (arr.min() < 0 or arr.max() > 9):
            raise InputError(f"{where} holds a non-numeric value")
        return arr
    try:
        return np.array([int(t) for t in tokens], dtype=np.int64)
    except ValueError:
        raise InputError(f"{where} holds a non-numeric value") from None


def read_label_file(path: Path, n: int | None = None) -> np.ndarray:
    """One 0/1 a line -> uint8 vector (``n`` lines expected when given)."""
    tokens = path.read_bytes().split()
    if n is not None and len(tokens) != n:
        raise InputError(f"{path} has {len(tokens)} values, expected {n} (one per image of the image list)")
    vals = _digits(tokens, str(path))
    if vals.size and vals.max() > 1:
        raise InputError(f"{path} must hold 0/1 values, found {int(vals.max())}")
    return vals.astype(np.uint8)


def _single_digit_block(lines: list[bytes], width: int) -> np.ndarray | int | None:
    """Lines of single-digit values -> (lines x width) array, vectorised over the raw bytes.

    Returns the index of the first line without ``width`` values, ``-1`` for a byte that is
    neither a digit nor white space, or ``None`` when some value has several digits.
    """
    buf = np.frombuffer(b"".join(lines), dtype=np.uint8)
    digit = (buf >= 48) & (buf <= 57)
    if buf.size > 1 and (digit[:-1] & digit[1:]).any():
        return None
    if not (digit | (buf == 32) | (buf == 9) | (buf == 13) | (buf == 10)).all():
        return -1
    ends = np.cumsum([len(ln) for ln in lines]) - 1
    per_line = np.diff(np.concatenate([[0], np.cumsum(digit)[ends]]))
    wrong = np.flatnonzero(per_line != width)
    if wrong.size:
        return int(wrong[0])
    return (buf[digit] - 48).reshape(len(lines), width)


def read_tag_matrix(path: Path, n: int, keep: np.ndarray | None = None, chunk: int = 8192) -> sp.csr_matrix:
    """``AllTags1k.txt`` (one line per image, space-separated counts/indicators) -> binary CSR.

    Only rows with ``keep`` true are returned; the file is read ``chunk`` lines at a time.
    """
    blocks = []
    width = None
    row = 0
    with open(path, "rb") as f:
        while True:
            lines = list(itertools.islice(f, chunk))
            if not lines:
                break
            if row + len(lines) > n:  # only blank lines may follow the n-th
                if any(ln.strip() for ln in lines[max(0, n - row):]):
                    raise InputError(f"{path} has more than {n} lines (one per image of the image list expected)")
                lines = lines[: max(0, n - row)]
                if not lines:
                    break
            if width is None:
                width = len(lines[0].split())
                if width == 0:
                    raise InputError(f"{path}: line 1 is empty")
            vals = _single_digit_block(lines, width)
            if vals is None:  # multi-digit counts somewhere: the general (slower) path
                tokens = b" ".join(lines).split()
                if len(tokens) == len(lines) * width:
                    vals = _digits(tokens, str(path)).reshape(len(lines), width)
            if vals is None or isinstance(vals, int):
                bad = next(i for i, ln in enumerate(lines) if len(ln.split()) != width) if vals is None else vals
                if bad < 0:
                    raise InputError(f"{path} holds a non-numeric value near line {row + 1}")
                raise InputError(f"{path}: line {row + bad + 1} has {len(lines[bad].split())} values, expected {width}")
            sel = slice(None) if keep is None else keep[row : row + len(lines)]
            blocks.append(sp.csr_matrix((vals[sel] > 0).astype(np.float32)))
            row += len(lines)
    if row != n:
        raise InputError(f"{path} has {row} lines, expected {n} (one per image of the image list)")
    return sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, width or 0), dtype=np.float32)


def _lines(path: Path) -> list[str]:
    out = [s.strip() for s in path.read_text(errors="replace").splitlines()]
    while out and not out[-1]:
        out.pop()
    return out


def image_id(entry: str) -> str:
    """``C:\\ImageData\\Flickr\\actor\\0001_2124494179.jpg`` -> ``actor/0001_2124494179.jpg``."""
    parts = [p for p in entry.replace("\\", "/").split("/") if p]
    return "/".join(parts[-2:])


def sample_queries(labels: np.ndarray, per_concept: int, rng: np.random.Generator) -> np.ndarray:
    """``per_concept`` items drawn per label column (all of them when fewer), de-duplicated."""
    picked = []
    for c in range(labels.shape[1]):
        cand = np.flatnonzero(labels[:, c])
        picked.append(rng.choice(cand, size=min(per_concept, cand.size), replace=False))
    return np.unique(np.concatenate(picked))


def _top_concepts(concepts: list[str], c_path: Path, l_dir: Path, n: int, n_concepts: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``n_concepts`` most frequent concepts (columns in Concepts81 order), the labels of
    the images carrying one of them, and those images' rows in the image list."""
    all_labels = np.zeros((n, len(concepts)), dtype=np.uint8)
    for j, c in enumerate(concepts):
        f = l_dir / f"Labels_{c}.txt"
        if not f.is_file():
            raise InputError(f"label file {f} for concept {c!r} (from {c_path.name}) does not exist")
        all_labels[:, j] = read_label_file(f, n)
    counts = all_labels.sum(0, dtype=np.int64)
    top = np.sort(np.argsort(-counts, kind="stable")[:n_concepts])  # columns in Concepts81 order
    labels_full = all_labels[:, top]
    del all_labels
    source_rows = np.flatnonzero(labels_full.any(1))
    return top, np.ascontiguousarray(labels_full[source_rows]), source_rows


def _split(labels: np.ndarray, per_concept: int, n_train: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query, train, database) rows: ``per_concept`` queries a concept, de-duplicated, then
    ``n_train`` training images from the rest, the database the remainder."""
    rng = np.random.default_rng(seed)
    query = sample_queries(labels, per_concept, rng)
    rest = np.setdiff1d(np.arange(len(labels)), query)
    if not 1 <= n_train < rest.size:
        raise InputError(f"--n-train must be between 1 and {rest.size - 1} (kept images that are not queries), got {n_train}")
    train = np.sort(rng.choice(rest, size=n_train, replace=False))
    return query, train, np.setdiff1d(rest, train)


def _ids_and_paths(entries: list[str], source_rows: np.ndarray, i_path: Path, images: str | os.PathLike | None
                   ) -> tuple[list[str], dict[str, int], list[str] | None]:
    """The kept images' ids, the Flickr photo ids that also name them (when unique), and their
    paths under ``images``."""
    ids = [image_id(entries[r]) for r in source_rows]
    if len(set(ids)) != len(ids):
        raise InputError(f"{i_path} names some image twice")
    aliases: dict[str, int] = {}
    photo_ids = [Path(i).stem.rsplit("_", 1)[-1] for i in ids]
    if len(set(photo_ids)) == len(photo_ids):
        aliases = {p: r for r, p in enumerate(photo_ids)}
    paths = None
    if images is not None:
        images = Path(images).resolve()  # absolute: the dataset may be read from elsewhere
        if not images.is_dir():
            raise InputError(f"--images {images} is not a directory (give the NUS-WIDE Flickr/ image folder)")
        paths = [str(images / i) for i in ids]
    return ids, aliases, paths


def _tags(root: Path, tags_file, tag_names_file, n: int, source_rows: np.ndarray, min_tag_count: int):
    """The kept images' tags (AllTags1k.txt) over the vocabulary used by ``min_tag_count`` of
    them: (CSR aux, tag names, a note for the user)."""
    t_path = _need(root, "tags", tags_file, "--tags-file")
    keep = np.zeros(n, dtype=bool)
    keep[source_rows] = True
    tags = read_tag_matrix(t_path, n, keep)
    names_path = find_file(root, "tag_names", tag_names_file)
    names = [s for s in _lines(names_path) if s] if names_path is not None else None
    if names is not None and len(names) != tags.shape[1]:
        raise InputError(f"{names_path} lists {len(names)} tags but {t_path} has {tags.shape[1]} columns")
    cols, aux_names = vocabulary(np.asarray((tags > 0).sum(0)), names, min_tag_count)
    aux = tags[:, cols].tocsr()
    empty = int((np.diff(aux.indptr) == 0).sum())
    return aux, aux_names, f"tags: {len(cols)} of {tags.shape[1]} used by >= {min_tag_count} kept images; {empty} images have none"


def build_catalog(
    root: str | os.PathLike,
    *,
    n_concepts: int = 21,
    per_concept: int = 200,
    n_train: int = 5000,
    seed: int = 0,
    min_tag_count: int = 1,
    images: str | os.PathLike | None = None,
    concepts_file: str | os.PathLike | None = None,
    labels_dir: str | os.PathLike | None = None,
    tags_file: str | os.PathLike | None = None,
    tag_names_file: str | os.PathLike | None = None,
    image_list: str | os.PathLike | None = None,
    with_tags: bool = True,
) -> Catalog:
    """The NUS-WIDE items, labels, tags and split under the protocol of the module docstring.

    Args:
        root: the directory holding the release files (each may also be named explicitly).
        n_concepts: keep the images of this many most frequent concepts (21).
        per_concept: queries sampled per concept (200). n_train: training images (5,000).
        seed: the sampling seed. min_tag_count: drop tags used by fewer kept images.
        images: the ``Flickr`` image directory (``<concept>/<file>``); paths are recorded.
        with_tags: read ``AllTags1k.txt`` into aux (skip when aux is given otherwise).
    """
    root = Path(root)
    if not root.is_dir() and not all((concepts_file, labels_dir, image_list)):
        raise InputError(f"NUS-WIDE root directory {root} does not exist")
    c_path = _need(root, "concepts", concepts_file, "--concepts-file")
    l_dir = _need(root, "labels_dir", labels_dir, "--labels-dir")
    i_path = _need(root, "image_list", image_list, "--image-list")
    concepts = [c for c in _lines(c_path) if c]
    if not concepts:
        raise InputError(f"{c_path} lists no concepts")
    entries = _lines(i_path)
    n = len(entries)
    if n == 0:
        raise InputError(f"{i_path} lists no images")
    if not 1 <= n_concepts <= len(concepts):
        raise InputError(f"--concepts must be between 1 and {len(concepts)}, got {n_concepts}")
    top, labels, source_rows = _top_concepts(concepts, c_path, l_dir, n, n_concepts)
    m = source_rows.size
    query, train, database = _split(labels, per_concept, n_train, seed)
    ids, aliases, paths = _ids_and_paths(entries, source_rows, i_path, images)
    aux = aux_names = None
    tag_note = "tags: not read (aux given)"
    if with_tags:
        aux, aux_names, tag_note = _tags(root, tags_file, tag_names_file, n, source_rows, min_tag_count)

    return Catalog(
        ids=ids,
        splits={"train": train, "query": query, "database": database},
        labels=labels,
        label_names=[concepts[j] for j in top],
        aux=aux,
        aux_names=aux_names,
        paths=paths,
        source_rows=source_rows,
        aliases=aliases,
        aux_hint="the NUS-WIDE tags were not read; pass --aux A.npy or let the importer read AllTags1k.txt",
        provenance={
            "source": "nuswide",
            "protocol": f"{n_concepts} most frequent concepts; {per_concept} queries per concept (de-duplicated), "
                        f"{n_train} train from the rest, database = the rest",
            "root": str(root),
            "source_items": n,
            "concepts": [concepts[j] for j in top],
            "seed": seed,
            "min_tag_count": min_tag_count,
        },
        notes=[
            f"{n} images listed; {m} carry one of the {n_concepts} most frequent concepts",
            (f"split: {len(query)} queries ({per_concept} per concept, de-duplicated), {len(train)} train, "
            f"{len(database)} database"),
            tag_note,
        ],
    )

