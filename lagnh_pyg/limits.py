"""The sizes a picture may have: when it is decoded, and after every resize.

Every reader of pictures (feature extraction, ``lagnh add``, ``lagnh search --image``, the
server's uploads, thumbnails and contact sheets) checks a picture's header against these
before decoding it, and every resize checks its result before allocating it: a 372-byte PNG
of 100000 x 1 pixels passes a pixel limit, and scaling its short side up to a network's input
size would ask for a 25.6M x 256 image (20 GB).
"""

from __future__ import annotations

from .errors import InputError

#: the most pixels (width x height) a picture may have to be decoded at all (PIL's own
#: decompression-bomb threshold; ``lagnh serve --max-pixels`` sets a lower one for uploads)
MAX_PIXELS = 89_478_485
#: the widest a picture may be for its height (or the reverse): the networks scale the short
#: side up to their input size, so a 100000 x 1 strip would be resized to 25.6M x 256 pixels
MAX_ASPECT = 100
#: the most pixels any picture may have after a resize (scaling the short side up included):
#: 2^25 RGB pixels are 96 MiB
MAX_RESIZED_PIXELS = 1 << 25


class UnreadableImage(InputError):
    """A picture that cannot be used: missing, not a regular file, not decodable, or too large
    (``lagnh add`` skips it and says so; a single picture is refused)."""


class PictureTooLarge(UnreadableImage):
    """A picture over the pixel, aspect-ratio or resized-size limits (``lagnh serve``: 413)."""


def check_geometry(width: int, height: int, name: str, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse a picture whose size alone would make decoding or resizing it blow up memory:
    more than ``max_pixels`` pixels, or an aspect ratio over :data:`MAX_ASPECT`. Reads no pixel."""
    w, h = int(width), int(height)
    if w < 1 or h < 1:
        raise InputError(f"{name}: {w} x {h} pixels is not a picture")
    if w * h > max_pixels:
        raise PictureTooLarge(f"{name}: {w} x {h} pixels is over the {max_pixels}-pixel limit")
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise PictureTooLarge(f"{name}: {w} x {h} pixels is over the {MAX_ASPECT}:1 aspect-ratio limit")


def check_resized(width: int, height: int, name: str = "the picture") -> None:
    """Refuse a resize to more than :data:`MAX_RESIZED_PIXELS` pixels, before it allocates."""
    if int(width) * int(height) > MAX_RESIZED_PIXELS:
        raise PictureTooLarge(f"{name}: resizing it to {width} x {height} pixels would exceed the "
                              f"{MAX_RESIZED_PIXELS}-pixel limit")
