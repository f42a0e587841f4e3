"""How a file's path is written in the index, and how it is turned back into a path to open.

On Linux a file name is bytes, not text: a camera card formatted on an old system or a
zip extracted with the wrong code page can hold names that are not valid UTF-8. Python
gives them to us with lone surrogates (``os.fsdecode``'s ``surrogateescape``), which
SQLite text, Arrow strings and JSON output all refuse. Names may also hold newlines or
terminal escape sequences, which would break `photos errors` or take over a terminal.

So the index stores every path as *path text*:

- each ``\\`` is written ``\\\\``;
- each byte that is not valid UTF-8, and each control character (newline, tab, ESC,
  DEL, the C1 controls), is written ``\\xNN`` per byte;
- everything else is the path as is, so an ordinary path's text *is* the path.

The escape is reversible (:func:`os_path` gives back the exact bytes), and two different
paths never share a text. Only a path holding a backslash, a control character or
non-UTF-8 bytes looks different in `photos search --json` output; a script opens it
with ``os.fsdecode`` of the same unescaping (see :func:`os_path`).
"""

from __future__ import annotations

import os
import re
import unicodedata

_ESCAPED = re.compile(r"\\(\\|x[0-9a-f]{2})")


def path_text(path: str) -> str:
    """The text the index stores for ``path`` (a ``str`` from ``os`` functions)."""
    if "\\" not in path and path.isprintable():
        return path  # the common case, and the fast one
    out = []
    for char in path:
        if char == "\\":
            out.append("\\\\")
        elif "\udc80" <= char <= "\udcff":  # an undecodable byte, as surrogateescape gives it
            out.append(f"\\x{ord(char) - 0xDC00:02x}")
        elif unicodedata.category(char) == "Cc" or "\ud800" <= char <= "\udfff":
            out.append("".join(f"\\x{b:02x}" for b in char.encode("utf-8", "surrogatepass")))
        else:
            out.append(char)
    return "".join(out)


def os_path(text: str) -> str:
    """The path to open for index text ``text``: the inverse of :func:`path_text`."""
    if "\\" not in text:
        return text
    raw = bytearray()
    pos = 0
    for match in _ESCAPED.finditer(text):
        raw += text[pos : match.start()].encode("utf-8", "surrogatepass")
        escape = match.group(1)
        raw += b"\\" if escape == "\\" else bytes([int(escape[1:], 16)])
        pos = match.end()
    raw += text[pos:].encode("utf-8", "surrogatepass")
    return os.fsdecode(bytes(raw))
