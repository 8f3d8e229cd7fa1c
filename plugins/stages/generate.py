"""The `generate` recipe stage: generation tasks on held-out prompts, through the core pipeline."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs
import numpy as np
from PIL import Image

from mmgen.api import (
    GenerateOptions,
    GenerationPipeline,
    Prompt,
    Spec,
    StageContext,
    build_sampler,
    components,
    load_generations,
    plan_tasks,
    positive,
    publish,
    upstream,
)

from .caption_table import caption_table, writes_text

log = logging.getLogger(__name__)


class GenerateStage:
    """Runs each task on the first `prompts` records of the data stage's `split`; writes PNGs,
    `generations.jsonl` and a grid per task (mmgen.api.publish). The tracker gets the JSONL, each grid
    (`grid-<task>.png`, also the image series `grid-<task>` the run view shows) and, for tasks that write
    text, a caption table (`captions-<task>.json`).

    Sampler, candidates, rerankers and refiners: GenerateOptions, the options
    `mmgen generate` shares. Prompts come from records: each record's first
    caption (of `caption_modality`) and its item, as each task chooses.
    """

    name: ClassVar[str] = "generate"

    @attrs.frozen(kw_only=True)
    class Config(GenerateOptions):
        tasks: tuple[Spec, ...] = components("tasks", default=({"use": "t2i"}, {"use": "i2t"}))
        prompts: int = attrs.field(default=16, validator=positive)
        split: str = "test"
        caption_modality: str = "text"
        grid_columns: int = attrs.field(default=8, validator=positive)
        data_stage: str = upstream("data")
        tokenizers_stage: str = upstream("tokenizers")
        model_stage: str = upstream("train")

        def __attrs_post_init__(self) -> None:
            self.check_tasks([spec.use for spec in self.tasks])

    def __init__(self, config: Config) -> None:
        self.config = config

    @classmethod
    def from_config(cls, config: Config, **_deps: Any) -> GenerateStage:
        return cls(config)

    @classmethod
    def load(cls, directory: Path, **_: Any) -> list[Any]:
        """The generations, as written (mmgen.api.load_generations)."""
        return load_generations(directory)

    @classmethod
    def summary(cls, directory: Path) -> list[str]:
        grids = sorted(Path(directory).glob("grid-*.png"))
        return [f"grids: {', '.join(str(g) for g in grids)}"] if grids else []

    def run(self, ctx: StageContext) -> None:
        config = self.config
        model = ctx.inputs.load(config.model_stage)
        tokenizers = ctx.inputs.load(config.tokenizers_stage)
        deps = {"model": model, "tokenizers": tokenizers, "inputs": ctx.inputs, "device": ctx.device}
        plans = plan_tasks(config, list(config.tasks), registry=ctx.registry, deps=deps)
        pipeline = GenerationPipeline(
            model=model,
            tokenizers=tokenizers,
            sampler=build_sampler(config, model=model, registry=ctx.registry),
            device=ctx.device,
        )
        records = ctx.inputs.load(config.data_stage).records(config.split)
        examples = [
            example(records[i], tokenizers, caption_modality=config.caption_modality)
            for i in range(min(config.prompts, len(records)))
        ]
        seed = ctx.seed if config.seed is None else config.seed
        generations = []
        for plan in plans:
            made = pipeline.run(
                plan.task,
                plan.task.prompts(examples),
                candidates=plan.candidates,
                reranker=plan.reranker,
                refiner=plan.refiner,
                seed=seed,
                batch_size=config.batch_size,
            )
            log.info("generate: %d %s generations", len(made), plan.task.name)
            generations.extend(made)
        jsonl = publish(generations, ctx.out_dir, columns=config.grid_columns)
        captions = {e.key: e.items[config.caption_modality] for e in examples if config.caption_modality in e.items}
        log_generations(ctx.tracker, generations, jsonl, captions=captions)


def log_generations(tracker: Any, generations: Sequence[Any], jsonl: Path, *, captions: Mapping[str, str]) -> None:
    """The JSONL, each task's grid as publish wrote it (beside the JSONL) and, for tasks that write text, a table
    of the texts against each record's caption (`captions` by key; its meta where it has none)."""
    tracker.log_artifact(jsonl)
    for task in dict.fromkeys(g.task for g in generations):
        made = [g for g in generations if g.task == task]
        with Image.open(jsonl.parent / f"grid-{task}.png") as picture:
            grid = np.asarray(picture.convert("RGB"))
        tracker.log_image(grid, file_name=f"grid-{task}.png", key=f"grid-{task}", step=0)
        if writes_text(made):
            known = captions if all(g.key in captions for g in made) else None
            tracker.log_table(caption_table(made, references=known), file_name=f"captions-{task}.json")


def example(record: Any, tokenizers: Any, *, caption_modality: str) -> Prompt:
    """A record as a held-out example: its item, its first caption, and its meta as the reference."""
    items = {record.modality: tokenizers[record.modality].load_item(record.data)}
    if record.captions:
        items[caption_modality] = record.captions[0]
    return Prompt(key=record.key, items=items, reference=dict(record.meta))
