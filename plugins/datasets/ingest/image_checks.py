"""Robust image intake: reject what cannot be used, convert what can, keep good bytes untouched.

A clean 8-bit RGB PNG or JPEG without EXIF rotation is stored byte for byte.
Anything else that decodes is converted to 8-bit RGB (EXIF rotation applied,
alpha flattened onto white, 16-bit scaled down) and stored as a lossless PNG; each
change is named in `fixes`. What cannot be decoded raises `BadItem` with the reason.
"""

from __future__ import annotations

import io
import warnings

import attrs
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Above this many pixels an image is treated as a decompression bomb (PIL warns at 89M).
DEFAULT_MAX_PIXELS = 50_000_000
KEPT_FORMATS = ("PNG", "JPEG")
EXIF_ORIENTATION = 0x0112
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class BadItem(Exception):
    """An item that cannot be ingested; the message is the reason, "category: detail"."""


@attrs.frozen(kw_only=True)
class CheckedImage:
    data: bytes
    width: int
    height: int
    fixes: tuple[str, ...] = ()


def open_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Decode fully (so truncation shows now), refusing bombs before any pixel is decoded."""
    if not data:
        raise BadItem("empty file")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise BadItem("not an image") from None
    except Image.DecompressionBombError as exc:
        raise BadItem(f"too many pixels: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadItem(f"corrupt or truncated image: {exc}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise BadItem(f"too many pixels: {width}x{height} is over the limit of {max_pixels}")
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadItem(f"corrupt or truncated image: {exc}") from None
    return image


def png_bit_depth(data: bytes) -> int | None:
    if data.startswith(PNG_SIGNATURE) and len(data) > 24:
        return data[24]
    return None


def sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    values = np.asarray(image, dtype=np.float64)
    eight = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
    return Image.fromarray(eight).convert("RGB")


def to_rgb(image: Image.Image, fixes: list[str]) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode == "I":
        fixes.append(f"converted 16-bit ({mode}) to 8-bit RGB")
        return sixteen_bit_to_rgb(image)
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info):
        fixes.append(f"flattened transparency ({mode}) onto white")
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    names = {"L": "grayscale", "1": "black-and-white", "P": "palette", "CMYK": "CMYK", "YCbCr": "YCbCr"}
    fixes.append(f"converted {names.get(mode, mode)} ({mode}) to RGB")
    return image.convert("RGB")


def check_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> CheckedImage:
    """The bytes to store for an image, and what had to change; raises BadItem."""
    # Decoders warn about damaged metadata they work around; the result is what counts.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _check_image(data, max_pixels=max_pixels)


def _check_image(data: bytes, *, max_pixels: int) -> CheckedImage:
    image = open_image(data, max_pixels=max_pixels)
    source_format = image.format
    fixes: list[str] = []
    orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    if orientation not in (1, None):
        image = ImageOps.exif_transpose(image)
        fixes.append(f"applied EXIF orientation {orientation}")
    if png_bit_depth(data) == 16 and image.mode == "RGB":
        fixes.append("converted 16-bit RGB to 8-bit")
    image = to_rgb(image, fixes)
    if source_format not in KEPT_FORMATS:
        fixes.append(f"re-encoded {source_format} as PNG")
    if not fixes:
        return CheckedImage(data=data, width=image.width, height=image.height)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return CheckedImage(data=buffer.getvalue(), width=image.width, height=image.height, fixes=tuple(fixes))
