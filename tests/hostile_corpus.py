"""A library of bad, odd and hostile files, generated (never downloaded), with what each must become.

Each :class:`Case` is one kind of file and its expected outcome: ``indexed`` at a size,
one ``error`` row at a stage with a reason containing some words, or ``ignored`` (not a
photo by name, or a folder that is walked). Three kinds need something to happen while a
run is under way; :func:`after_scan` does it, and :func:`unprivileged_cases` covers the
permission cases that root (the test runner here) would read straight through.
"""

from __future__ import annotations

import io
import os
import random
import socket
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from pipeline.formats import register_formats
from tests.conftest import write_image
from tests.crashing_decoder import write_crashing_file

NOT_UTF8 = b"caf\xe9 (latin-1 name).jpg"


@dataclass(frozen=True)
class Case:
    kind: str
    name: str  # path under the library root, as the index stores it (pipeline/pathnames.py)
    outcome: str  # "indexed" | "error" | "ignored"
    size: tuple[int, int] | None = None  # (width, height) when indexed
    stage: str = ""
    reason: str = ""  # words the error reason must contain


def build(root: Path, outside: Path) -> tuple[list[Case], dict[str, Path]]:
    """Write every case under ``root`` (plus one target in ``outside``); return the cases
    and the files that :func:`after_scan` must change once the scan has seen them."""
    root.mkdir(parents=True)
    cases: list[Case] = []

    def add(kind: str, name: str, outcome: str, size=None, stage="", reason="") -> None:
        cases.append(Case(kind, name, outcome, size, stage, reason))

    good = write_image(root / "good.jpg", size=(400, 300), fmt="JPEG", quality=90)
    add("ordinary JPEG (control)", "good.jpg", "indexed", (400, 300))

    (root / "empty.jpg").write_bytes(b"")
    add("zero-byte file", "empty.jpg", "error", stage="decode", reason="empty file (0 bytes)")
    data = good.read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    add("truncated JPEG (half the bytes)", "truncated.jpg", "error", stage="decode", reason="truncated")
    (root / "random.jpg").write_bytes(random.Random(5).randbytes(4096))
    add("random bytes named .jpg", "random.jpg", "error", stage="decode", reason="not a recognised image format")
    (root / "notes.png").write_text("shopping list: milk, eggs\n")
    add("text file named .png", "notes.png", "error", stage="decode", reason="the file contains text")
    write_image(root / "png-named.jpg", fmt="PNG")
    add("valid PNG named .jpg", "png-named.jpg", "indexed", (64, 48))
    _write_png_declaring(root / "bomb.png", 30000, 30000)
    add("decompression bomb (declares 30000x30000)", "bomb.png", "error", stage="decode",
        reason="decompression bomb")
    write_image(root / "pixel.png", size=(1, 1))
    add("1x1 image", "pixel.png", "indexed", (1, 1))
    write_image(root / "panorama.jpg", size=(20000, 100), fmt="JPEG")
    add("20000x100 panorama", "panorama.jpg", "indexed", (20000, 100))
    write_image(root / "cmyk.jpg", size=(80, 60), mode="CMYK", fmt="JPEG")
    add("CMYK JPEG", "cmyk.jpg", "indexed", (80, 60))
    Image.fromarray(np.full((30, 40), 40000, np.uint16)).save(root / "deep16.png")
    add("16-bit greyscale PNG", "deep16.png", "indexed", (40, 30))
    palette = Image.new("P", (32, 24), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
    palette.save(root / "palette-alpha.png", transparency=0)
    add("palette PNG with transparency", "palette-alpha.png", "indexed", (32, 24))
    write_image(root / "grey.jpg", size=(50, 40), mode="L", fmt="JPEG")
    add("greyscale JPEG", "grey.jpg", "indexed", (50, 40))
    frames = [Image.new("RGB", (30, 20), (i * 80, 0, 0)) for i in range(3)]
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    add("animated GIF (3 frames)", "animated.gif", "indexed", (30, 20))
    pages = [Image.new("RGB", (36, 28), (0, i * 80, 0)) for i in range(3)]
    pages[0].save(root / "pages.tif", save_all=True, append_images=pages[1:])
    add("TIFF with 3 pages", "pages.tif", "indexed", (36, 28))
    for orientation in range(2, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        write_image(root / f"exif-orientation-{orientation}.jpg", size=(60, 30), fmt="JPEG", exif=exif)
        add(f"EXIF orientation {orientation}", f"exif-orientation-{orientation}.jpg", "indexed",
            (30, 60) if orientation >= 5 else (60, 30))
    _write_jpeg_with_corrupt_exif(root / "corrupt-exif.jpg")
    add("corrupt EXIF block", "corrupt-exif.jpg", "indexed", (60, 30))

    _add_heic_and_exif_cases(root, add)

    write_image(Path(os.fsdecode(os.fsencode(root) + b"/" + NOT_UTF8)), fmt="JPEG")
    add("non-UTF-8 file name", "caf\\xe9 (latin-1 name).jpg", "indexed", (64, 48))
    write_image(root / "say \"cheese\" & 'smile'\nnow.jpg", fmt="JPEG")
    add("name with spaces, quotes and a newline", "say \"cheese\" & 'smile'\\x0anow.jpg", "indexed", (64, 48))
    write_image(root / "\x1b[31mred-alert.jpg", fmt="JPEG")
    add("name with a terminal escape sequence", "\\x1b[31mred-alert.jpg", "indexed", (64, 48))
    locked = write_image(root / "locked.jpg", fmt="JPEG")
    locked.chmod(0)
    if os.geteuid() == 0:
        add("unreadable file (chmod 000), run as root", "locked.jpg", "indexed", (64, 48))
    else:
        add("unreadable file (chmod 000)", "locked.jpg", "error", stage="decode", reason="permission denied")

    write_image(root / "x.jpg" / "inside.jpg", fmt="JPEG")
    add("folder named x.jpg (holding a photo)", "x.jpg/inside.jpg", "indexed", (64, 48))
    os.symlink("loop-b.jpg", root / "loop-a.jpg")
    os.symlink("loop-a.jpg", root / "loop-b.jpg")
    add("symlink loop (a -> b -> a)", "loop-a.jpg", "error", stage="scan", reason="symbolic link loop")
    add("symlink loop (b -> a -> b)", "loop-b.jpg", "error", stage="scan", reason="symbolic link loop")
    write_image(root / "album" / "in-album.jpg", fmt="JPEG")
    os.symlink("..", root / "album" / "up")
    add("folder symlink cycle (album/up -> ..)", "album/in-album.jpg", "indexed", (64, 48))
    write_image(outside / "real.jpg", fmt="JPEG")
    os.symlink(outside / "real.jpg", root / "outside.jpg")
    add("symlink to a file outside the roots", "outside.jpg", "indexed", (64, 48))
    os.symlink(root / "gone.jpg", root / "dangling.jpg")
    add("broken symlink", "dangling.jpg", "error", stage="scan", reason="broken symbolic link")
    os.mkfifo(root / "pipe.jpg")
    add("named pipe called .jpg", "pipe.jpg", "error", stage="scan", reason="named pipe")
    os.mkfifo(root / "IMG_0003")
    add("named pipe with no extension (would block a sniff)", "IMG_0003", "ignored")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock.png"))
    sock.close()  # the socket file stays
    add("socket called .png", "sock.png", "error", stage="scan", reason="socket")
    os.symlink("/dev/zero", root / "zero.jpg")
    add("symlink to /dev/zero (endless)", "zero.jpg", "error", stage="scan", reason="device")

    write_crashing_file(root / "crash-segv.jpg", "SIGSEGV")
    add("file whose decoder segfaults (SIGSEGV)", "crash-segv.jpg", "error", stage="worker",
        reason="died every time")
    write_crashing_file(root / "crash-killed.jpg", "SIGKILL")
    add("file whose decoder is killed (SIGKILL, as the OOM killer does)", "crash-killed.jpg", "error",
        stage="worker", reason="died every time")

    deleted = write_image(root / "zz-deleted.jpg", fmt="JPEG")
    add("file deleted between scan and decode", "zz-deleted.jpg", "error", stage="decode",
        reason="file disappeared")
    copying = root / "zz-copying.jpg"
    copying.write_bytes(data[: len(data) // 3])
    add("file being written while scanned", "zz-copying.jpg", "error", stage="decode",
        reason="changed while the run was reading it")
    return cases, {"delete": deleted, "finish": copying, "full": good}


def after_scan(changes: dict[str, Path]) -> None:
    """What happens while the run decodes: one file is deleted, another finishes copying."""
    changes["delete"].unlink()
    changes["finish"].write_bytes(changes["full"].read_bytes())


def unprivileged_cases(root: Path) -> list[Case]:
    """Files that only an ordinary user cannot read; :func:`build` makes them readable to root."""
    root.mkdir(parents=True)
    root.chmod(0o755)
    write_image(root / "readable.jpg", fmt="JPEG")
    write_image(root / "locked.jpg", fmt="JPEG").chmod(0)
    write_image(root / "locked-folder" / "inside.jpg", fmt="JPEG")
    (root / "locked-folder").chmod(0)
    return [
        Case("ordinary JPEG (control), as uid 65534", "readable.jpg", "indexed", (64, 48)),
        Case("unreadable file (chmod 000), as uid 65534", "locked.jpg", "error", stage="decode",
             reason="permission denied"),
        Case("unreadable folder (chmod 000), as uid 65534", "locked-folder", "error", stage="scan",
             reason="Permission denied"),
    ]


def _add_heic_and_exif_cases(root: Path, add) -> None:
    """HEIC and AVIF photos, good and broken, and JPEGs with real and with hostile EXIF."""
    register_formats()
    exif = Image.Exif()
    exif[0x0112] = 6
    write_image(root / "IMG_0100.HEIC", size=(60, 30), fmt="HEIF", exif=exif.tobytes())
    add("HEIC photo, rotated (EXIF orientation 6)", "IMG_0100.HEIC", "indexed", (30, 60))
    write_image(root / "IMG_0101.avif", size=(60, 30), fmt="AVIF", exif=exif.tobytes())
    add("AVIF photo, rotated (EXIF orientation 6)", "IMG_0101.avif", "indexed", (30, 60))
    heic = (root / "IMG_0100.HEIC").read_bytes()
    (root / "truncated.heic").write_bytes(heic[: len(heic) // 2])
    add("truncated HEIC (half the bytes)", "truncated.heic", "error", stage="decode",
        reason="HEIF/AVIF file that is truncated or corrupt")
    (root / "garbage.heic").write_bytes(heic[:32] + random.Random(7).randbytes(2048))
    add("HEIC header followed by random bytes", "garbage.heic", "error", stage="decode",
        reason="HEIF/AVIF file that is truncated or corrupt")
    (root / "empty.heic").write_bytes(b"")
    add("zero-byte .heic", "empty.heic", "error", stage="decode", reason="empty file (0 bytes)")
    _write_heic_declaring(root / "bomb.heic", 30000, 30000)
    add("HEIC declaring 30000x30000 pixels", "bomb.heic", "error", stage="decode", reason="decompression bomb")
    write_image(root / "lisbon.jpg", size=(80, 60), fmt="JPEG", exif=camera_exif().tobytes())
    add("JPEG with camera EXIF: date, make, model, GPS (Lisbon)", "lisbon.jpg", "indexed", (80, 60))
    hostile = Image.Exif()
    hostile[0x010F] = "\x01\x02" * 3000  # 6000 control characters as the camera's make
    hostile.get_ifd(0x8769)[0x9003] = "0000:00:00 00:00:00"
    gps = hostile.get_ifd(0x8825)
    gps[1], gps[2] = "N", (IFDRational(91, 1), IFDRational(1, 0), IFDRational(0, 0))
    gps[3], gps[4] = "Q", (IFDRational(9, 1), IFDRational(0, 1), IFDRational(0, 1))
    write_image(root / "hostile-exif.jpg", size=(80, 60), fmt="JPEG", exif=hostile.tobytes())
    add("hostile EXIF: date 0000:00:00, latitude 91 with 1/0 minutes, 6 KB of control bytes as make",
        "hostile-exif.jpg", "indexed", (80, 60))


def camera_exif() -> Image.Exif:
    """What a phone writes: date with its UTC offset, make, model, lens and a GPS fix in Lisbon."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Apple", "iPhone 12 Pro"
    sub = exif.get_ifd(0x8769)
    sub[0x9003], sub[0x9011], sub[0xA434] = "2019:07:14 18:03:22", "+01:00", "iPhone 12 Pro back camera"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (IFDRational(38, 1), IFDRational(43, 1), IFDRational(2028, 100))
    gps[3], gps[4] = "W", (IFDRational(9, 1), IFDRational(8, 1), IFDRational(2148, 100))
    return exif


def _write_heic_declaring(path: Path, width: int, height: int) -> None:
    """A real 64x64 HEIC whose image-size (``ispe``) boxes declare ``width`` x ``height``."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 20, 200)).save(buffer, "HEIF")
    data = bytearray(buffer.getvalue())
    at = data.find(b"ispe")
    while at >= 0:
        data[at + 8 : at + 16] = struct.pack(">II", width, height)
        at = data.find(b"ispe", at + 4)
    path.write_bytes(bytes(data))


def _write_png_declaring(path: Path, width: int, height: int) -> None:
    """A small PNG whose header declares ``width`` x ``height`` (1-bit): a decompression bomb."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * 64)  # far fewer pixels than declared
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def _write_jpeg_with_corrupt_exif(path: Path) -> None:
    """A valid 60x30 JPEG whose APP1 EXIF segment is garbage after its "Exif" marker."""
    buffer = io.BytesIO()
    Image.new("RGB", (60, 30), (10, 200, 10)).save(buffer, "JPEG")
    jpeg = buffer.getvalue()
    body = b"Exif\0\0" + b"MM\0*\0\0\0\x08" + b"\xff\xee" * 40
    app1 = b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body
    path.write_bytes(jpeg[:2] + app1 + jpeg[2:])

