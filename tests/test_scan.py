from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from pipeline.errors import ScanError
from pipeline.pathnames import os_path
from pipeline.records import FileError, ScannedFile
from pipeline.scan import scan_library
from tests.conftest import write_image


def _paths(items) -> set[str]:
    return {os.path.basename(i.path) for i in items if isinstance(i, ScannedFile)}


def test_finds_images_by_extension_in_any_case_and_by_content(tmp_path: Path):
    write_image(tmp_path / "a.JPG", fmt="JPEG")
    write_image(tmp_path / "sub" / "deeper" / "b.png")
    write_image(tmp_path / "c.TiFF", fmt="TIFF")
    write_image(tmp_path / "d.webp", fmt="WEBP")
    write_image(tmp_path / "e.gif", fmt="GIF")
    write_image(tmp_path / "f.bmp", fmt="BMP")
    write_image(tmp_path / "IMG_0001", fmt="JPEG")  # no extension: sniffed
    (tmp_path / "readme.txt").write_text("not a photo")
    (tmp_path / "noext").write_text("not a photo either")
    items = list(scan_library([str(tmp_path)]))
    assert _paths(items) == {"a.JPG", "b.png", "c.TiFF", "d.webp", "e.gif", "f.bmp", "IMG_0001"}
    scanned = {os.path.basename(i.path): i for i in items}
    assert scanned["a.JPG"].size == (tmp_path / "a.JPG").stat().st_size
    assert scanned["a.JPG"].mtime_ns == (tmp_path / "a.JPG").stat().st_mtime_ns


def test_skips_hidden_folders_and_files(tmp_path: Path):
    write_image(tmp_path / ".thumbnails" / "t.jpg", fmt="JPEG")
    write_image(tmp_path / "._IMG_1.jpg", fmt="JPEG")
    write_image(tmp_path / "IMG_1.jpg", fmt="JPEG")
    assert _paths(scan_library([str(tmp_path)])) == {"IMG_1.jpg"}


def test_symlink_cycle_ends_and_linked_folders_are_walked_once(tmp_path: Path):
    write_image(tmp_path / "album" / "x.jpg", fmt="JPEG")
    os.symlink(tmp_path, tmp_path / "album" / "loop")
    os.symlink(tmp_path / "album", tmp_path / "again")
    items = list(scan_library([str(tmp_path)]))
    assert [os.path.basename(i.path) for i in items] == ["x.jpg"]


def test_broken_symlink_is_a_scan_error(tmp_path: Path):
    os.symlink(tmp_path / "gone.jpg", tmp_path / "dangling.jpg")
    items = list(scan_library([str(tmp_path)]))
    assert len(items) == 1 and isinstance(items[0], FileError)
    assert items[0].stage == "scan" and "No such file" in items[0].reason


def test_missing_root_and_file_root_are_clear_errors(tmp_path: Path):
    with pytest.raises(ScanError, match="not found"):
        list(scan_library([str(tmp_path / "nope")]))
    photo = write_image(tmp_path / "one.jpg", fmt="JPEG")
    with pytest.raises(ScanError, match="not a folder"):
        list(scan_library([str(photo)]))


def test_pipes_sockets_and_devices_named_like_photos_are_errors_never_opened(tmp_path: Path):
    os.mkfifo(tmp_path / "pipe.jpg")
    os.mkfifo(tmp_path / "IMG_0002")  # no extension: a sniffing open() would block forever
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock.png"))
        os.symlink("/dev/zero", tmp_path / "zero.jpg")  # reading it never ends
        items = {os.path.basename(i.path): i for i in scan_library([str(tmp_path)])}
    assert set(items) == {"pipe.jpg", "sock.png", "zero.jpg"}
    assert all(isinstance(i, FileError) and i.stage == "scan" for i in items.values())
    assert "named pipe" in items["pipe.jpg"].reason and "socket" in items["sock.png"].reason
    assert "device" in items["zero.jpg"].reason


def test_symlink_loop_between_files_is_one_clear_error_per_link(tmp_path: Path):
    os.symlink(tmp_path / "b.jpg", tmp_path / "a.jpg")
    os.symlink(tmp_path / "a.jpg", tmp_path / "b.jpg")
    os.symlink(tmp_path / "c.txt", tmp_path / "c.txt")  # not a photo name: ignored
    items = list(scan_library([str(tmp_path)]))
    assert [os.path.basename(i.path) for i in items] == ["a.jpg", "b.jpg"]
    assert all(isinstance(i, FileError) and i.reason.startswith("symbolic link loop") for i in items)


def test_folder_named_like_a_photo_is_walked(tmp_path: Path):
    write_image(tmp_path / "x.jpg" / "inside.jpg", fmt="JPEG")
    assert _paths(scan_library([str(tmp_path)])) == {"inside.jpg"}


def test_non_utf8_and_multiline_names_leave_the_scan_as_index_text(tmp_path: Path):
    raw = os.fsencode(tmp_path) + b"/caf\xe9 \"quoted\"\nline.jpg"
    write_image(Path(os.fsdecode(raw)), fmt="JPEG")
    [item] = scan_library([str(tmp_path)])
    assert isinstance(item, ScannedFile)
    assert item.path == str(tmp_path) + '/caf\\xe9 "quoted"\\x0aline.jpg'
    assert os.fsencode(os_path(item.path)) == raw
