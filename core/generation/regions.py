"""Image regions for inpainting, outpainting and editing, as token masks.

A region is a box (top, left, bottom, right) in fractions of the image, so the
same box fits any token grid; a token belongs to it when its cell overlaps it.
The MAGVLT demo masks the centre 8x8 of a 16x16 grid: `CENTRE`.
"""

from __future__ import annotations

import math

import torch

Box = tuple[float, float, float, float]
CENTRE: Box = (0.25, 0.25, 0.75, 0.75)


def check_box(box: Box) -> Box:
    top, left, bottom, right = box
    if not (0.0 <= top < bottom <= 1.0 and 0.0 <= left < right <= 1.0):
        raise ValueError(
            f"region (top, left, bottom, right) needs 0 <= top < bottom <= 1 and 0 <= left < right <= 1, got {box}"
        )
    return box


def box_mask(box: Box, grid: tuple[int, int]) -> torch.Tensor:
    """[rows * columns] bool, row-major: True at tokens whose cell overlaps `box`."""
    top, left, bottom, right = check_box(box)
    rows, columns = grid
    mask = torch.zeros(rows, columns, dtype=torch.bool)
    mask[math.floor(top * rows) : math.ceil(bottom * rows), math.floor(left * columns) : math.ceil(right * columns)] = (
        True
    )
    return mask.flatten()


def parse_box(text: str) -> Box:
    """`"0.25,0.25,0.75,0.75"` -> a checked box."""
    parts = text.split(",")
    if len(parts) != 4:
        raise ValueError(f"region must be four numbers top,left,bottom,right; got {text!r}")
    try:
        box = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"region must be four numbers top,left,bottom,right; got {text!r}") from None
    return check_box(box)  # type: ignore[arg-type]
