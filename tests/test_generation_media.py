"""Generated items that are no pictures (a sound): shown in grids as their tokenizer's picture, kept as its files.

The core knows no modality: a tokenizer offering `picture(item)` and `files(item)`
is all it takes for grids to show its items and for publish to write and log them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mmgen.api import Generation, load_generations, media_files, publish
from mmgen.generation.grid import generation_cell


class ToneTokenizer:
    """Stands in for a sound tokenizer: a picture of a level (a solid colour), files of its value."""

    modality = "tone"

    def picture(self, item: Any) -> np.ndarray:
        return np.full((4, 6, 3), (10, int(item[0]), 30), np.uint8)

    def files(self, item: Any) -> dict[str, bytes]:
        return {"wav": f"RIFF{int(item[0])}".encode(), "txt": b"tone"}


class Recorder:
    def __init__(self) -> None:
        self.artifacts: list[tuple[str, str | None]] = []
        self.images: list[str] = []

    def log_artifact(self, path: Path, *, artifact_path: str | None = None) -> None:
        self.artifacts.append((Path(path).name, artifact_path))

    def log_image(self, image: Any, *, file_name: str, **_: Any) -> None:
        self.images.append(file_name)


def generations() -> list[Generation]:
    return [
        Generation(task="t2a", key=f"k{i}", inputs={"text": f"tone {i}"}, outputs={"tone": np.array([100.0 + i], np.float32)})
        for i in range(2)
    ]


def test_a_cell_shows_the_tokenizers_picture_of_an_item_that_is_no_picture():
    (made, _) = generations()
    assert generation_cell(made).images == ()  # without tokenizers: only pictures show
    cell = generation_cell(made, tokenizers={"tone": ToneTokenizer()})
    assert len(cell.images) == 1 and cell.images[0][0, 0].tolist() == [10, 100, 30]
    assert cell.lines == ("in: tone 0",)


def test_publish_writes_and_logs_the_tokenizers_files_and_keeps_generations_loadable(tmp_path):
    tracker = Recorder()
    jsonl = publish(generations(), tmp_path / "out", tracker=tracker, tokenizers={"tone": ToneTokenizer()})
    files = media_files(tmp_path / "out")
    assert {task: [p.name for p in paths] for task, paths in files.items()} == {
        "t2a": ["00000-k0-output-tone.txt", "00000-k0-output-tone.wav", "00001-k1-output-tone.txt", "00001-k1-output-tone.wav"]
    }
    assert files["t2a"][1].read_bytes() == b"RIFF100"
    assert ("00001-k1-output-tone.wav", "generations/media/t2a") in tracker.artifacts
    assert tracker.images == ["generations/grid-t2a.png"]
    loaded = load_generations(jsonl.parent)
    assert [g.outputs["tone"].tolist() for g in loaded] == [[100.0], [101.0]]
    # The grid holds the tone pictures' colour: the picture was drawn into it.
    from PIL import Image

    grid = np.asarray(Image.open(tmp_path / "out" / "grid-t2a.png").convert("RGB"))
    assert (grid.reshape(-1, 3) == [10, 100, 30]).all(axis=1).any()


def test_without_tokenizers_nothing_but_the_jsonl_and_grid_is_written(tmp_path):
    publish(generations(), tmp_path / "out")
    assert media_files(tmp_path / "out") == {}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["generations.jsonl", "grid-t2a.png", "images"]
