"""The `data` recipe stage: a dataset plugin's splits ingested into `<out_dir>/<split>.lmdb` stores."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import attrs

from mmgen.config import Spec, component
from mmgen.stage import StageContext

from .ingest.image_checks import DEFAULT_MAX_PIXELS

log = logging.getLogger(__name__)


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

    def run(self, ctx: StageContext) -> None:
        from .ingest.dataset_source import dataset_candidates, split_size
        from .ingest.pipeline import ingest

        dataset = ctx.registry.build(self.config.dataset)
        splits = self.config.splits or tuple(dataset.splits())
        unknown = [s for s in splits if s not in dataset.splits()]
        if unknown:
            raise ValueError(
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
                    f"data/{split}/records": report.records,
                    f"data/{split}/skipped": report.skipped,
                    f"data/{split}/fixed": report.fixed,
                }
            )
