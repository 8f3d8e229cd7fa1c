"""The image oracle: recover a Shapes scene's objects from pixels alone.

Per grid cell (objects never leave their cell): foreground = pixels clearly off
white; the largest connected blob is the object. Colour: the palette colour whose
blend line with white passes nearest the median of the blob's most saturated
pixels. Coverage (alpha) of each pixel: its position on the line from white to
that colour, which is exactly how the renderer anti-aliases. Size: the summed
coverage (the object's area, which blur and anti-aliasing preserve) against a
threshold between the largest small and the smallest large object. Shape: the
best soft IoU against rendered templates of that size, searched over sub-pixel
centres, sharp or softened. Exact on clean renders; the tolerances are for blur,
JPEG and VQ-GAN reconstructions (see robustness.py for measurements).
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from .render import coverage
from .scene import ObjectSpec
from .spec import BACKGROUND, CELLS, GRID, PALETTE, SHAPES, SIZES

WHITE = np.asarray(BACKGROUND, dtype=np.float64)
PALETTE_ARRAY = np.asarray(list(PALETTE.values()), dtype=np.float64)
# A share of the smallest palette colour's distance from white (yellow, ~232): low, because
# JPEG's chroma subsampling fades small yellow objects; faint blobs are then rejected by area.
FOREGROUND_DISTANCE = 0.3 * float(np.linalg.norm(PALETTE_ARRAY - WHITE, axis=1).min())
# A blob smaller than this share of the smallest object's area (a small triangle) is noise.
MIN_AREA_SHARE = 0.3
# ... and a blob whose summed coverage is below this share of that area is a smear.
MIN_MASS_SHARE = 0.6
# The lightest blend of a colour with white still read as that colour.
MIN_BLEND = 0.5
# Covered area (a share of the canvas area) between the largest small object (a square)
# and the smallest large one (a triangle, half its box): blur and anti-aliasing keep area.
SIZE_AREA_THRESHOLD = float(np.sqrt(SIZES["small"] ** 2 * 0.5 * SIZES["large"] ** 2))
# Centre search around the profile centroid: wider in y, where a triangle's apex biases the estimate.
COARSE_X_OFFSETS = np.arange(-1.0, 1.01, 0.5)
COARSE_Y_OFFSETS = np.arange(-1.5, 1.51, 0.5)
FINE_OFFSETS = np.array([-0.25, 0.0, 0.25])
COARSE_SUPERSAMPLE = 2
FINE_SUPERSAMPLE = 4
# Template softenings tried besides the sharp one (Gaussian sigma, pixels).
BLUR_SIGMAS = (0.6, 1.2)


def as_canvas(pixels: np.ndarray, size: int) -> np.ndarray:
    """Float [size, size, 3]; other resolutions are resampled to the spec's canvas."""
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected pixels [H, W, 3], got shape {pixels.shape}")
    if pixels.shape[:2] != (size, size):
        image = Image.fromarray(np.asarray(pixels, dtype=np.uint8)).resize((size, size), Image.Resampling.BOX)
        pixels = np.asarray(image)
    return pixels.astype(np.float64)


def cell_bounds(cell_index: int, size: int) -> tuple[slice, slice]:
    """Rows and columns of the pixels whose centres lie in the cell."""
    row, column = divmod(cell_index, GRID)
    step = size / GRID

    def span(k: int) -> slice:
        return slice(int(np.ceil(k * step - 0.5)), int(np.ceil((k + 1) * step - 0.5)))

    return span(row), span(column)


def nearest_colour(rgb: np.ndarray) -> str:
    """The palette colour whose blend line with white passes nearest `rgb`.

    A blurred or small object never reaches its full colour; it stays on that line.
    Near white all lines meet, so blends lighter than MIN_BLEND are not considered.
    """
    directions = PALETTE_ARRAY - WHITE
    t = np.clip(((rgb - WHITE) @ directions.T) / np.einsum("ij,ij->i", directions, directions), MIN_BLEND, 1.0)
    nearest = WHITE + t[:, None] * directions
    return tuple(PALETTE)[int(np.argmin(np.linalg.norm(nearest - rgb, axis=1)))]


def alpha_for(pixels: np.ndarray, colour: str) -> np.ndarray:
    """Each pixel's coverage, read as its position on the segment white -> colour."""
    direction = WHITE - np.asarray(PALETTE[colour], dtype=np.float64)
    alpha = ((WHITE - pixels) @ direction) / float(direction @ direction)
    return np.clip(alpha, 0.0, 1.0)


