"""A corpus of good and broken image files, made on the spot, for the ingest tests."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def gradient(width: int = 8, height: int = 6) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    return Image.fromarray(np.stack([x * 30, y * 40, (x + y) * 10], axis=2).astype(np.uint8), mode="RGB")


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb)."""
    data = bytearray(encoded(Image.new("L", (1, 1)), "PNG"))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def exif_rotated_jpeg() -> bytes:
    """A 4x2 JPEG whose EXIF says: rotate 90 degrees clockwise to display (orientation 6)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encoded(Image.new("RGB", (4, 2), (200, 10, 10)), "JPEG", exif=exif.tobytes())


def broken_png() -> bytes:
    """A PNG of the right length whose compressed pixel data is damaged."""
    data = bytearray(encoded(gradient(16, 16), "PNG"))
    data[data.index(b"IDAT") + 10] ^= 0xFF
    return bytes(data)


def image_files() -> dict[str, bytes]:
    """name -> bytes for every kind of file the ingest must handle."""
    good_jpeg = encoded(gradient(), "JPEG", quality=90)
    return {
        "good.png": encoded(gradient(), "PNG"),
        "good.jpg": good_jpeg,
        "gray.png": encoded(Image.new("L", (5, 5), 120), "PNG"),
        "rgba.png": encoded(Image.new("RGBA", (5, 5), (255, 0, 0, 0)), "PNG"),
        "palette.png": encoded(gradient().convert("P"), "PNG"),
        "cmyk.jpg": encoded(Image.new("CMYK", (5, 5), (0, 255, 0, 0)), "JPEG"),
        "deep.png": encoded(Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)), "PNG"),
        "rotated.jpg": exif_rotated_jpeg(),
        "image.bmp": encoded(gradient(), "BMP"),
        "latin.png": encoded(gradient(3, 3), "PNG"),
        "blank_caption.png": encoded(gradient(3, 3), "PNG"),
        "truncated.jpg": good_jpeg[: len(good_jpeg) // 2],
        "broken.png": broken_png(),
        "garbage.png": bytes(range(256)) * 4,
        "notes.txt": b"these are notes, not an image\n",
        "empty.png": b"",
        "bomb.png": bomb_png(),
        "stray.png": encoded(gradient(2, 2), "PNG"),
    }


def write_corpus(folder: Path) -> Path:
    """The image folder plus captions.jsonl; returns the captions file."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in image_files().items():
        (folder / name).write_bytes(data)
    lines = [
        json.dumps({"image": name, "caption": f"a picture called {name}"}).encode()
        for name in (
            "good.png",
            "good.jpg",
            "gray.png",
            "rgba.png",
            "palette.png",
            "cmyk.jpg",
            "deep.png",
            "rotated.jpg",
            "image.bmp",
            "truncated.jpg",
            "broken.png",
            "garbage.png",
            "notes.txt",
            "empty.png",
            "bomb.png",
        )
    ]
    lines += [
        json.dumps({"image": "good.png", "caption": "a second caption", "source": "extra"}).encode(),
        b'{"image": "latin.png", "caption": "un caf\xe9 cr\xe8me"}',  # latin-1, not UTF-8
        json.dumps({"image": "blank_caption.png", "caption": "   "}).encode(),
        json.dumps({"id": "good.jpg", "image": "gray.png", "caption": "same id, other image"}).encode(),
        json.dumps({"image": "nothere.png", "caption": "its image is missing"}).encode(),
        b"{not json",
    ]
    captions = folder / "captions.jsonl"
    captions.write_bytes(b"\n".join(lines) + b"\n")
    return captions


# What the corpus must give: stored records, and per category the skipped / fixed counts.
EXPECTED_RECORDS = 10
EXPECTED_SKIPPED = {
    "corrupt or truncated image": 2,
    "not an image": 2,
    "empty file": 1,
    "too many pixels": 1,
    "no usable caption": 1,
    "duplicate id": 1,
    "missing image": 1,
    "bad row": 1,
    "no caption": 1,
}
EXPECTED_FIXED = {
    "converted grayscale (L) to RGB": 1,
    "flattened transparency (RGBA) onto white": 1,
    "converted palette (P) to RGB": 1,
    "converted CMYK (CMYK) to RGB": 1,
    "converted 16-bit (I;16) to 8-bit RGB": 1,
    "applied EXIF orientation 6": 1,
    "re-encoded BMP as PNG": 1,
    "caption not UTF-8": 1,
}
