"""Draw what the index holds about a photo: boxes, labels and the segmentation mask.

Everything drawn comes from the index (the merged Parquet record), never from running a
model again, so the picture shows exactly what search sees. Boxes are stored in the
photo's own pixels after EXIF rotation, so they are drawn on the EXIF-rotated photo
scaled to the picture's size; the mask is scaled up with nearest-neighbour, so class
edges stay as the model drew them.

A segmenter that marks any foreground as its class (Selfie's "person" also covers the
umbrella a person holds, or the pizza in a photo without people) is drawn and cut out
only inside the detector's boxes of that class (:func:`shown_mask`). On coco64 that took
the person mask's IoU with COCO's person masks from 0.37 to 0.65 (indexed with the CPU
defaults; ``photos eval`` scores the stored mask as it is).
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from models.segment import BACKGROUND, decode_mask
from models.tasks import wrapper_named
from pipeline import vocabulary
from pipeline.errors import QueryError
from pipeline.formats import register_formats
from pipeline.metadata import describe

MASK_ALPHA = 110
"""Opacity (of 255) of the mask overlay: the photo stays readable under it."""


def class_color(index: int) -> tuple[int, int, int]:
    """A distinct, stable colour per class index (golden-ratio hues)."""
    r, g, b = colorsys.hsv_to_rgb((index * 0.618034) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def open_upright(path: str) -> Image.Image:
    """The photo as a person sees it (EXIF rotation applied), in RGB."""
    register_formats()
    with Image.open(path) as im:
        return ImageOps.exif_transpose(im).convert("RGB")


def shown_mask(record: dict[str, Any], stored: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
    """The record's class mask as drawn, and whether it was limited to detected boxes.

    For a segmenter whose wrapper sets ``mask_needs_boxes`` (Selfie), pixels of a class
    outside every detected box of that class become background. Where no detector ran
    (``objects`` is None) nothing can confirm or deny the mask, so it is drawn as stored.
    ``stored``: the record's mask already decoded (left unchanged), to save decoding it again.
    """
    segmentation = record["segmentation"]
    mask = decode_mask(segmentation) if stored is None else stored
    model = (record.get("models") or {}).get("segment")
    objects = record.get("objects")
    if model is None or objects is None or not getattr(wrapper_named("segment", model), "mask_needs_boxes", False):
        return mask, False
    background = next((c["index"] for c in segmentation["classes"] if c["label"] == BACKGROUND), 0)
    sx, sy = mask.shape[1] / record["width"], mask.shape[0] / record["height"]
    limited = mask.copy()
    for c in segmentation["classes"]:
        if c["label"] == BACKGROUND:
            continue
        inside = np.zeros(mask.shape, bool)
        for o in objects:
            if o["label"] == c["label"]:
                inside[int(o["y1"] * sy):int(np.ceil(o["y2"] * sy)), int(o["x1"] * sx):int(np.ceil(o["x2"] * sx))] = True
        limited[(mask == c["index"]) & ~inside] = background
    return limited, True


def render(record: dict[str, Any], photo: Image.Image, caption: str = "", max_side: int = 1024,
           faces: Sequence[tuple[Sequence[float], str | None]] = ()) -> Image.Image:
    """``photo`` (upright) with the record's mask overlay, boxes, labels and a caption bar;
    ``faces``: (box, person name or None) drawn as white boxes with the name."""
    scale = min(1.0, max_side / max(photo.size))
    size = (max(1, round(photo.width * scale)), max(1, round(photo.height * scale)))
    canvas = photo.resize(size, Image.Resampling.LANCZOS).convert("RGBA")
    segmentation = record.get("segmentation")
    shown = shown_mask(record) if segmentation else None
    if segmentation and shown is not None:
        mask = np.asarray(Image.fromarray(shown[0]).resize(size, Image.Resampling.NEAREST))
        overlay = np.zeros((*mask.shape, 4), np.uint8)
        for c in segmentation["classes"]:
            if c["label"] != BACKGROUND:
                overlay[mask == c["index"]] = (*class_color(c["index"]), MASK_ALPHA)
        canvas = Image.alpha_composite(canvas, Image.fromarray(overlay, "RGBA"))
    draw = ImageDraw.Draw(canvas)
    sx, sy = size[0] / record["width"], size[1] / record["height"]
    for i, o in enumerate(record.get("objects") or []):
        color = class_color(i + 7)
        box = (o["x1"] * sx, o["y1"] * sy, o["x2"] * sx, o["y2"] * sy)
        draw.rectangle(box, outline=color, width=2)
        text = f"{o['label']} {o['score']:.2f}"
        left, top, right, bottom = draw.textbbox((box[0] + 2, box[1] + 1), text)
        draw.rectangle((left - 2, top - 1, right + 2, bottom + 1), fill=color)
        draw.text((box[0] + 2, box[1] + 1), text, fill=(0, 0, 0))
    for face_box, name in faces:
        scaled = (face_box[0] * sx, face_box[1] * sy, face_box[2] * sx, face_box[3] * sy)
        draw.rectangle(scaled, outline=(255, 255, 255), width=2)
        if name:
            left, top, right, bottom = draw.textbbox((scaled[0] + 2, scaled[3] + 2), name)
            draw.rectangle((left - 2, top - 1, right + 2, bottom + 1), fill=(255, 255, 255))
            draw.text((scaled[0] + 2, scaled[3] + 2), name, fill=(0, 0, 0))
    return _with_caption(canvas.convert("RGB"), _caption_lines(record, caption, shown))


def cutout(record: dict[str, Any], photo: Image.Image, word: str) -> Image.Image:
    """``photo`` (upright, full size) as RGBA with every pixel not of class ``word`` transparent.

    ``word`` is a segmentation class ("person") or a search word that maps to one ("people").
    Raises :class:`QueryError` if the photo has no such class in its mask.
    """
    segmentation = record.get("segmentation")
    if not segmentation:
        raise QueryError("this photo has no segmentation in the index (run `photos index` with segment)")
    names = {word.lower()} | {n.lower() for n in vocabulary.expand(word)}
    indices = [c["index"] for c in segmentation["classes"] if c["label"].lower() in names]
    if not indices:
        present = ", ".join(c["label"] for c in segmentation["classes"] if c["label"] != BACKGROUND) or "none"
        raise QueryError(f"no {word!r} in this photo's mask; classes present: {present}")
    shown, limited = shown_mask(record)
    if limited and not np.isin(shown, indices).any():
        raise QueryError(f"no detected {word!r} box in this photo: its segmenter "
                         f"({record['models']['segment']}) marks any foreground, so its mask is only "
                         "cut out inside the detector's boxes")
    mask = Image.fromarray(np.isin(shown, indices).astype(np.uint8) * 255, "L")
    rgba = photo.convert("RGBA")
    rgba.putalpha(mask.resize(photo.size, Image.Resampling.NEAREST))
    return rgba


def _caption_lines(record: dict[str, Any], caption: str,
                   shown: tuple[np.ndarray, bool] | None = None) -> list[str]:
    models = record.get("models") or {}
    lines = []
    if record.get("labels"):
        lines.append(f"classify ({models.get('classify', '?')}): "
                     + ", ".join(f"{x['label']} {x['score']:.2f}" for x in record["labels"][:3]))
    if record.get("objects") is not None:
        lines.append(f"detect ({models.get('detect', '?')}): {len(record['objects'])} boxes")
    if record.get("segmentation"):
        classes = sorted((c for c in record["segmentation"]["classes"] if c["label"] != BACKGROUND),
                         key=lambda c: -c["fraction"])
        line = (f"segment ({models.get('segment', '?')}): "
                + (", ".join(f"{c['label']} {c['fraction']:.0%}" for c in classes[:4]) or "background only"))
        if shown is not None and shown[1]:
            line += " (drawn inside detected boxes only: " + (", ".join(
                f"{c['label']} {float(np.mean(shown[0] == c['index'])):.0%}" for c in classes[:4]) or "none") + ")"
        lines.append(line)
    if describe(record.get("metadata")):
        lines.append(describe(record.get("metadata")))
    return lines + ([caption] if caption else [])


def _with_caption(image: Image.Image, lines: list[str]) -> Image.Image:
    if not lines:
        return image
    line_height = 14
    out = Image.new("RGB", (image.width, image.height + line_height * len(lines) + 8), (255, 255, 255))
    out.paste(image, (0, 0))
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((6, image.height + 4 + i * line_height), line, fill=(0, 0, 0))
    return out
