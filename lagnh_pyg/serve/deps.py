"""What the app and its routers share (kept apart from app.py so that the routers, which
create_app imports, never import app.py back): the errors they raise, the token guard,
JSON bodies and thumbnail URLs."""

from __future__ import annotations

import hmac
import json
from urllib.parse import quote

from fastapi import Request
from pydantic import BaseModel, ValidationError

from ..errors import InputError


class PayloadTooLarge(Exception):
    """A request body or a picture over the limits (answered 413)."""


class Unauthorized(Exception):
    """A write without the right bearer token (answered 401)."""


def thumbnail_url(item_id: str) -> str:
    return f"/api/items/{quote(item_id, safe='')}/thumbnail"


def require_token(request: Request) -> None:
    """The write endpoints' guard: the bearer token, compared in constant time."""
    token = request.app.state.settings.token
    if not token:
        return
    got = request.headers.get("authorization", "")
    scheme, _, value = got.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise Unauthorized("this server needs a token for changes: send 'Authorization: Bearer <token>'")


async def json_body(request: Request, model: type[BaseModel], shape: str) -> BaseModel:
    """The request's JSON body as ``model``; a malformed one is a 400 naming the ``shape``."""
    try:
        return model.model_validate(json.loads(await request.body() or b"null"))
    except (ValueError, ValidationError) as e:
        raise InputError(f"the JSON body must be {shape} ({str(e).splitlines()[0][:120]})") from None
