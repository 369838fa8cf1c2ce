"""The app factory: ``create_app(run_dir, ...)`` -> a FastAPI app over one run's collection.

Tests build it in-process (``TestClient(create_app(run))``); ``lagnh serve`` hands it to
uvicorn. Every error leaves as JSON ``{"error": message}`` with a 4xx status: bad input 400,
a missing token 401, an unknown item 404, a clash 409, an upload over the limit 413, a
malformed request 422. A bug is logged here and answered 500 with one line, never a traceback.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..collection import Collection, ConflictError, NotFoundError
from ..errors import InputError
from ..rerank import run_score
from .deps import PayloadTooLarge, Unauthorized, require_token, thumbnail_url  # noqa: F401  (routers use deps)

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000


@dataclasses.dataclass
class ServeSettings:
    """Args:
        token: when set, ``POST``/``DELETE /api/items`` need ``Authorization: Bearer <token>``.
        max_upload_bytes: largest request body (uploads); larger ones get 413.
        max_pixels: largest picture (width x height) decoded: the decompression-bomb guard.
        thumb_px: thumbnail side in pixels.
        device: where uploads are featurized and encoded.
        rerank: R of two-stage ranking when a search does not say (0: Hamming order).
        rerank_score: the re-rank score when a search does not say (:mod:`lagnh_pyg.rerank`;
            ``None``: the run's own, :func:`lagnh_pyg.rerank.run_score`).
    """

    token: str | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD
    max_pixels: int = DEFAULT_MAX_PIXELS
    thumb_px: int = 160
    device: str = "cpu"
    rerank: int = 0
    rerank_score: str | None = None

    def __post_init__(self) -> None:
        from ..rerank import RerankScore, check_depth

        self.rerank = check_depth(self.rerank)
        if self.rerank_score is not None:
            self.rerank_score = str(RerankScore.parse(self.rerank_score))


class BodyLimit:
    """ASGI middleware: refuse bodies over ``max_bytes`` by their Content-Length, and stop
    reading a body (chunked, or lying about its length) once it passes the limit."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, int(max_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            too_big = length.isdigit()
            resp = JSONResponse({"error": f"the request body is over the {self.max_bytes}-byte limit"
                                 if too_big else "invalid Content-Length"}, status_code=413 if too_big else 400)
            return await resp(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise PayloadTooLarge(f"the request body is over the {self.max_bytes}-byte limit")
            return msg

        return await self.app(scope, limited, send)


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc):
        msg = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and msg == "Not Found":
            msg = f"no such endpoint: {request.method} {request.url.path}"
        return _error(exc.status_code, msg)

    @app.exception_handler(RequestValidationError)
    async def _validation(request, exc):
        parts = []
        for e in exc.errors():
            loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path"))
            parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
        return _error(422, "; ".join(parts) or "invalid request")

    @app.exception_handler(InputError)
    async def _input(request, exc):
        status = 404 if isinstance(exc, NotFoundError) else 409 if isinstance(exc, ConflictError) else 400
        return _error(status, str(exc))

    @app.exception_handler(PayloadTooLarge)
    async def _large(request, exc):
        return _error(413, str(exc))

    @app.exception_handler(Unauthorized)
    async def _auth(request, exc):
        return _error(401, str(exc), {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(Exception)
    async def _bug(request, exc):
        logger.exception("internal error on %s %s", request.method, request.url.path)
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        return _error(500, f"internal error {type(exc).__name__}: {first}")


def create_app(run_dir: str | os.PathLike, settings: ServeSettings | None = None,
               collection: Collection | None = None) -> FastAPI:
    """A FastAPI app serving ``run_dir``'s collection (see :mod:`lagnh_pyg.serve`).

    Args:
        run_dir: a run directory with database codes (``lagnh encode``; ``lagnh index`` too).
        settings: token, limits, device (:class:`ServeSettings`).
        collection: an already opened :class:`~lagnh_pyg.collection.Collection` (tests).
    """
    from .routers import items, meta, search

    settings = settings or ServeSettings()
    coll = collection if collection is not None else Collection(run_dir, device=settings.device)
    app = FastAPI(title="lagnh-pyg search", version="1", docs_url="/api/docs", openapi_url="/api/openapi.json",
                  redoc_url=None)
    app.state.collection = coll
    if settings.rerank_score is None:  # the run's own choice (its validation split), else the default
        settings = dataclasses.replace(settings, rerank_score=str(run_score(coll.run)[0]))
    app.state.settings = settings
    _install_error_handlers(app)
    app.include_router(meta.router)
    app.include_router(search.router)
    app.include_router(items.router)

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        files = {p.name: p for p in STATIC.iterdir() if p.is_file()}  # a fixed set: no path from the user
        if name not in files:
            raise NotFoundError(f"no static file {name!r}")
        return FileResponse(files[name])

    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes)
    return app
