"""Adding a folder of pictures to a run's collection (``lagnh add``), resumably."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .added import AddedItem

logger = logging.getLogger(__name__)


def _picture_list(source: str | os.PathLike):
    from .extract.images import IMAGE_EXTENSIONS, ImageList, list_image_source

    src = Path(source)
    # one picture (a FIFO named like one too: reading it is refused, where a list file would block)
    if src.exists() and not src.is_dir() and src.suffix.lower() in IMAGE_EXTENSIONS:
        from .text import name_to_id

        return ImageList([name_to_id(src.name)], [str(src.resolve())], {"kind": "file", "path": str(src)})
    return list_image_source(src)


def add_pictures(coll, source: str | os.PathLike, *, tags_csv: str | os.PathLike | None = None, prefix: str = "",
                 batch: int = 64, log: Callable[[str], None] = logger.info) -> dict:
    """Featurize, encode and commit the pictures of ``source`` in batches of ``batch``.

    Ids are ``prefix + id`` (the path relative to the folder). Pictures already in the
    collection are skipped, so an interrupted run is resumed by running it again, and of two
    runs adding one picture only the first commits it (the other counts it as already in).
    Pictures that cannot be used (not decodable, not a regular file, a dangling link, too
    large) are skipped, named in a warning and counted; a single picture given as the source
    is refused instead. Paths are recorded absolute (not copied). The prefix and every id are
    checked before any picture is read.
    """
    from .added import MAX_ID_CHARS, check_item_id
    from .extract.tags import read_tag_csv, split_terms
    from .text import check_text

    check_text(prefix, "--prefix")
    pics = _picture_list(source)
    single = pics.source.get("kind") == "file"
    tags = read_tag_csv(tags_csv, pics.ids).tags if tags_csv is not None else [[] for _ in pics.ids]
    todo = []
    for i, p, t in zip(pics.ids, pics.paths, tags):
        if len(prefix + i) > MAX_ID_CHARS and not single:
            logger.warning("skipped %s: its id would be over %d characters", p, MAX_ID_CHARS)
            continue
        todo.append((check_item_id(prefix + i), os.path.abspath(p), t))  # a link stays a link (named as listed)
    already = sum(1 for i, _, _ in todo if i in coll or i in coll.deleted)
    todo = [x for x in todo if x[0] not in coll and x[0] not in coll.deleted]
    added = unreadable = 0
    for s in range(0, len(todo), batch):
        for tag_set in {tuple(t) for _, _, t in todo[s : s + batch]}:  # one featurize call per tag set
            part = [x for x in todo[s : s + batch] if tuple(x[2]) == tag_set]
            cell = [";".join(tag_set)] if tag_set else None
            if single:  # the one picture asked for: its problem is the command's error
                ok, enc = [0], coll.encode_query_pictures([part[0][1]], cell)
            else:
                ok, enc = _encode_readable(coll, [p for _, p, _ in part], cell)
            unreadable += len(part) - len(ok)
            if not ok:
                continue
            items = [AddedItem(part[j][0], enc.codes[n].reshape(1, -1), part[j][1], split_terms(";".join(tag_set)))
                     for n, j in enumerate(ok)]
            done = coll.add(items, enc.vectors, skip_taken=True)  # one commit a tag set: its items share one vectors file
            added += len(done)
            already += len(items) - len(done)  # another writer committed them meanwhile
        log(f"committed {added} of {len(todo)} picture(s)")
    return {"added": added, "already": already, "unreadable": unreadable}


def _encode_readable(coll, paths: list[str], tags):
    """The usable pictures among ``paths`` encoded: ``(their positions, Encoded)``. A picture
    that cannot be used (missing, not a regular file, undecodable, too large) is skipped and
    named in a warning."""
    from .limits import UnreadableImage

    try:
        return list(range(len(paths))), coll.encode_query_pictures(paths, tags)
    except UnreadableImage as e:
        if len(paths) == 1:
            logger.warning("skipped %s", str(e))
            return [], None
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
