"""Sampling and drawing Shapes scenes (docs/shapes.md, "Images").

Anti-aliasing is exact area coverage estimated on a supersampling grid, so a
fully covered pixel has exactly its object's colour and an edge pixel lies on
the line between that colour and the white background.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

from .scene import ObjectSpec, Scene, SceneObject
from .spec import BACKGROUND, CANVAS_SIZES, CELLS, GRID, JITTER, MAX_OBJECTS, PALETTE, SIZES, all_pairs

SUPERSAMPLE = 8


def object_side(size_name: str, canvas: int) -> float:
    return SIZES[size_name] * canvas


def cell_center(cell: str, canvas: int) -> tuple[float, float]:
    row, column = divmod(CELLS.index(cell), GRID)
    step = canvas / GRID
    return (column + 0.5) * step, (row + 0.5) * step


def inside(shape: str, dx: np.ndarray, dy: np.ndarray, side: float) -> np.ndarray:
    """Whether points at offsets (dx, dy) from the box centre lie in `shape` of that side."""
    half = side / 2
    in_box = (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "square":
        return in_box
    if shape == "circle":
        return dx * dx + dy * dy <= half * half
    if shape == "triangle":
        # Apex at the top centre, base on the bottom edge: half-width grows from 0 to side/2.
        return in_box & (np.abs(dx) <= (dy + half) / 2)
    if shape == "cross":
        bar = side / 6  # each bar is one third of the box thick
        return in_box & ((np.abs(dx) <= bar) | (np.abs(dy) <= bar))
    raise ValueError(f"unknown shape {shape!r}")


def coverage(
    shape: str,
    *,
    center: tuple[float, float],
    side: float,
    origin: tuple[int, int],
    extent: tuple[int, int],
    supersample: int = SUPERSAMPLE,
) -> np.ndarray:
    """Covered fraction of each pixel of the window at `origin` (x, y) of `extent` (width, height)."""
    width, height = extent
    offsets = (np.arange(supersample) + 0.5) / supersample
    xs = (origin[0] + np.arange(width)[:, None] + offsets[None, :]).reshape(-1) - center[0]
    ys = (origin[1] + np.arange(height)[:, None] + offsets[None, :]).reshape(-1) - center[1]
    hits = inside(shape, xs[None, :], ys[:, None], side)
    return hits.reshape(height, supersample, width, supersample).mean(axis=(1, 3))


def object_window(center: tuple[float, float], side: float, canvas: int) -> tuple[int, int, int, int]:
    """(x0, y0, width, height): the pixels that can be touched, plus a one-pixel margin, clipped."""
    half = side / 2
    x0 = max(0, math.floor(center[0] - half) - 1)
    y0 = max(0, math.floor(center[1] - half) - 1)
    x1 = min(canvas, math.ceil(center[0] + half) + 1)
    y1 = min(canvas, math.ceil(center[1] + half) + 1)
    return x0, y0, x1 - x0, y1 - y0


def object_coverage(spec: ObjectSpec, center: tuple[float, float], canvas: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The object's coverage window and its origin (x0, y0)."""
    side = object_side(spec.size, canvas)
    x0, y0, width, height = object_window(center, side, canvas)
    cov = coverage(spec.shape, center=center, side=side, origin=(x0, y0), extent=(width, height))
    return cov, (x0, y0)


def touched_bbox(cov: np.ndarray, origin: tuple[int, int]) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(cov.any(axis=1))
    columns = np.flatnonzero(cov.any(axis=0))
    x0, y0 = origin
    return (x0 + int(columns[0]), y0 + int(rows[0]), x0 + int(columns[-1]) + 1, y0 + int(rows[-1]) + 1)


def place(spec: ObjectSpec, center: tuple[float, float], canvas: int) -> SceneObject:
    """A SceneObject with its touched-pixel bbox computed from the rendering."""
    cov, origin = object_coverage(spec, center, canvas)
    return SceneObject(spec=spec, center=center, bbox=touched_bbox(cov, origin))


def sample_scene(
    rng: np.random.Generator,
    *,
    size: int,
    max_objects: int,
    allowed_pairs: Iterable[tuple[str, str]] | None = None,
    required_pairs: Iterable[tuple[str, str]] | None = None,
) -> Scene:
    """Draw 1..max_objects objects in distinct cells.

    Each object's (colour, shape) comes from `allowed_pairs` (default: all); with
    `required_pairs`, one object (at a random position in the list) comes from those.
    """
    if size not in CANVAS_SIZES:
        raise ValueError(f"canvas size must be one of {CANVAS_SIZES}, got {size}")
    if not 1 <= max_objects <= MAX_OBJECTS:
        raise ValueError(f"max_objects must be in 1..{MAX_OBJECTS}, got {max_objects}")
    # Sorted, so a set given by the caller yields the same scene for the same seed.
    allowed = sorted(all_pairs() if allowed_pairs is None else allowed_pairs)
    required = sorted(required_pairs) if required_pairs is not None else []
    if not allowed:
        raise ValueError("allowed_pairs is empty")
    count = int(rng.integers(1, max_objects + 1))
    cells = rng.choice(len(CELLS), size=count, replace=False)
    required_slot = int(rng.integers(count)) if required else -1
    size_names = tuple(SIZES)
    objects = []
    for slot, cell_index in enumerate(cells):
        pairs = required if slot == required_slot else allowed
        colour, shape = pairs[int(rng.integers(len(pairs)))]
        size_name = size_names[int(rng.integers(len(size_names)))]
        jitter = rng.uniform(-JITTER * size, JITTER * size, size=2)
        cx, cy = cell_center(CELLS[cell_index], size)
        spec = ObjectSpec(shape=shape, colour=colour, size=size_name, cell=CELLS[cell_index])
        objects.append(place(spec, (float(cx + jitter[0]), float(cy + jitter[1])), size))
    return Scene(size=size, objects=tuple(objects))


def render(scene: Scene, size: int | None = None) -> np.ndarray:
    """The scene as uint8 [S, S, 3] pixels (S = scene.size)."""
    canvas = scene.size if size is None else size
    if canvas != scene.size:
        raise ValueError(f"scene was laid out for a {scene.size}px canvas, asked to render at {canvas}px")
    background = np.asarray(BACKGROUND, dtype=np.float64)
    image = np.empty((canvas, canvas, 3), dtype=np.float64)
    image[:] = background
    for obj in scene.objects:
        cov, (x0, y0) = object_coverage(obj.spec, obj.center, canvas)
        window = image[y0 : y0 + cov.shape[0], x0 : x0 + cov.shape[1]]
        colour = np.asarray(PALETTE[obj.spec.colour], dtype=np.float64)
        # Objects never overlap, but at S=32 two can share an edge pixel: each
        # takes its own share of the pixel's area from the background.
        window += cov[..., None] * (colour - background)
    return np.rint(image).astype(np.uint8)


def render_specs(specs: Sequence[ObjectSpec], size: int) -> np.ndarray:
    """Render objects at their cell centres (no jitter): a canonical picture of a prompt."""
    return render(Scene(size=size, objects=tuple(place(s, cell_center(s.cell, size), size) for s in specs)))
