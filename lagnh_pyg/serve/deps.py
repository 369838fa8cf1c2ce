"""What the app and its routers share (kept apart from app.py so that the routers, which
create_app imports, never import app.py back): the errors they raise, the token guard,
JSON bodies and thumbnail URLs."""

from __future__ import annotations

import hmac
import json
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from ..errors import InputError


class PayloadTooLarge(Exception):
    """A request body or a picture over the limits (answered 413)."""


class Unauthorized(Exception):
    """A write without the right bearer token (answered 401)."""


class Forbidden(Exception):
    """A cross-site write, or a write without the same-origin header (answered 403)."""


#: the header a write must carry on a server without a token. A page on another site cannot
#: send a custom header without a CORS preflight, which this server never grants, so this
#: header proves the request comes from this server's own page or from a script, not from a
#: cross-site form or ``fetch(..., {mode: "no-cors"})``.
WRITE_HEADER = "x-requested-with"


class SafeJSONResponse(JSONResponse):
    """Starlette's JSON response, which never fails on text that is not valid Unicode (a lone
    surrogate stored by an older version): such a body is sent with ASCII escapes instead."""

    def render(self, content) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def thumbnail_url(item_id: str) -> str:
    return f"/api/items/{quote(item_id, safe='')}/thumbnail"


def require_token(request: Request) -> None:
    """The write endpoints' guard. With a token set: ``Authorization: Bearer <token>``,
    compared in constant time. Without one (a loopback server): the header
    ``X-Requested-With`` (any value), which a cross-site page cannot send."""
    token = request.app.state.settings.token
    if not token:
        if not request.headers.get(WRITE_HEADER, "").strip():
            raise Forbidden("changes need the header 'X-Requested-With: lagnh' (or a token): a page on another "
                            "site cannot send it, so this refuses cross-site requests")
        return
    got = request.headers.get("authorization", "")
    scheme, _, value = got.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise Unauthorized("this server needs a token for changes: send 'Authorization: Bearer <token>'")


async def json_body(request: Request, model: type[BaseModel], shape: str) -> BaseModel:
    """The request's JSON body as ``model``; a malformed one is a 400 naming the ``shape``."""
    try:
        return model.model_validate(json.loads(await request.body() or b"null"))
    except RecursionError:  # a deeply nested body: json's C parser gives up, it is not a bug here
        raise InputError(f"the JSON body must be {shape} (it is nested too deeply)") from None
    except (ValueError, ValidationError) as e:
        raise InputError(f"the JSON body must be {shape} ({str(e).splitlines()[0][:120]})") from None
