"""Adding a folder of pictures to a run's collection (``lagnh add``), resumably."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .added import AddedItem
from .errors import InputError

logger = logging.getLogger(__name__)


def _picture_list(source: str | os.PathLike):
    from .extract.images import ImageList, list_image_source

    src = Path(source)
    if src.is_file() and src.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"):
        return ImageList([src.name], [str(src.resolve())], {"kind": "file", "path": str(src)})
    return list_image_source(src)


def add_pictures(coll, source: str | os.PathLike, *, tags_csv: str | os.PathLike | None = None, prefix: str = "",
                 batch: int = 64, log: Callable[[str], None] = logger.info) -> dict:
    """Featurize, encode and commit the pictures of ``source`` in batches of ``batch``.

    Ids are ``prefix + id`` (the path relative to the folder). Pictures already in the
    collection are skipped, so an interrupted run is resumed by running it again; pictures
    that cannot be read are skipped and counted. Paths are recorded absolute (not copied).
    """
    from .extract.tags import read_tag_csv, split_terms

    pics = _picture_list(source)
    tags = read_tag_csv(tags_csv, pics.ids).tags if tags_csv is not None else [[] for _ in pics.ids]
    todo = [(prefix + i, str(Path(p).resolve()), t) for i, p, t in zip(pics.ids, pics.paths, tags)]
    already = sum(1 for i, _, _ in todo if i in coll or i in coll.deleted)
    todo = [x for x in todo if x[0] not in coll and x[0] not in coll.deleted]
    added = unreadable = 0
    for s in range(0, len(todo), batch):
        for tag_set in {tuple(t) for _, _, t in todo[s : s + batch]}:  # one featurize call per tag set
            part = [x for x in todo[s : s + batch] if tuple(x[2]) == tag_set]
            ok, enc = _encode_readable(coll, [p for _, p, _ in part], [";".join(tag_set)] if tag_set else None)
            unreadable += len(part) - len(ok)
            if not ok:
                continue
            items = [AddedItem(part[j][0], enc.codes[n].reshape(1, -1), part[j][1], split_terms(";".join(tag_set)))
                     for n, j in enumerate(ok)]
            coll.add(items, enc.vectors)  # one commit a tag set: its items share one vectors file
            added += len(items)
        log(f"committed {added} of {len(todo)} picture(s)")
    return {"added": added, "already": already, "unreadable": unreadable}


def _encode_readable(coll, paths: list[str], tags):
    """The readable pictures among ``paths`` encoded: ``(their positions, Encoded)``."""
    try:
        return list(range(len(paths))), coll.encode_query_pictures(paths, tags)
    except InputError as e:
        if "cannot read image" not in str(e) or len(paths) == 1:
            if "cannot read image" in str(e):
                logger.warning("skipped %s", str(e))
                return [], None
            raise
    ok, parts = [], []
    for j, p in enumerate(paths):  # find the bad one(s) picture by picture
        got, enc = _encode_readable(coll, [p], tags)
        if got:
            ok.append(j)
            parts.append(enc)
    if not parts:
        return [], None
    from .collection import Encoded
    from .rerank import Vectors

    cat = lambda name: np.concatenate([getattr(e.vectors, name) for e in parts])  # noqa: E731
    return ok, Encoded(np.concatenate([e.codes for e in parts]), Vectors(cat("z"), cat("features"), cat("aux")),
                       [n for e in parts for n in e.notes])
