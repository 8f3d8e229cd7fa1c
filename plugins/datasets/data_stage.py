"""The `data` recipe stage: a dataset plugin's splits ingested into `<out_dir>/<split>.lmdb` stores."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import attrs

from mmgen.api import MissingSplitError, Spec, StageContext, component

from .ingest.image_checks import DEFAULT_MAX_PIXELS

log = logging.getLogger(__name__)


class DataSplits:
    """A data stage's output: one record store per split (what later stages get from `ctx.inputs.load`)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def splits(self) -> list[str]:
        return sorted(p.name[: -len(".lmdb")] for p in self.directory.glob("*.lmdb"))

    def path(self, split: str) -> Path:
        return self.directory / f"{split}.lmdb"

    def records(self, split: str) -> Any:
        """The split's store: a map-style sequence of Records (random access; iterating reads them in order)."""
        from .lmdb_store import LmdbStore

        if not self.path(split).exists():
            raise MissingSplitError(
                f"the data stage wrote no {split!r} split ({self.path(split)} is missing; it has {self.splits()})"
            )
        return LmdbStore(self.path(split))


class DataStage:
    """Runs the same ingestion as `mmgen data ingest dataset`, so recipe data gets the same checks."""

    name: ClassVar[str] = "data"

    @attrs.frozen(kw_only=True)
    class Config:
        dataset: Spec = component("datasets")
        splits: tuple[str, ...] = ()  # empty: every split the dataset has
        max_pixels: int = DEFAULT_MAX_PIXELS

    def __init__(self, *, config: Config) -> None:
        self.config = config

    @classmethod
    def from_config(cls, config: Config, **_deps: Any) -> DataStage:
        return cls(config=config)

    @classmethod
    def load(cls, directory: Path, **_: Any) -> DataSplits:
        return DataSplits(directory)

    def run(self, ctx: StageContext) -> None:
        from .ingest.dataset_source import dataset_candidates, split_size
        from .ingest.pipeline import ingest

        dataset = ctx.registry.build(self.config.dataset)
        splits = self.config.splits or tuple(dataset.splits())
        unknown = [s for s in splits if s not in dataset.splits()]
        if unknown:
            raise MissingSplitError(
                f"data stage: dataset {self.config.dataset.use!r} has no split(s) {unknown}; it has {list(dataset.splits())}"
            )
        for split in splits:
            report = ingest(
                dataset_candidates(dataset, split),
                ctx.out_dir / f"{split}.lmdb",
                total=split_size(dataset, split),
                max_pixels=self.config.max_pixels,
            )
            for line in report.lines():
                log.info("data %s: %s", split, line)
            ctx.tracker.log_metrics(
                {
                    f"{split}/records": report.records,
                    f"{split}/skipped": report.skipped,
                    f"{split}/fixed": report.fixed,
                }
            )
