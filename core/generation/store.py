"""Generations on disk: one PNG per picture, a JSONL of everything else, a grid per task.

The one module that knows the layout of a generate stage's folder (and of
`mmgen generate --out`). `generations.jsonl` holds one Generation per line; a
picture (uint8 [H, W, 3]) is written as `{"png": "<relative path>"}`, any other
array as `{"npy": "<relative path>"}`, so `load_generations` gives back equal
objects (the evaluate stage reads them this way). Given the tokenizers, an item
whose tokenizer offers `files(item)` (suffix -> bytes: a sound's WAV and its
spectrogram) also gets those files under `media/<task>/`, for people to open;
nothing reads them back.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

from ..atomic import atomic_write_bytes, atomic_write_text
from ..batch import Generation
from .grid import generation_cell, is_picture, render_grid

JSONL = "generations.jsonl"
IMAGES = "images"
MEDIA = "media"


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _file_stem(index: int, key: str) -> str:
    return f"{index:05d}-{re.sub(r'[^A-Za-z0-9_.-]', '_', key)}"


def _encode(values: dict[str, Any], *, folder: Path, stem: str, side: str, root: Path) -> dict[str, Any]:
    encoded = {}
    for name, value in values.items():
        if is_picture(value):
            path = folder / f"{stem}-{side}-{name}.png"
            atomic_write_bytes(path, png_bytes(value))
            encoded[name] = {"png": path.relative_to(root).as_posix()}
        elif isinstance(value, np.ndarray):
            path = folder / f"{stem}-{side}-{name}.npy"
            buffer = io.BytesIO()
            np.save(buffer, value, allow_pickle=False)
            atomic_write_bytes(path, buffer.getvalue())
            encoded[name] = {"npy": path.relative_to(root).as_posix()}
        else:
            encoded[name] = value
    return encoded


def _decode(values: dict[str, Any], *, root: Path) -> dict[str, Any]:
    decoded = {}
    for name, value in values.items():
        if isinstance(value, dict) and set(value) == {"png"}:
            decoded[name] = np.asarray(Image.open(root / value["png"]).convert("RGB"))
        elif isinstance(value, dict) and set(value) == {"npy"}:
            decoded[name] = np.load(root / value["npy"], allow_pickle=False)
        else:
            decoded[name] = value
    return decoded


def _write_media(values: dict[str, Any], tokenizers: Mapping[str, Any], *, folder: Path, stem: str, side: str) -> None:
    for name, value in values.items():
        files = getattr(tokenizers.get(name), "files", None)
        if files is not None and not isinstance(value, str):
            for suffix, data in files(value).items():
                atomic_write_bytes(folder / f"{stem}-{side}-{name}.{suffix}", data)


def save_generations(
    generations: Sequence[Generation], out_dir: Path, *, tokenizers: Mapping[str, Any] | None = None
) -> Path:
    """Write PNGs and `generations.jsonl` under `out_dir` (and, with `tokenizers`, media files); returns the JSONL."""
    out_dir = Path(out_dir)
    lines = []
    for index, generation in enumerate(generations):
        folder = out_dir / IMAGES / generation.task
        stem = _file_stem(index, generation.key)
        if tokenizers:
            media = out_dir / MEDIA / generation.task
            _write_media(generation.inputs, tokenizers, folder=media, stem=stem, side="input")
            _write_media(generation.outputs, tokenizers, folder=media, stem=stem, side="output")
        lines.append(
            json.dumps(
                {
                    "task": generation.task,
                    "key": generation.key,
                    "inputs": _encode(generation.inputs, folder=folder, stem=stem, side="input", root=out_dir),
                    "outputs": _encode(generation.outputs, folder=folder, stem=stem, side="output", root=out_dir),
                    "reference": generation.reference,
                }
            )
        )
    path = out_dir / JSONL
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return path


def load_generations(out_dir: Path) -> list[Generation]:
    out_dir = Path(out_dir)
    path = out_dir / JSONL
    if not path.is_file():
        raise FileNotFoundError(f"no {JSONL} in {out_dir}: is it the folder of a generate stage?")
    generations = []
    for line in path.read_text(encoding="utf-8").splitlines():
        data = json.loads(line)
        generations.append(
            Generation(
                task=data["task"],
                key=data["key"],
                inputs=_decode(data["inputs"], root=out_dir),
                outputs=_decode(data["outputs"], root=out_dir),
                reference=data["reference"],
            )
        )
    return generations


def media_files(out_dir: Path) -> dict[str, list[Path]]:
    """The media files `save_generations` wrote under `out_dir`, by task (none: {})."""
    root = Path(out_dir) / MEDIA
    if not root.is_dir():
        return {}
    return {folder.name: sorted(p for p in folder.iterdir() if p.is_file()) for folder in sorted(root.iterdir())}


def write_grids(
    generations: Iterable[Generation], out_dir: Path, *, columns: int = 8, tokenizers: Mapping[str, Any] | None = None
) -> dict[str, Path]:
    """One `grid-<task>.png` per task; returns their paths by task."""
    by_task: dict[str, list[Generation]] = {}
    for generation in generations:
        by_task.setdefault(generation.task, []).append(generation)
    paths = {}
    for task, items in by_task.items():
        grid = render_grid([generation_cell(g, tokenizers=tokenizers) for g in items], columns=columns)
        paths[task] = Path(out_dir) / f"grid-{task}.png"
        atomic_write_bytes(paths[task], png_bytes(grid))
    return paths


def publish(
    generations: Sequence[Generation],
    out_dir: Path,
    *,
    tracker: Any = None,
    columns: int = 8,
    tokenizers: Mapping[str, Any] | None = None,
) -> Path:
    """Save generations, media files and grids under `out_dir` and log the JSONL, media and grids to `tracker`.

    `tokenizers` (by modality): items that are no pictures show in grids as their tokenizer's `picture` and
    get its `files` (media_files).
    """
    jsonl = save_generations(generations, out_dir, tokenizers=tokenizers)
    grids = write_grids(generations, out_dir, columns=columns, tokenizers=tokenizers)
    if tracker is not None:
        tracker.log_artifact(jsonl, artifact_path="generations")
        for task, path in grids.items():
            tracker.log_image(np.asarray(Image.open(path).convert("RGB")), file_name=f"generations/grid-{task}.png")
        for task, paths in media_files(out_dir).items():
            for path in paths:
                tracker.log_artifact(path, artifact_path=f"generations/{MEDIA}/{task}")
    return jsonl
