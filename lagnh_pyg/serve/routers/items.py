"""``/api/items``: an item, its thumbnail, adding pictures (or codes), deleting.

Item ids come in the URL path (percent-encoded; they may contain ``/``). They are only ever
looked up in the collection; the file behind a thumbnail is the path the dataset or the
side store recorded for that id, so no id reaches the filesystem.
"""

from __future__ import annotations

import io
import re

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from ...added import AddedItem, code_from_hex
from ...collection import NotFoundError
from ...errors import InputError
from ...extract.tags import split_terms
from ..deps import PayloadTooLarge, json_body, require_token, thumbnail_url
from ..models import (
    AddCodesRequest,
    Added,
    AddResponse,
    DeleteResponse,
    ErrorResponse,
    ItemResponse,
    PageItem,
    PageResponse,
)
from ..uploads import DECODE_SLOTS, check_picture, read_upload

router = APIRouter(prefix="/api/items", tags=["items"],
                   responses={c: {"model": ErrorResponse} for c in (400, 401, 404, 409, 413, 422)})
MAX_FILES = 256
MAX_PAGE = 500


@router.get("/{item_id:path}/thumbnail", responses={200: {"content": {"image/jpeg": {}}}})
def thumbnail(request: Request, item_id: str) -> Response:
    """A JPEG thumbnail of the item's picture."""
    from PIL import Image

    coll = request.app.state.collection
    settings = request.app.state.settings
    if item_id not in coll and coll.dataset_row(item_id) is None:
        raise NotFoundError(f"item {item_id!r} is not in the collection")
    path = coll.image_of(item_id)
    if path is None:
        raise NotFoundError(f"item {item_id!r} has no picture on this server")
    try:
        with Image.open(path) as im:
            if im.size[0] * im.size[1] > settings.max_pixels:
                raise PayloadTooLarge(f"the picture of {item_id!r} is over the {settings.max_pixels}-pixel limit")
            im.draft("RGB", (settings.thumb_px, settings.thumb_px))  # JPEG: decode at reduced size
            with DECODE_SLOTS:  # the decodes of all requests together stay bounded
                im.thumbnail((settings.thumb_px, settings.thumb_px))
            buf = io.BytesIO()
            im.convert("RGB").save(buf, format="JPEG", quality=85)
    except Image.DecompressionBombError:
        raise PayloadTooLarge(f"the picture of {item_id!r} is over the {settings.max_pixels}-pixel limit") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise InputError(f"the picture of {item_id!r} cannot be read ({type(e).__name__})") from None
    return Response(buf.getvalue(), media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})


@router.get("", response_model=PageResponse)
def page(request: Request, offset: int = Query(0, ge=0, description="items to skip"),
         limit: int = Query(48, ge=1, le=MAX_PAGE, description="items to return")) -> PageResponse:
    """A page of the live collection in index order (database, then added items): the gallery
    the search page shows before any search."""
    coll = request.app.state.collection
    ids, total = coll.page(offset, limit)
    items = [PageItem(id=i, labels=coll.labels_of(i), tags=coll.tags_of(i),
                      thumbnail=thumbnail_url(i) if coll.image_of(i) is not None else None) for i in ids]
    return PageResponse(items=items, offset=offset, total=total)


@router.get("/{item_id:path}", response_model=ItemResponse)
def item(request: Request, item_id: str) -> ItemResponse:
    coll = request.app.state.collection
    code = coll.code_of(item_id)
    added = coll.added.get(item_id)
    source = "added" if added is not None else "database" if item_id in coll else "dataset"
    return ItemResponse(id=item_id, code=code.tobytes().hex(), source=source, labels=coll.labels_of(item_id),
                        tags=coll.tags_of(item_id),
                        thumbnail=thumbnail_url(item_id) if coll.image_of(item_id) is not None else None)


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def default_id(data_sha: str, name: str) -> str:
    """``added/<sha256 prefix>-<file name, safe characters only>``: the same picture gets the
    same id, so sending it twice is refused (409) instead of stored twice."""
    stem = _SAFE.sub("_", name)[-80:].strip("._") or "picture"
    return f"added/{data_sha[:12]}-{stem}"


@router.post("", response_model=AddResponse, dependencies=[Depends(require_token)])
async def add(request: Request) -> AddResponse:
    """Multipart: one or more files ``images``, optional ``tags`` ("a;b", for every picture) and
    ``id`` (one picture only). JSON: ``{"items": [{"id", "code" (hex), "tags"}]}`` adds codes.
    The request commits whole (all its items) or not at all."""
    coll = request.app.state.collection
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        body = await json_body(request, AddCodesRequest, '{"items": [{"id", "code", "tags"}]}')
        items = [AddedItem(it.id, code_from_hex(it.code, coll.run.bits), None,
                           [t for c in it.tags for t in split_terms(c)]) for it in body.items]
        notes, vectors = [], None
    elif ctype.startswith("multipart/form-data"):
        items, notes, vectors = await _pictures(request, coll)
    else:
        raise InputError("POST /api/items takes multipart/form-data (files 'images') or a JSON body of codes")
    await run_in_threadpool(coll.add, items, vectors)
    return AddResponse(added=[Added(id=it.id, code=it.code.tobytes().hex(),
                                    thumbnail=thumbnail_url(it.id) if it.path else None) for it in items],
                       items=len(coll), notes=notes)


async def _pictures(request: Request, coll):
    """The multipart pictures of a request: ``(items, featurizing notes, their vectors)``. Every
    id, tag and picture is checked before any is stored or encoded (a refused request leaves
    nothing behind and costs no network pass)."""
    import hashlib

    from ...added import check_item_id, check_tags
    from ...collection import ConflictError

    settings = request.app.state.settings
    form = await request.form(max_files=MAX_FILES)
    uploads = form.getlist("images")
    if not uploads:
        raise InputError("give one or more pictures as multipart files 'images'")
    given_id = str(form.get("id") or "").strip() or None
    if given_id and len(uploads) != 1:
        raise InputError("'id' names a single picture; send one file with it")
    tags = str(form.get("tags") or "").strip() or None
    terms = split_terms(tags)
    pics = []
    for up in uploads:
        data, name = await read_upload(up, "images")
        item_id = check_item_id(given_id or default_id(hashlib.sha256(data).hexdigest(), name))
        check_tags(terms, item_id)
        if item_id in coll or item_id in coll.deleted:  # checked again when committing (another writer)
            raise ConflictError(f"item id {item_id!r} is already used (ids are never reused, even after a delete)")
        await run_in_threadpool(check_picture, data, name, settings.max_pixels)
        pics.append((data, name, item_id))

    def store_and_encode():
        rels = [coll.log.store_image(d, n) for d, n, _ in pics]
        enc = coll.encode_query_pictures([str(coll.log.root / r) for r in rels], tags=[tags] if tags else None)
        return rels, enc

    rels, enc = await run_in_threadpool(store_and_encode)
    out = [AddedItem(item_id, code.reshape(1, -1), rel, terms, name)
           for (data, name, item_id), rel, code in zip(pics, rels, enc.codes)]
    return out, enc.notes, enc.vectors


@router.delete("/{item_id:path}", response_model=DeleteResponse, dependencies=[Depends(require_token)])
def delete(request: Request, item_id: str) -> DeleteResponse:
    coll = request.app.state.collection
    coll.delete(item_id)
    return DeleteResponse(deleted=item_id, items=len(coll))
