"""The self-contained HTML contact sheet of a search: the query, then its results as
thumbnails (base64 ``data:`` URIs, so the page is one file), green for relevant, red for not.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".gif": "image/gif",
         ".webp": "image/webp", ".bmp": "image/bmp"}
THUMB_PX = 160


# -- the HTML contact sheet ------------------------------------------------------------------
def resolve_image(path: str | None, root: str | os.PathLike | None = None) -> Path | None:
    """An existing image file for ``path`` (as given, or relative to ``root``), else ``None``."""
    if not path:
        return None
    p = Path(path)
    for cand in (p, Path(root) / p if root is not None and not p.is_absolute() else None):
        if cand is not None and cand.is_file():
            return cand
    return None


def thumbnail_data_uri(path: Path, px: int = THUMB_PX) -> str | None:
    """A base64 ``data:`` URI of a thumbnail (Pillow when installed, else the file's bytes)."""
    try:
        import warnings

        from PIL import Image

        from ..limits import check_geometry

        if not os.path.isfile(path):  # a FIFO would block the page's writer forever
            raise OSError("not a regular file")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked just below
            im = Image.open(path)
        with im:
            check_geometry(*im.size, Path(path).name)  # the pixel and aspect-ratio limits, before decoding
            im.draft("RGB", (px, px))  # JPEG: decode at a reduced size
            im.thumbnail((px, px))
            buf = io.BytesIO()
            im.convert("RGB").save(buf, format="JPEG", quality=85)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    except ImportError:
        mime = _MIME.get(path.suffix.lower())
        if mime is None or not os.path.isfile(path):
            return None
        return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()
    except Exception as e:  # noqa: BLE001 - unreadable, too large, a bomb: a text tile instead of a broken page
        logger.warning("cannot make a thumbnail of %s (%s)", path, str(e).splitlines()[0][:120] if str(e) else type(e).__name__)
        return None


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.2em} .meta{color:#666;font-size:.85em;margin-bottom:1em}
.grid{display:flex;flex-wrap:wrap;gap:10px;margin-bottom:22px;padding-bottom:12px;border-bottom:1px solid #ddd}
.tile{width:{w}px;border:3px solid #ccc;border-radius:4px;padding:4px;font-size:.75em;text-align:center}
.tile img{max-width:100%;max-height:{px}px;display:block;margin:0 auto 4px}
.noimg{height:{px}px;display:flex;align-items:center;justify-content:center;background:#f3f3f3;color:#888}
.rel{border-color:#2e9d3a} .irr{border-color:#d0342c} .query{border-color:#2458c6}
.mark{font-weight:bold} .rel .mark{color:#2e9d3a} .irr .mark{color:#d0342c}
""".replace("{w}", str(THUMB_PX + 20)).replace("{px}", str(THUMB_PX))


def _tile(cls: str, title: str, lines: Sequence[str], path: str | None, root: Any) -> str:
    img = resolve_image(path, root)
    uri = thumbnail_data_uri(img) if img is not None else None
    pic = f'<img src="{uri}" alt="{html.escape(title)}">' if uri else '<div class="noimg">no image</div>'
    text = "<br>".join(lines)
    return f'<div class="tile {cls}">{pic}{text}</div>'


def _sheet_grid(query: Mapping[str, Any], results: Sequence[Mapping[str, Any]], image_root: Any) -> str:
    q_lines = [f"<b>query</b> {html.escape(str(query['id']))}"]
    if query.get("labels"):
        q_lines.append(html.escape(", ".join(query["labels"])))
    tiles = [_tile("query", str(query["id"]), q_lines, query.get("path"), image_root)]
    for r in results:
        rel = r.get("relevant")
        cls, mark = ("rel", "✓ relevant") if rel is True else ("irr", "✗ irrelevant") if rel is False else ("", "")
        lines = [f"#{r['rank']} · d={r['distance']}", html.escape(str(r["id"]))]
        if mark:
            lines.append(f'<span class="mark">{mark}</span>')
        if r.get("labels"):
            lines.append(html.escape(", ".join(r["labels"])))
        tiles.append(_tile(cls, str(r["id"]), lines, r.get("path"), image_root))
    return f"<div class=\"grid\">{''.join(tiles)}</div>"


def contact_sheets_html(
    sheets: Sequence[tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]]],
    *,
    title: str,
    meta_lines: Sequence[str] = (),
    image_root: str | os.PathLike | None = None,
) -> str:
    """One self-contained HTML page with a row of thumbnails per query (see
    :func:`contact_sheet_html` for the fields of a query and its results)."""
    meta = "".join(f"<div>{html.escape(m)}</div>" for m in meta_lines)
    grids = "".join(_sheet_grid(q, r, image_root) for q, r in sheets)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><div class=\"meta\">{meta}</div>"
        f"{grids}</body></html>\n"
    )


def contact_sheet_html(
    query: Mapping[str, Any],
    results: Sequence[Mapping[str, Any]],
    *,
    title: str,
    meta_lines: Sequence[str] = (),
    image_root: str | os.PathLike | None = None,
) -> str:
    """A self-contained HTML page: the query, then its results as thumbnails.

    Args:
        query: ``id``, optional ``path`` and ``labels`` (names).
        results: per rank ``rank``, ``id``, ``distance``, optional ``path``, ``labels`` and
            ``relevant`` (``True``/``False`` marks the tile green/red; ``None`` = unknown).
        image_root: where relative image paths are looked up (the dataset directory).
    """
    return contact_sheets_html([(query, results)], title=title, meta_lines=meta_lines, image_root=image_root)
