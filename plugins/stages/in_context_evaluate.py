"""The `in_context_evaluate` recipe stage: the in-context curve of a model (docs/in_context.md).

Reads held-out episodes of the data stage (shapes_episodes records), generates
each episode's query with k = 0 .. pairs - 1 context pairs, in-context T2I and
I2T, with the episode's own context and with the next episode's (the rule-free
baseline), and judges the answers with the Shapes oracles
(plugins/datasets/shapes_episodes/curve.py). Writes `curve.json`,
`in_context.md` (a table) and `in_context.png` (a plot) to its folder, logs each
point to the tracker.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, ClassVar

import attrs

from mmgen.api import GenerateOptions, GenerationPipeline, StageContext, UserError, build_sampler, positive, upstream

log = logging.getLogger(__name__)

DIRECTIONS = ("t2i", "i2t")


class InContextEvaluateStage:
    name: ClassVar[str] = "in_context_evaluate"

    @attrs.frozen(kw_only=True)
    class Config(GenerateOptions):
        split: str = "test"  # the final evaluation's episodes; tune on val
        episodes: int = 0  # 0: every episode of the split
        pairs: int = attrs.field(default=5, validator=positive)  # records per episode (the data set's)
        image: str = "image"
        text: str = "text"
        data_stage: str = upstream("data")
        tokenizers_stage: str = upstream("tokenizers")
        model_stage: str = upstream("finetune")

    def __init__(self, config: Config) -> None:
        self.config = config

    @classmethod
    def from_config(cls, config: Config, **_deps: Any) -> InContextEvaluateStage:
        return cls(config)

    def run(self, ctx: StageContext) -> None:
        from mmgen.plugins.datasets.shapes_episodes.curve import plot, table

        config = self.config
        model = ctx.inputs.load(config.model_stage)
        tokenizers = ctx.inputs.load(config.tokenizers_stage)
        records = ctx.inputs.load(config.data_stage).records(config.split)
        if len(records) % config.pairs:
            raise UserError(
                f"in_context_evaluate: {len(records)} {config.split} records are no episodes of {config.pairs}"
            )
        episodes = len(records) // config.pairs
        if config.episodes:
            episodes = min(episodes, config.episodes)
        if episodes < 2:
            raise UserError(
                f"in_context_evaluate: the baseline needs 2 episodes or more, {config.split} has {episodes}"
            )
        pipeline = GenerationPipeline(
            model=model,
            tokenizers=tokenizers,
            sampler=build_sampler(config, model=model, registry=ctx.registry),
            device=ctx.device,
            show_progress=True,
        )
        points = evaluate_curve(ctx.registry, pipeline, tokenizers, records, config=config, episodes=episodes)
        for p in points:
            ctx.tracker.log_metrics({f"{p.direction}/{p.condition}/k{p.k}/accuracy": p.accuracy})
        out = Path(ctx.out_dir)
        data = [attrs.asdict(p) for p in points]
        (out / "curve.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
        command = (
            "mmgen run " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["run"] else "mmgen run recipes/in_context.yaml"
        )
        (out / "in_context.md").write_text(table(points, command=command), encoding="utf-8")
        plot(points, out / "in_context.png")


def evaluate_curve(registry: Any, pipeline: Any, tokenizers: Any, records: Any, *, config: Any, episodes: int) -> list:
    """Every (direction, condition, k) point, each from one pipeline run over all episodes."""
    from mmgen.api import Prompt
    from mmgen.plugins.datasets.shapes_episodes.curve import point
    from mmgen.plugins.tasks.in_context import InContext, encode_pairs

    pairs = config.pairs
    image, text = config.image, config.text
    query = [records[e * pairs + pairs - 1] for e in range(episodes)]
    metas = [r.meta for r in query]
    images = [
        [tokenizers[image].load_item(records[e * pairs + j].data) for e in range(episodes)] for j in range(pairs - 1)
    ]
    captions = [[records[e * pairs + j].captions[0] for e in range(episodes)] for j in range(pairs - 1)]
    own = encode_pairs(tokenizers, list(zip(images, captions)), image=image, text=text)
    shift = [(e + 1) % episodes for e in range(episodes)]
    other = [{m: s.select(shift_index(shift)) for m, s in pair.items()} for pair in own]
    points = []
    for direction in DIRECTIONS:
        task = InContext(image=image, text=text, direction=direction)
        asked = text if direction == "t2i" else image
        prompts = [
            Prompt(
                key=r.key,
                items={asked: r.captions[0] if asked == text else tokenizers[image].load_item(r.data)},
                reference=dict(r.meta),
            )
            for r in query
        ]
        for k in range(pairs):
            for condition, context in (("own", own), ("other", other)):
                if k == 0 and condition == "other":
                    continue  # no context: the same measurement as "own"
                run = pipeline.run(task.with_context(context[:k]), prompts, seed=config.seed or 0, batch_size=episodes)
                answers = [g.outputs[task.makes[0]] for g in run]
                points.append(point(direction, condition, k, answers, metas))
                if k == 0:
                    points.append(attrs.evolve(points[-1], condition="other"))
                log.info("in-context %s, %s context, k=%d: accuracy %.3f", direction, condition, k, points[-1].accuracy)
    return points


def shift_index(order: list[int]) -> Any:
    import torch

    return torch.tensor(order)
