"""``GET /api/search?id=ID&k=K`` (an item of the collection) and ``POST /api/search`` (a new
picture as multipart field ``image`` with optional ``tags``; or a packed ``code``, as a form
field or a JSON body ``{"code": hex, "k": K}``)."""

from __future__ import annotations

import time

import numpy as np
from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from ...added import code_from_hex
from ...errors import InputError
from ...rerank import RerankScore, check_depth
from ..deps import SafeJSONResponse as JSONResponse
from ..deps import json_body, thumbnail_url
from ..models import MAX_K, MAX_RERANK, CodeSearchRequest, ErrorResponse, SearchResponse
from ..models import Query as QueryModel
from ..uploads import as_temp_file, check_picture, read_upload

router = APIRouter(prefix="/api", tags=["search"],
                   responses={c: {"model": ErrorResponse} for c in (400, 404, 413, 422)})


def _rerank_params(settings, rerank, score) -> tuple[int, RerankScore]:
    """The request's two-stage ranking (R, score), the server's defaults where not given."""
    R = settings.rerank if rerank in (None, "") else check_depth(rerank, "rerank")
    if R > MAX_RERANK:
        raise InputError(f"rerank must lie in 0..{MAX_RERANK}, got {R}")
    return R, RerankScore.parse(settings.rerank_score if score in (None, "") else score)


def _results(coll, code: np.ndarray, k: int, query: QueryModel, timings: dict, *, rerank: int = 0,
             score: RerankScore | None = None, vectors=None, notes: list[str] | None = None,
             query_id: str | None = None) -> JSONResponse:
    """The :class:`SearchResponse` as JSON. Built as plain dicts: validating a model per result
    costs more than the search itself at 1M items (the test suite checks the schema)."""
    notes = list(notes or [])
    if rerank and vectors is None:
        notes.append(f"{query.id or 'this query'} has no stored features or aux: ranked by Hamming distance only")
    applied = bool(rerank and vectors is not None)
    t0 = time.perf_counter()
    hits = coll.search(code, k, rerank=rerank if applied else 0, score=score, query=vectors, query_id=query_id)
    timings["search"] = (time.perf_counter() - t0) * 1000.0
    results = []
    for h in hits:
        results.append({"rank": h.rank, "id": h.id, "distance": h.distance, "score": h.score,
                         "labels": coll.labels_of(h.id), "tags": coll.tags_of(h.id),
                         "thumbnail": thumbnail_url(h.id) if coll.image_of(h.id) is not None else None})
    return JSONResponse({"query": query.model_dump(), "k": k, "results": results, "items": len(coll),
                         "rerank": {"depth": rerank if applied else 0, "score": str(score) if applied else None},
                         "notes": notes, "timing_ms": {k_: round(v, 3) for k_, v in timings.items()}})


@router.get("/search", response_model=SearchResponse)
def search_by_id(request: Request, id: str = Query(..., min_length=1, max_length=512, description="item id"),
                 k: int = Query(10, ge=1, le=MAX_K),
                 rerank: int | None = Query(None, ge=0, le=MAX_RERANK,
                                            description="re-rank the Hamming top R (0 = off; default: the server's)"),
                 score: str | None = Query(None, max_length=200, description="the re-rank score, e.g. features:1,aux:1")
                 ) -> JSONResponse:
    """The ``k`` nearest items of an item of the collection (or of the run's dataset); its own
    item first among those tied with it."""
    coll = request.app.state.collection
    R, sc = _rerank_params(request.app.state.settings, rerank, score)
    t0 = time.perf_counter()
    code = coll.code_of(id)
    vectors = coll.query_vectors(id, sc) if R else None
    timings = {"code": (time.perf_counter() - t0) * 1000.0}
    q = QueryModel(kind="id", id=id, code=code.tobytes().hex(), labels=coll.labels_of(id), tags=coll.tags_of(id),
                   thumbnail=thumbnail_url(id) if coll.image_of(id) is not None else None)
    return _results(coll, code, k, q, timings, rerank=R, score=sc, vectors=vectors, query_id=id)


def _parse_k(value) -> int:
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise InputError(f"k must be an integer, got {str(value)[:40]!r}") from None
    if not 1 <= k <= MAX_K:
        raise InputError(f"k must lie in 1..{MAX_K}, got {k}")
    return k


@router.post("/search", response_model=SearchResponse)
async def search_by_upload(request: Request) -> JSONResponse:
    """Multipart: ``image`` (a picture; featurized like the dataset, encoded by the model) with
    optional ``tags`` ("a;b"), or ``code`` (hex); and ``k``, ``rerank``, ``score``. JSON:
    ``{"code": hex, "k": K}``. A code carries no features: it is ranked by Hamming distance."""
    coll = request.app.state.collection
    settings = request.app.state.settings
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        body = await json_body(request, CodeSearchRequest, '{"code": hex, "k": K}')
        code = code_from_hex(body.code, coll.run.bits)
        R, sc = _rerank_params(settings, body.rerank, body.score)
        return await run_in_threadpool(_results, coll, code, body.k, QueryModel(kind="code", code=body.code.lower()), {},
                                       rerank=R, score=sc)
    if not ctype.startswith("multipart/form-data"):
        raise InputError("POST /api/search takes multipart/form-data (field 'image' or 'code') or a JSON body")
    form = await request.form()
    k = _parse_k(form.get("k", 10))
    R, sc = _rerank_params(settings, form.get("rerank"), form.get("score"))
    if form.get("image") is not None:
        data, name = await read_upload(form["image"])
        tags = str(form.get("tags") or "").strip() or None
        t0 = time.perf_counter()
        await run_in_threadpool(check_picture, data, name, settings.max_pixels)

        def encode():
            with as_temp_file(data, name) as path:
                return coll.encode_query_pictures([path], tags=[tags] if tags else None)

        enc = await run_in_threadpool(encode)
        from ...extract.tags import split_terms

        q = QueryModel(kind="image", id=name, code=enc.codes.tobytes().hex(), tags=split_terms(tags) or None)
        return await run_in_threadpool(_results, coll, enc.codes, k, q, {"encode": (time.perf_counter() - t0) * 1000.0},
                                       rerank=R, score=sc, vectors=enc.vectors, notes=enc.notes)
    if form.get("code") is not None:
        code = code_from_hex(str(form["code"]), coll.run.bits)
        return await run_in_threadpool(_results, coll, code, k, QueryModel(kind="code", code=str(form["code"]).lower()),
                                       {}, rerank=R, score=sc)
    raise InputError("give a picture (multipart field 'image') or a packed code (field 'code')")
