"""Pictures of people: a contact sheet of one person's face crops.

Crops come from the photos themselves (EXIF-rotated, as the boxes are stored), each with
a margin around its box and its face id under it, so `photos people remove-face ID` can
be given the id of a face that is not this person. A photo that can no longer be opened
becomes a grey tile saying so; the sheet is still written.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

from pipeline.pathnames import os_path
from pipeline.people_ops import FaceRow
from pipeline.show import open_upright

TILE = 128
MARGIN = 0.25
"""Of the box's side, added around it: the crop shows the hair and chin too."""


def face_crop(photo: Image.Image, box: Sequence[float], size: int = TILE) -> Image.Image:
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * (1 + 2 * MARGIN)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    crop = photo.crop((round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2)))
    return crop.resize((size, size), Image.Resampling.LANCZOS)


def contact_sheet(faces: Sequence[FaceRow], title: str, columns: int = 8) -> Image.Image:
    """Tiles of ``faces`` in rows of ``columns``, each labelled with its face id."""
    columns = max(1, min(columns, len(faces) or 1))
    rows = (len(faces) + columns - 1) // columns or 1
    label_h, title_h = 14, 20
    sheet = Image.new("RGB", (columns * TILE, title_h + rows * (TILE + label_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 4), title, fill=(0, 0, 0))
    opened: dict[str, Image.Image | None] = {}
    for i, face in enumerate(faces):
        if face.path not in opened:
            try:
                opened[face.path] = open_upright(os_path(face.path))
            except Exception:  # noqa: BLE001 - moved, deleted or unreadable since it was indexed
                opened[face.path] = None
        x, y = (i % columns) * TILE, title_h + (i // columns) * (TILE + label_h)
        photo = opened[face.path]
        if photo is None:
            sheet.paste((200, 200, 200), (x, y, x + TILE, y + TILE))
            draw.text((x + 4, y + TILE // 2), "photo missing", fill=(0, 0, 0))
        else:
            sheet.paste(face_crop(photo, face.box), (x, y))
        draw.text((x + 4, y + TILE + 1), f"face {face.id}", fill=(0, 0, 0))
    return sheet
