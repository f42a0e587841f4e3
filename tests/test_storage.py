"""Photo roots given as URIs (here file:///, the same code path as s3:// and gs://)."""

from __future__ import annotations

import os
import shutil

import pytest

from pipeline.decode import decode_photo
from pipeline.errors import ScanError
from pipeline.fingerprint import fingerprint
from pipeline.indexer import index_library
from pipeline.scan import check_roots, scan_library
from pipeline.settings import IndexSettings
from pipeline.storage import is_uri
from tests.conftest import copy_photos
from tests.test_incremental import index_state


@pytest.fixture()
def library(tmp_path, eval_photos):
    root = tmp_path / "library"
    copy_photos(eval_photos[:2], root / "2024")
    copy_photos(eval_photos[2:3], root / ".thumbnails")
    shutil.copy(eval_photos[3], root / "2024" / "no-extension")
    (root / "notes.txt").write_text("not a photo")
    return root


def test_is_uri():
    assert is_uri("s3://bucket/photos") and is_uri("gs://b/p") and is_uri("file:///tmp/x")
    assert not is_uri("/home/me/Pictures") and not is_uri("C:/Users/me") and not is_uri("relative/path")


def test_a_uri_root_scans_like_the_same_local_folder(library):
    local = sorted((f.path, f.size, f.mtime_ns) for f in scan_library([str(library)]))
    remote = sorted((f.path, f.size, f.mtime_ns) for f in scan_library([f"file://{library}/"]))
    assert len(local) == 3  # two photos and the sniffed one; hidden folder and text file left out
    assert remote == [(f"file://{path}", size, mtime) for path, size, mtime in local]


def test_uri_photos_decode_and_fingerprint_like_local_ones(library):
    for path in sorted((library / "2024").iterdir()):
        uri = f"file://{path}"
        assert fingerprint(uri) == fingerprint(str(path))
        a, b = decode_photo(uri, 256, 10**9), decode_photo(str(path), 256, 10**9)
        assert (a.width, a.height) == (b.width, b.height) and (a.pixels == b.pixels).all()


def test_bad_uri_roots_are_scan_errors(tmp_path):
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(ScanError, match="photo folder not found"):
        check_roots([f"file://{tmp_path}/missing"])
    with pytest.raises(ScanError, match="not a folder"):
        check_roots([f"file://{tmp_path}/file.jpg"])
    with pytest.raises(ScanError, match="cannot open photo folder nosuch://x"):
        check_roots(["nosuch://x/photos"])


def test_index_a_uri_root_end_to_end(tmp_path, library, ray_local):
    uri = f"file://{library}"
    summary = index_library(IndexSettings(roots=(uri,), index_dir=tmp_path / "remote"))
    assert (summary.indexed, summary.failed) == (3, 0)
    index_library(IndexSettings(roots=(str(library),), index_dir=tmp_path / "local"))
    remote, local = index_state(tmp_path / "remote"), index_state(tmp_path / "local")
    assert [r["path"] for r in remote["parquet"]] == [f"file://{r['path']}" for r in local["parquet"]]
    assert [r["labels"][0][0] for r in remote["parquet"]] == [r["labels"][0][0] for r in local["parquet"]]
    os.utime(library / "2024" / "no-extension")  # a nightly rerun sees only what changed
    again = index_library(IndexSettings(roots=(uri,), index_dir=tmp_path / "remote"))
    assert (again.unchanged, again.changed, again.indexed) == (2, 1, 1)
