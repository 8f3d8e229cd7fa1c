"""Samples logged while a model trains: each generation task on fixed held-out prompts.

Every `samples.every` steps the model (in eval mode, the EMA weights when EMA
is on) runs each task on the first `prompts` records of a cache split, through
the same generation pipeline as the generate stage; the tracker gets a grid per
task (`samples/step-NNNNNN-<task>.png`, and the image series `samples/<task>` at
that step, which MLflow's run view steps through) and, for tasks that write
text, a table of the texts against the record's own
(`samples/step-NNNNNN-<task>.json`, caption_table.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from mmgen.api import (
    GenerationPipeline,
    MissingSplitError,
    Prompt,
    generation_cell,
    non_negative,
    positive_or_none,
    render_grid,
)

from .caption_table import caption_table, writes_text


@attrs.frozen(kw_only=True)
class SampleOptions:
    """Samples logged while training: each of `tasks` on the first `prompts` records of the cache's `split`.

    `every`: at steps every, 2 every, ...; null: after the last step only.
    `prompts: 0` logs no samples. The model's default sampler, the trainer's seed.
    """

    every: int | None = attrs.field(default=None, validator=positive_or_none)
    prompts: int = attrs.field(default=8, validator=non_negative)
    split: str = "val"
    tasks: tuple[str, ...] = ("t2i", "i2t")  # registered generation task names


def sample_examples(cache: Any, options: SampleOptions, *, tokenizers: Mapping[str, Any]) -> list[Prompt]:
    """The first `options.prompts` records of the cache split, decoded: every modality of each record."""
    try:
        split = cache.split(options.split, tokenizers=tokenizers)  # seed 0, epoch 0: the same caption rows every run
    except MissingSplitError as error:
        raise MissingSplitError(
            f"training samples read split {options.split!r}: {error}; set samples.split or samples.prompts: 0"
        ) from None
    count = min(options.prompts, len(split))
    if count == 0:
        raise ValueError(f"training samples: split {options.split!r} of the token cache is empty")
    batch = split.collate(split.__getitems__(list(range(count))))
    decoded = {s.modality: tokenizers[s.modality].decode(s) for s in batch.segments}
    texts = {m: items for m, items in decoded.items() if isinstance(items[0], str)}
    return [
        Prompt(
            key=split.key(i),
            items={m: items[i] for m, items in decoded.items()},
            reference={m: items[i] for m, items in texts.items()},
        )
        for i in range(count)
    ]


class TrainingSamples:
    """What the trainer's `sample_fn` does: each task on the fixed prompts, then a grid (and a caption table)."""

    def __init__(
        self,
        *,
        examples: Sequence[Prompt],
        tasks: Sequence[Any],
        tokenizers: Mapping[str, Any],
        sampler: Any,
        seed: int,
    ) -> None:
        self.tasks = list(tasks)
        self.prompts = {task.name: task.prompts(examples) for task in self.tasks}
        self.tokenizers = tokenizers
        self.sampler = sampler
        self.seed = seed

    def generate(self, model: Any) -> dict[str, list[Any]]:
        """Each task's generations, in one batch; the same weights give the same samples."""
        device = next(model.parameters()).device
        pipeline = GenerationPipeline(
            model=model, tokenizers=self.tokenizers, sampler=self.sampler, device=device, show_progress=False
        )
        made = {}
        for task in self.tasks:
            prompts = self.prompts[task.name]
            made[task.name] = pipeline.run(task, prompts, seed=self.seed, batch_size=len(prompts))
        return made

    def log(self, made: Mapping[str, Sequence[Any]], *, step: int, tracker: Any) -> None:
        for task, generations in made.items():
            stem = f"samples/step-{step:06d}-{task}"
            grid = render_grid([generation_cell(g, tokenizers=self.tokenizers) for g in generations])
            tracker.log_image(grid, file_name=f"{stem}.png", key=f"samples/{task}", step=step)
            if writes_text(generations):
                tracker.log_table(caption_table(generations), file_name=f"{stem}.json")


def logging_samples(samples: TrainingSamples, *, trainer: Any, tracker: Any) -> Callable[[Any, int], None]:
    """The trainer's `sample_fn(module, step)`: generate, then log on rank 0.

    Under FSDP every rank generates: the sharded forward needs them all.
    """

    def sample_fn(module: Any, step: int) -> None:
        made = samples.generate(module)
        if trainer.is_main:
            samples.log(made, step=step, tracker=tracker)

    return sample_fn