def soft_iou(alpha: np.ndarray, template: np.ndarray) -> float:
    union = np.maximum(alpha, template).sum()
    return float(np.minimum(alpha, template).sum() / union) if union > 0 else 0.0


def fine_score(alpha: np.ndarray, template: np.ndarray) -> float:
    """Overlap with the template, sharp or softened as blur, JPEG or a decoder would soften it."""
    return max(soft_iou(alpha, template), *(soft_iou(alpha, ndimage.gaussian_filter(template, s)) for s in BLUR_SIGMAS))


def best_shape(alpha: np.ndarray, origin: tuple[int, int], center: tuple[float, float], side: float) -> str:
    """The shape whose template, at the best sub-pixel centre near `center`, overlaps `alpha` most."""
    extent = (alpha.shape[1], alpha.shape[0])

    def score(shape: str, cx: float, cy: float, supersample: int) -> float:
        template = coverage(shape, center=(cx, cy), side=side, origin=origin, extent=extent, supersample=supersample)
        return soft_iou(alpha, template)

    best = (-1.0, SHAPES[0])
    for shape in SHAPES:
        # A cheap coarse search finds the centre, a finer rendering scores the shape there.
        _, cx, cy = max(
            (score(shape, center[0] + dx, center[1] + dy, COARSE_SUPERSAMPLE), center[0] + dx, center[1] + dy)
            for dx in COARSE_X_OFFSETS
            for dy in COARSE_Y_OFFSETS
        )
        fine = max(
            fine_score(
                alpha,
                coverage(
                    shape,
                    center=(cx + dx, cy + dy),
                    side=side,
                    origin=origin,
                    extent=extent,
                    supersample=FINE_SUPERSAMPLE,
                ),
            )
            for dx in FINE_OFFSETS
            for dy in FINE_OFFSETS
        )
        best = max(best, (fine, shape), key=lambda item: item[0])
    return best[1]


def read_cell(pixels: np.ndarray, distance: np.ndarray, cell_index: int, size: int) -> ObjectSpec | None:
    rows, columns = cell_bounds(cell_index, size)
    labels, count = ndimage.label(distance[rows, columns] > FOREGROUND_DISTANCE)
    if count == 0:
        return None
    areas = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, count + 1))
    blob = labels == 1 + int(np.argmax(areas))
    smallest_area = 0.5 * (SIZES["small"] * size) ** 2
    if blob.sum() < MIN_AREA_SHARE * smallest_area:
        return None

    cell_pixels = pixels[rows, columns]
    blob_distance = distance[rows, columns][blob]
    saturated = blob_distance >= 0.8 * np.percentile(blob_distance, 90)
    colour = nearest_colour(np.median(cell_pixels[blob][saturated], axis=0))

    # Keep the anti-aliased fringe around the blob, drop other specks in the cell.
    near_blob = ndimage.binary_dilation(blob, iterations=3)
    alpha = np.where(near_blob, alpha_for(cell_pixels, colour), 0.0)
    if alpha.sum() < MIN_MASS_SHARE * smallest_area:
        return None  # faint: compression ringing or blur spilling over from the next cell
    column_profile, row_profile = alpha.max(axis=0), alpha.max(axis=1)
    size_name = "small" if alpha.sum() < SIZE_AREA_THRESHOLD * size * size else "large"

    origin = (columns.start, rows.start)
    xs = origin[0] + np.arange(alpha.shape[1]) + 0.5
    ys = origin[1] + np.arange(alpha.shape[0]) + 0.5
    center = (float(column_profile @ xs / column_profile.sum()), float(row_profile @ ys / row_profile.sum()))
    shape = best_shape(alpha, origin, center, SIZES[size_name] * size)
    return ObjectSpec(shape=shape, colour=colour, size=size_name, cell=CELLS[cell_index])


def read_image(pixels: np.ndarray, *, size: int) -> list[ObjectSpec]:
    """The objects in an image, in cell order (top left first)."""
    canvas = as_canvas(pixels, size)
    distance = np.linalg.norm(WHITE - canvas, axis=2)
    found = (read_cell(canvas, distance, index, size) for index in range(len(CELLS)))
    return [spec for spec in found if spec is not None]
