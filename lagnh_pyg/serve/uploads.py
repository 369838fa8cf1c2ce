"""Uploaded pictures: read within the limits, checked before anything decodes them fully.

The decompression-bomb guard reads only the header (width x height) and refuses pictures
over ``max_pixels`` before a pixel is decoded; then the picture is decoded once to refuse
truncated or corrupt files with a clear message.
"""

from __future__ import annotations

import io
import tempfile
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import InputError
from .deps import PayloadTooLarge


async def read_upload(upload, what: str = "image") -> tuple[bytes, str]:
    """The bytes and the client's file name of a multipart file field."""
    if isinstance(upload, str) or not hasattr(upload, "read"):
        raise InputError(f"field {what!r} must be a file (multipart/form-data upload)")
    data = await upload.read()
    if not data:
        raise InputError(f"the uploaded {what} is empty")
    return data, Path(upload.filename or "upload").name


#: pictures decoded at once by the whole server (each up to ``max_pixels`` x 4 bytes): the
#: memory that concurrent uploads can take stays bounded, whatever the number of requests
DECODE_SLOTS = threading.BoundedSemaphore(2)


def check_picture(data: bytes, name: str, max_pixels: int) -> tuple[int, int]:
    """``(width, height)`` of a decodable picture within ``max_pixels`` and the aspect-ratio
    limit (checked on the header, before a pixel is decoded); else 400 / 413."""
    from PIL import Image

    from ..limits import PictureTooLarge, check_geometry

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                check_geometry(w, h, name, max_pixels)
                with DECODE_SLOTS:
                    im.load()
    except PictureTooLarge as e:
        raise PayloadTooLarge(str(e)) from None
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise PayloadTooLarge(f"{name}: {e}") from None
    except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, ...
        msg = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise InputError(f"{name} is not a readable picture ({msg})") from None
    return w, h


@contextmanager
def as_temp_file(data: bytes, name: str) -> Iterator[str]:
    """The bytes as a temporary file (the featurizer reads paths); removed afterwards."""
    suffix = Path(name).suffix.lower()
    suffix = suffix if suffix.isascii() and suffix[1:].isalnum() and len(suffix) <= 6 else ".img"
    with tempfile.NamedTemporaryFile(prefix="lagnh-upload-", suffix=suffix) as f:
        f.write(data)
        f.flush()
        yield f.name
