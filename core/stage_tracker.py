"""The tracker a stage sees: the run's tracker, with every name the stage logs under the stage's key.

One run holds every stage, so names need their stage to be told apart and
grouped: the trainer logs `loss` and the run holds `train/loss` (or
`clip/loss` for the clip stage); the cache stage logs `test/records` and the
run holds `cache/test/records`. Files go the same way: `generate`'s
`grid-t2i.png` is kept as `generate/grid-t2i.png`, an artefact logged without
a folder lands in `<key>/`.

A name that already starts with `<key>/` (or is `<key>`) is kept as it is, so
code that names things in full (a helper also used outside a recipe, a
tokenizer that prefixes its own metrics) never doubles the prefix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class StageTracker:
    """Passes a stage's logging to the run's tracker, each name under `<key>/`; the run's start and end stay
    with the runner."""

    def __init__(self, tracker: Any, *, key: str) -> None:
        self.tracker = tracker
        self.key = key

    def name(self, name: str) -> str:
        """`name` under this stage's key: `loss` -> `train/loss`; `train/loss` stays `train/loss`."""
        if name == self.key or name.startswith(f"{self.key}/"):
            return name
        return f"{self.key}/{name}"

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.tracker.log_params({self.name(k): v for k, v in params.items()})

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        self.tracker.log_metrics({self.name(k): v for k, v in metrics.items()}, step=step)

    def log_artifact(self, path: Path, *, artifact_path: str | None = None) -> None:
        self.tracker.log_artifact(path, artifact_path=self.key if artifact_path is None else self.name(artifact_path))

    def log_text(self, text: str, *, file_name: str) -> None:
        self.tracker.log_text(text, file_name=self.name(file_name))

    def log_image(self, image: Any, *, file_name: str, key: str | None = None, step: int | None = None) -> None:
        # Only what the stage gave: a tracker that keeps no image series need not take `key` and `step`.
        series = {} if key is None else {"key": self.name(key), "step": step}
        self.tracker.log_image(image, file_name=self.name(file_name), **series)

    def log_table(self, data: Mapping[str, Sequence[Any]], *, file_name: str) -> None:
        self.tracker.log_table(data, file_name=self.name(file_name))
