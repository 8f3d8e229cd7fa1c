"""A contact sheet: a grid of a store's images, each with its first caption underneath."""

from __future__ import annotations

import io
import textwrap
from typing import Iterable

from PIL import Image, ImageDraw, ImageFont

CAPTION_LINES = 3


def tile(record, *, size: int, font: ImageFont.ImageFont) -> Image.Image:
    line_height = font.getbbox("Ag")[3] + 2
    card = Image.new("RGB", (size, size + CAPTION_LINES * line_height + 4), "white")
    try:
        image = Image.open(io.BytesIO(record.data)).convert("RGB")
        scale = size / max(image.size)
        # Small images (Shapes at 32 px) are blown up with sharp pixels, large ones shrunk smoothly.
        resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample)
        card.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    except OSError:
        ImageDraw.Draw(card).text((4, size // 2), "(not an image)", fill="red", font=font)
    caption = record.captions[0] if record.captions else "(no caption)"
    width = max(8, size // max(1, int(font.getlength("n"))))
    lines = textwrap.wrap(caption, width=width)[:CAPTION_LINES]
    draw = ImageDraw.Draw(card)
    for row, line in enumerate(lines):
        draw.text((2, size + 2 + row * line_height), line, fill="black", font=font)
    return card


def contact_sheet(records: Iterable, *, columns: int = 4, size: int = 128) -> Image.Image:
    """The records' tiles in rows of `columns`, separated by a grey gutter."""
    font = ImageFont.load_default()
    tiles = [tile(r, size=size, font=font) for r in records]
    if not tiles:
        raise ValueError("no records to draw")
    gap = 4
    rows = (len(tiles) + columns - 1) // columns
    width, height = tiles[0].size
    sheet = Image.new("RGB", (columns * (width + gap) + gap, rows * (height + gap) + gap), (200, 200, 200))
    for i, card in enumerate(tiles):
        row, column = divmod(i, columns)
        sheet.paste(card, (gap + column * (width + gap), gap + row * (height + gap)))
    return sheet
