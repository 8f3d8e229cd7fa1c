"""The constants of the Shapes specification (docs/shapes.md), in one place.

Everything a renderer, a caption writer or an independent checker needs.
"""

from __future__ import annotations

CANVAS_SIZES = (32, 64, 128)
BACKGROUND = (255, 255, 255)
GRID = 3

# Row by row, so cell index = 3 * row + column.
CELLS = (
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)

# Side of an object's bounding box as a fraction of the canvas side.
SIZES = {"small": 0.16, "large": 0.28}

SHAPES = ("circle", "square", "triangle", "cross")

PALETTE = {
    "red": (230, 25, 75),
    "green": (60, 180, 75),
    "blue": (0, 130, 200),
    "yellow": (255, 225, 25),
    "purple": (145, 30, 180),
    "orange": (245, 130, 48),
}
COLOURS = tuple(PALETTE)

# Centre offset from the cell centre, at most this fraction of the canvas, per axis.
JITTER = 0.02
MAX_OBJECTS = 3


def cell_row_column(cell: str) -> tuple[int, int]:
    """(row, column) of a named cell, both in 0..2."""
    return divmod(CELLS.index(cell), GRID)


def all_pairs() -> tuple[tuple[str, str], ...]:
    """Every (colour, shape) combination."""
    return tuple((colour, shape) for colour in COLOURS for shape in SHAPES)


def parse_pair(text: str) -> tuple[str, str]:
    """'yellow triangle' -> ('yellow', 'triangle'); raises ValueError on anything else."""
    words = text.split()
    if len(words) != 2 or words[0] not in PALETTE or words[1] not in SHAPES:
        raise ValueError(f"{text!r} is not '<colour> <shape>' with colour in {COLOURS} and shape in {SHAPES}")
    return words[0], words[1]
