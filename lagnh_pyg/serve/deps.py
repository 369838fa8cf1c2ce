"""What the app and its routers share (kept apart from app.py so that the routers, which
create_app imports, never import app.py back): the errors they raise, the token guard and
thumbnail URLs."""

from __future__ import annotations

import hmac
from urllib.parse import quote

from fastapi import Request


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
