"""The app factory: ``create_app(run_dir, ...)`` -> a FastAPI app over one run's collection.

Tests build it in-process (``TestClient(create_app(run))``); ``lagnh serve`` hands it to
uvicorn. Every error leaves as JSON ``{"error": message}`` with a 4xx status: bad input or a
Host the server does not answer for 400, a missing token 401, a cross-site write 403, an
unknown item 404, a clash 409, an upload over the limit 413, a malformed request 422. A bug is
logged here and answered 500 with one line, never a traceback, and the connection stays open.

Requests from browsers: only the Host names the server was started for are answered (DNS
rebinding), and a request that changes or computes anything (any method but GET/HEAD/OPTIONS)
is refused when its ``Origin`` or ``Sec-Fetch-Site`` says another site sent it. Writes also
need the token, or on a server without one the header ``X-Requested-With`` (see
:mod:`.deps`).
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
from ..limits import PictureTooLarge
from ..rerank import run_score
from .deps import (  # noqa: F401  (routers use deps)
    Forbidden,
    PayloadTooLarge,
    SafeJSONResponse,
    Unauthorized,
    require_token,
    thumbnail_url,
)

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
#: the names a loopback server answers for (``Host`` header, port aside)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


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
        allowed_hosts: the host names (``Host`` header, without the port) answered; others
            get 400, so a DNS-rebound name cannot reach the server. ``None``: any.
    """

    token: str | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD
    max_pixels: int = DEFAULT_MAX_PIXELS
    thumb_px: int = 160
    device: str = "cpu"
    allowed_hosts: tuple[str, ...] | None = LOOPBACK_HOSTS
    rerank: int = 0
    rerank_score: str | None = None

    def __post_init__(self) -> None:
        from ..rerank import RerankScore, check_depth

        self.rerank = check_depth(self.rerank)
        if self.rerank_score is not None:
            self.rerank_score = str(RerankScore.parse(self.rerank_score))


def host_name(value: bytes | str) -> str:
    """The host of a ``Host`` header or an origin's netloc, without the port, lower-case."""
    v = (value.decode("latin-1") if isinstance(value, bytes) else value).strip().lower()
    if v.startswith("["):
        return v[1 : v.find("]")] if "]" in v else v
    return v.rsplit(":", 1)[0].rstrip(".") if v.count(":") == 1 else v.rstrip(".")


class RequestGuard:
    """ASGI middleware: answer only the allowed ``Host`` names, and refuse (403) any request
    but GET/HEAD/OPTIONS whose ``Sec-Fetch-Site`` is not ``same-origin`` (or ``none``) or
    whose ``Origin`` is not this server's own. Runs before the body is read."""

    def __init__(self, app, allowed_hosts) -> None:
        self.app = app
        self.allowed = None if allowed_hosts is None else frozenset(host_name(h) for h in allowed_hosts)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        host = origin = site = None
        for k, v in scope.get("headers") or ():
            if k == b"host":
                host = v
            elif k == b"origin":
                origin = v
            elif k == b"sec-fetch-site":
                site = v
        if self.allowed is not None and host is not None and host_name(host) not in self.allowed:
            shown = host.decode("latin-1")[:100]
            return await _error(400, f"this server does not answer for host {shown!r} (it answers for "
                                f"{', '.join(sorted(self.allowed))}; `lagnh serve --allowed-host NAME` adds a name)"
                                )(scope, receive, send)
        if scope["method"] not in SAFE_METHODS:
            why = None
            if site is not None and site not in (b"same-origin", b"none"):
                why = f"Sec-Fetch-Site: {site.decode('latin-1')[:40]}"
            elif origin is not None:
                o = origin.decode("latin-1").strip().lower()
                netloc = o.split("://", 1)[1] if "://" in o else None
                if netloc is None or host is None or netloc.rstrip("/") != host.decode("latin-1").strip().lower():
                    why = f"Origin: {o[:100]}"
            if why is not None:
                return await _error(403, f"refused a cross-site {scope['method']} ({why}): only this server's own "
                                    "page may send it")(scope, receive, send)
        return await self.app(scope, receive, send)


class CatchAll:
    """ASGI middleware: a bug becomes a logged 500 with one JSON line, and the request ends
    normally, so the keep-alive connection stays usable (Starlette's own handler re-raises,
    and uvicorn then closes the connection under the client's next request)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def watch(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:  # noqa: BLE001 - the bug is logged with its traceback
            if started:  # half a response is out: nothing valid can follow on this connection
                raise
            logger.exception("internal error on %s %s", scope.get("method"), scope.get("path"))
            first = str(exc).splitlines()[0][:200] if str(exc) else ""
            await _error(500, f"internal error {type(exc).__name__}: {first}")(scope, receive, send)


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
    return SafeJSONResponse({"error": message}, status_code=status, headers=headers)


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
        status = (404 if isinstance(exc, NotFoundError) else 409 if isinstance(exc, ConflictError)
                  else 413 if isinstance(exc, PictureTooLarge) else 400)
        return _error(status, str(exc))

    @app.exception_handler(PayloadTooLarge)
    async def _large(request, exc):
        return _error(413, str(exc))

    @app.exception_handler(Unauthorized)
    async def _auth(request, exc):
        return _error(401, str(exc), {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(Forbidden)
    async def _forbidden(request, exc):
        return _error(403, str(exc))


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
                  redoc_url=None, default_response_class=SafeJSONResponse)
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
    app.add_middleware(RequestGuard, allowed_hosts=settings.allowed_hosts)
    app.add_middleware(CatchAll)  # outermost of ours: a bug anywhere below is answered, not re-raised
    return app
