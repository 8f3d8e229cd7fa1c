"""PNG grids of generations: images side by side, texts drawn under them (PIL default font)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import attrs
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..batch import Generation

BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)
REGION = (255, 0, 0)
FRAME = (200, 200, 200)


@attrs.frozen(kw_only=True)
class Cell:
    """One grid cell: images left to right, then lines of text under them."""

    images: tuple[np.ndarray, ...]
    lines: tuple[str, ...]


def is_picture(value: object) -> bool:
    """A value a grid can show: uint8 [H, W, 3]."""
    return isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim == 3 and value.shape[2] == 3


def shown(values: Mapping[str, Any], tokenizers: Mapping[str, Any] | None) -> list[np.ndarray]:
    """The pictures among `values` (by modality), and a picture of each other item whose tokenizer draws one
    (`picture(item)`: a sound's spectrogram)."""
    pictures = []
    for name, value in values.items():
        draw = getattr((tokenizers or {}).get(name), "picture", None)
        if is_picture(value):
            pictures.append(value)
        elif draw is not None and not isinstance(value, str):
            pictures.append(draw(value))
    return pictures


def generation_cell(generation: Generation, *, tokenizers: Mapping[str, Any] | None = None) -> Cell:
    """Given pictures (a region outlined) then generated ones; given texts, then generated texts.

    With `tokenizers` (by modality), an item that is no picture shows as its tokenizer's `picture` of it, if any.
    """
    region = generation.inputs.get("region")
    images = [outline(v, region) for v in shown(generation.inputs, tokenizers)]
    images += shown(generation.outputs, tokenizers)
    lines = [f"in: {v}" for v in generation.inputs.values() if isinstance(v, str)]
    lines += [f"out: {v}" for v in generation.outputs.values() if isinstance(v, str)]
    return Cell(images=tuple(images), lines=tuple(lines))


def outline(image: np.ndarray, region: Sequence[float] | None) -> np.ndarray:
    """A copy of `image` with the (top, left, bottom, right) fraction box drawn in red."""
    if region is None:
        return image
    height, width = image.shape[:2]
    top, left, bottom, right = region
    canvas = Image.fromarray(image)
    box = (left * width, top * height, right * width - 1, bottom * height - 1)
    ImageDraw.Draw(canvas).rectangle(box, outline=REGION)
    return np.asarray(canvas)


def wrap(text: str, *, width: float, font: ImageFont.ImageFont, draw: ImageDraw.ImageDraw) -> list[str]:
    """Greedy word wrap to `width` pixels; a word longer than a line gets a line of its own."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def render_grid(cells: Sequence[Cell], *, columns: int = 8, image_size: int = 128, padding: int = 6) -> np.ndarray:
    """The cells in rows of `columns`, each image scaled to `image_size` (nearest); uint8 [H, W, 3]."""
    if not cells:
        raise ValueError("a grid needs at least one cell")
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    per_cell = max(1, max(len(c.images) for c in cells))
    cell_width = per_cell * image_size + (per_cell - 1) * padding
    wrapped = [
        [line for text in c.lines for line in wrap(text, width=cell_width, font=font, draw=measure)] for c in cells
    ]
    line_height = int(font.getbbox("Ag")[3]) + 4
    text_height = max(len(lines) for lines in wrapped) * line_height
    cell_height = image_size + padding + text_height
    columns = min(columns, len(cells))
    rows = -(-len(cells) // columns)
    gap = 3 * padding  # between cells, wider than between the images of one cell
    canvas = Image.new("RGB", (columns * (cell_width + gap) + gap, rows * (cell_height + gap) + gap), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for index, (cell, lines) in enumerate(zip(cells, wrapped)):
        x = gap + (index % columns) * (cell_width + gap)
        y = gap + (index // columns) * (cell_height + gap)
        for k, image in enumerate(cell.images):
            tile = Image.fromarray(image).resize((image_size, image_size), Image.NEAREST)
            left = x + k * (image_size + padding)
            canvas.paste(tile, (left, y))
            # A frame just outside the tile, so white images stand apart from the white page.
            draw.rectangle((left - 1, y - 1, left + image_size, y + image_size), outline=FRAME)
        for k, line in enumerate(lines):
            draw.text((x, y + image_size + padding + k * line_height), line, fill=INK, font=font)
    return np.asarray(canvas)
