"""The `in_context_finetune` recipe stage: the finetune stage over episodes (docs/in_context.md).

Everything is the `finetune` stage's (pretrained model, objectives, trainer,
freeze, LoRA, resume), except that the cache's train split is read as episodes
of `pairs` records (plugins/datasets/episodes.py) and the defaults train
in-context generation: the `in_context_mask` objective, the tasks in-context
T2I and I2T with 0 .. pairs - 1 context pairs (one task, hence one k, per
update), and a segment-index table of 2 * pairs rows. The saved model records
each of those layouts, so generation with 0 .. pairs - 1 context pairs is
allowed, beside the pretrained tasks.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from mmgen.api import Spec, components, positive
from mmgen.objectives.in_context import in_context_tasks
from mmgen.objectives.tasks import TaskConfig

from .finetune import FinetuneStage

PAIRS = 5  # an episode: up to 4 context pairs and the query pair


def default_tasks() -> dict[str, TaskConfig]:
    return {
        name: TaskConfig(context=tuple(t["context"]), target=tuple(t["target"]))
        for name, t in in_context_tasks(pairs=PAIRS).items()
    }


class InContextFinetuneStage(FinetuneStage):
    name: ClassVar[str] = "in_context_finetune"

    @attrs.frozen(kw_only=True)
    class Config(FinetuneStage.Config):
        objectives: tuple[Spec, ...] = components("objectives", default=({"use": "in_context_mask"},))
        tasks: dict[str, TaskConfig] = attrs.field(factory=default_tasks)
        # Segments of the longest sequence: two per pair (BOC and BOG belong to the segments they precede).
        max_segments: int | None = 2 * PAIRS
        # Records per episode in the cache's train split (the data set's `pairs`).
        pairs: int = attrs.field(default=PAIRS, validator=positive)

    def training_data(self, dataset: Any) -> Any:
        """The cache's train split as episodes of `pairs` records."""
        from mmgen.plugins.datasets.episodes import EpisodeDataset

        return EpisodeDataset(dataset, pairs=self.config.pairs)
