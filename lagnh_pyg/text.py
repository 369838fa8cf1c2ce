"""Item ids, tags and file names as text: what is accepted, and how the rest is written.

An item id or a tag is valid Unicode text on one line: no lone surrogate (what Python makes of
bytes that are not UTF-8), no C0 or C1 control character (newline, tab, NUL, U+0085 NEL ...),
no DEL, no line or paragraph separator (U+2028, U+2029). Every entry point checks it (the
API, ``lagnh add``, tag CSVs, id files, folders), because the one-per-line files (``ids.txt``,
``paths.txt``) split on these characters and a lone surrogate cannot be encoded as UTF-8
(a search answering such an item would fail).

File names are bytes: one that is not valid UTF-8 gets the id its bytes decode to with each
undecodable byte written ``\\xNN`` (two lower-case hex digits), e.g. ``caf\\xe9.jpg`` for
Latin-1 ``café.jpg``. The same bytes always give the same id (the escape is stable), and the
picture itself is still read from its real name. A file name with a control character
(a newline, a tab ...) is skipped with its reason: the line files could not record its path.
"""

from __future__ import annotations

import re

from .errors import InputError

# C0 controls, DEL, C1 controls (U+0085 NEL among them), surrogates, U+2028, U+2029
_BAD = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029]")


def bad_char(text: str) -> str | None:
    """The first character of ``text`` that an id or a tag may not hold (``None``: none)."""
    m = _BAD.search(text)
    return m.group() if m else None


def describe_char(c: str) -> str:
    """``U+000A`` style name of a character, for error lines."""
    o = ord(c)
    if 0xDC80 <= o <= 0xDCFF:
        return f"the undecodable byte 0x{o - 0xDC00:02x}"
    if 0xD800 <= o < 0xE000:
        return f"the lone surrogate U+{o:04X}"
    if o in (0x2028, 0x2029):
        return f"the {'line' if o == 0x2028 else 'paragraph'} separator U+{o:04X}"
    return f"the control character U+{o:04X}"


def check_text(text: str, what: str = "an item id", max_len: int | None = None) -> str:
    """``text`` when it is valid one-line text (see the module docstring); else InputError."""
    if not isinstance(text, str):
        raise InputError(f"{what} must be a string, got {type(text).__name__}")
    c = bad_char(text)
    if c is not None:
        raise InputError(f"{what} {escape_text(text)[:80]!r} holds {describe_char(c)}; "
                         "ids and tags must be valid Unicode text without control characters or line breaks")
    if max_len is not None and len(text) > max_len:
        raise InputError(f"{what} is {len(text)} characters long; at most {max_len} are allowed")
    return text


def check_texts(texts, what: str = "item id") -> None:
    """:func:`check_text` of many strings (the first bad one is named with its number)."""
    search = _BAD.search
    for i, t in enumerate(texts):
        if search(t):
            check_text(t, f"{what} #{i + 1}")


def escape_text(text: str) -> str:
    """``text`` with every character :func:`bad_char` refuses written as an escape: a byte
    that was not UTF-8 (a surrogate-escaped one) as ``\\xNN``, a control character as
    ``\\xNN``/``\\uNNNN``, any other lone surrogate as ``\\uNNNN``. Valid text is returned
    unchanged. Used for stored items written by older versions and for display."""
    if bad_char(text) is None:
        return text
    out = []
    for c in text:
        o = ord(c)
        if 0xDC80 <= o <= 0xDCFF:
            out.append(f"\\x{o - 0xDC00:02x}")
        elif bad_char(c) is not None:
            out.append(f"\\x{o:02x}" if o < 256 else f"\\u{o:04x}")
        else:
            out.append(c)
    return "".join(out)


def name_to_id(name: str) -> str:
    """The item id of a file name (as ``os.fsdecode`` gives it): bytes that are not UTF-8
    become ``\\xNN``; valid names are unchanged. Control characters are left in place (the
    caller skips such names: :func:`unrecordable_name`)."""
    if not any(0xDC80 <= ord(c) <= 0xDCFF for c in name):
        return name
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else c for c in name)


def unrecordable_name(name: str) -> str | None:
    """Why a file name cannot be listed (a control character or a line break in it), else ``None``."""
    for c in name:
        o = ord(c)
        if 0xDC80 <= o <= 0xDCFF:
            continue  # not UTF-8: written \\xNN in its id (name_to_id)
        if bad_char(c) is not None:
            return (f"its name holds {describe_char(c)}, which the one-per-line id and path files cannot "
                    "record; rename it")
    return None
