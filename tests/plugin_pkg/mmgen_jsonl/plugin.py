"""The example third-party plugin from mmgen's README: a tracker and a stage."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, ClassVar

import attrs

from mmgen.api import hookimpl


class JsonlTracker:
    """Appends every tracking event to one JSON-lines file."""

    name: ClassVar[str] = "jsonl"

    @attrs.frozen(kw_only=True)
    class Config:
        path: str = "mmgen-events.jsonl"

    def __init__(self, *, path: str) -> None:
        self.path = Path(path)

    @classmethod
    def from_config(cls, config: Config, **_: Any) -> JsonlTracker:
        return cls(path=config.path)

    def _write(self, event: str, **fields: Any) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"event": event, "time": time.time(), **fields}) + "\n")

    def start(self, *, run_name, tags=None):
        self._write("start", run_name=run_name, tags=dict(tags or {}))

    def log_params(self, params):
        self._write("params", params={k: str(v) for k, v in params.items()})

    def log_metrics(self, metrics, *, step=None):
        self._write("metrics", step=step, metrics={k: float(v) for k, v in metrics.items()})

    def log_artifact(self, path, *, artifact_path=None):
        self._write("artifact", path=str(path))

    def log_text(self, text, *, file_name):
        self._write("text", file_name=file_name, text=text)

    def log_image(self, image, *, file_name):
        self._write("image", file_name=file_name, shape=list(getattr(image, "shape", [])))

    def end(self, *, status="FINISHED"):
        self._write("end", status=status)


class NoteStage:
    """Writes a note into its artefact folder and logs it."""

    name: ClassVar[str] = "note"

    @attrs.frozen(kw_only=True)
    class Config:
        text: str
        repeat: int = 1

    def __init__(self, *, text: str, repeat: int = 1) -> None:
        self.text, self.repeat = text, repeat

    @classmethod
    def from_config(cls, config: Config, **_: Any) -> NoteStage:
        return cls(text=config.text, repeat=config.repeat)

    def run(self, ctx) -> None:
        note = "\n".join([self.text] * self.repeat)
        (ctx.out_dir / "note.txt").write_text(note)
        ctx.tracker.log_text(note, file_name="note.txt")
        ctx.tracker.log_metrics({"note_chars": len(note)})


@hookimpl
def register_trackers(register):
    register(JsonlTracker)


@hookimpl
def register_stages(register):
    register(NoteStage)
