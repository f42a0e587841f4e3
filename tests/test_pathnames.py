"""Paths as the index stores them: any Linux file name, reversibly, as valid one-line UTF-8."""

from __future__ import annotations

import os
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.pathnames import os_path, path_text

# A Linux file name is any bytes but NUL and "/"; a path joins such names with "/".
names = st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b"\0", b"_").replace(b"/", b"_"))
paths = st.lists(names, min_size=1, max_size=4).map(lambda parts: os.fsdecode(b"/" + b"/".join(parts)))


@settings(max_examples=2000, deadline=None)
@given(paths)
def test_any_path_round_trips_through_valid_single_line_utf8(path: str):
    text = path_text(path)
    assert os_path(text) == path
    assert os.fsencode(os_path(text)) == os.fsencode(path)
    text.encode("utf-8")  # no lone surrogates: SQLite, Arrow and JSON accept it
    assert not any(unicodedata.category(c) == "Cc" for c in text)  # one line, no terminal escapes


@settings(max_examples=500, deadline=None)
@given(paths, paths)
def test_different_paths_never_share_a_text(a: str, b: str):
    assert (path_text(a) == path_text(b)) == (a == b)


def test_ordinary_paths_are_stored_as_they_are():
    for path in ["/photos/2024/IMG_0001.JPG", "/photos/été/plage d'août.jpg", "/p/日本/写真.png",
                 '/p/say "cheese" & smile.jpg', "/p/100% real;.jpg"]:
        assert path_text(path) == path and os_path(path) == path


def test_odd_names_are_escaped_readably():
    assert path_text(os.fsdecode(b"/p/caf\xe9.jpg")) == "/p/caf\\xe9.jpg"
    assert path_text("/p/two\nlines.jpg") == "/p/two\\x0alines.jpg"
    assert path_text("/p/back\\slash.jpg") == "/p/back\\\\slash.jpg"
    assert path_text("/p/\x1b[31mred.jpg") == "/p/\\x1b[31mred.jpg"
    assert os_path("/p/back\\\\x41.jpg") == "/p/back\\x41.jpg"  # an escaped backslash, then text
