"""A tracker that keeps nothing (`tracker: {use: none}`); it only echoes to the debug log."""

from __future__ import annotations

import logging
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs

log = logging.getLogger(__name__)


class NoneTracker:
    name: ClassVar[str] = "none"

    @attrs.frozen(kw_only=True)
    class Config:
        """No options."""

    @classmethod
    def from_config(cls, config: Config, **_: Any) -> NoneTracker:
        return cls()

    def start(
        self,
        *,
        run_name: str,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
        run_id: str | None = None,
    ) -> None:
        log.debug("run %s started (not tracked)", run_name)

    def log_params(self, params: Mapping[str, Any]) -> None:
        log.debug("params: %d", len(params))

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        log.debug("step %s: %s", step, dict(metrics))

    def log_artifact(self, path: Path, *, artifact_path: str | None = None) -> None:
        log.debug("artefact %s (not kept)", path)

    def log_text(self, text: str, *, file_name: str) -> None:
        log.debug("text %s (not kept)", file_name)

    def log_image(self, image: Any, *, file_name: str, key: str | None = None, step: int | None = None) -> None:
        log.debug("image %s (not kept)", file_name)

    def log_table(self, data: Mapping[str, Sequence[Any]], *, file_name: str) -> None:
        log.debug("table %s: %d columns (not kept)", file_name, len(data))

    def end(self, *, status: str = "FINISHED") -> None:
        log.debug("run ended: %s", status)
