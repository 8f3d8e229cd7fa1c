"""The `generate` recipe stage: generation tasks on held-out prompts, through the core pipeline, under each
generation protocol (one sample; best of N by a reranker; refined), timed."""

from __future__ import annotations

import logging
import re
import time
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
    media_files,
    positive,
    publish,
    upstream,
)

from .caption_table import caption_table, writes_text
from .protocol_runs import (
    ONE_SAMPLE,
    PROTOCOLS_FILE,
    ProtocolOptions,
    ProtocolRun,
    legacy_name,
    load_protocol_runs,
    write_protocols,
)

log = logging.getLogger(__name__)

PROTOCOL_NAME = re.compile(r"[a-z0-9_]+")


class GenerateStage:
    """Runs each task on the first `prompts` records of the data stage's `split` under every protocol
    (plugins/stages/protocol_runs.py): `one_sample` always, then those `protocols` names for the task.
    Each protocol's PNGs, `generations.jsonl` and grid per task go to `<protocol>/` (mmgen.api.publish),
    what each ran to `protocols.json` and the seconds each task took under each to `timings.json`. The
    tracker gets those two files and, per protocol, the JSONL, each grid (`<protocol>/grid-<task>.png`,
    also the image series the run view shows) and, for tasks that write text, a caption table
    (`<protocol>/captions-<task>.json`).

    `split` is the one the final evaluation reads (test); tune sampler, reranker and refiner on val
    (the benchmarks' `--split`, val by default). The sampler and batch size: GenerateOptions, the
    options `mmgen generate` shares; its per-task `candidates`, `rerank` and `refine` still work and
    describe one more protocol, named by its reranker and refiner (`clip`, `cycle+caption_refine`).
    Prompts come from records: each record's first caption (of `caption_modality`) and its item.
    """

    name: ClassVar[str] = "generate"

    @attrs.frozen(kw_only=True)
    class Config(GenerateOptions):
        tasks: tuple[Spec, ...] = components("tasks", default=({"use": "t2i"}, {"use": "i2t"}))
        protocols: dict[str, dict[str, ProtocolOptions]] = attrs.field(factory=dict)  # task -> name -> protocol
        prompts: int = attrs.field(default=16, validator=positive)
        split: str = "test"  # the final evaluation's prompts: no setting is tuned on them
        caption_modality: str = "text"
        grid_columns: int = attrs.field(default=8, validator=positive)
        data_stage: str = upstream("data")
        tokenizers_stage: str = upstream("tokenizers")
        model_stage: str = upstream("train")

        def __attrs_post_init__(self) -> None:
            tasks = [spec.use for spec in self.tasks]
            self.check_tasks(tasks)
            unknown = sorted(set(self.protocols) - set(tasks))
            if unknown:
                raise ValueError(f"protocols given for tasks not run: {unknown} (tasks: {tasks})")
            for task, named in self.protocols.items():
                odd = [name for name in named if not PROTOCOL_NAME.fullmatch(name)]
                if odd:
                    raise ValueError(
                        f"protocols.{task}: name {odd[0]!r} is a folder and a metric prefix: use a-z, 0-9, _"
                    )
                if ONE_SAMPLE in named and named[ONE_SAMPLE] != ProtocolOptions():
                    raise ValueError(
                        f"protocols.{task}.{ONE_SAMPLE} is one sample, no reranker, no refiner; give it {{}}"
                    )
                legacy = [o for o in ("candidates", "rerank", "refine") if task in getattr(self, o)]
                if legacy:
                    raise ValueError(
                        f"{task} has protocols and the older `{legacy[0]}.{task}`:"
                        f" move it into a protocol of protocols.{task}"
                    )

        def task_protocols(self, task: str) -> dict[str, ProtocolOptions]:
            """The task's protocols by name, `one_sample` first."""
            named = {ONE_SAMPLE: ProtocolOptions(), **self.protocols.get(task, {})}
            candidates, rerank, refine = self.candidates.get(task, 1), self.rerank.get(task), self.refine.get(task)
            name = legacy_name(candidates, rerank, refine)
            if name is not None:
                named[name] = ProtocolOptions(candidates=candidates, rerank=rerank, refine=refine)
            return named

    def __init__(self, config: Config) -> None:
        self.config = config

    @classmethod
    def from_config(cls, config: Config, **_deps: Any) -> GenerateStage:
        return cls(config)

    @classmethod
    def load(cls, directory: Path, **_: Any) -> dict[str, ProtocolRun] | list[Any]:
        """Each protocol's run (plugins/stages/protocol_runs.py::load_protocol_runs), in the order they ran;
        a folder an earlier version wrote (one `generations.jsonl`, no protocols): its generations."""
        if not (Path(directory) / PROTOCOLS_FILE).is_file():
            return load_generations(directory)
        return load_protocol_runs(directory)

    @classmethod
    def summary(cls, directory: Path) -> list[str]:
        grids = sorted(Path(directory).glob("*/grid-*.png"))
        return [f"grids: {', '.join(str(g) for g in grids)}"] if grids else []

    def run(self, ctx: StageContext) -> None:
        config = self.config
        model = ctx.inputs.load(config.model_stage)
        tokenizers = ctx.inputs.load(config.tokenizers_stage)
        deps = {"model": model, "tokenizers": tokenizers, "inputs": ctx.inputs, "device": ctx.device}
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
        tasks = {spec.use: ctx.registry.build(spec) for spec in config.tasks}
        prompts = {name: task.prompts(examples) for name, task in tasks.items()}
        # Every protocol's sampler, reranker and refiner built, and every mismatch found, before any sampling.
        built, pipelines = {}, {}
        for name, task in tasks.items():
            for protocol, options in config.task_protocols(name).items():
                built[protocol, name] = build_protocol(options, registry=ctx.registry, deps=deps)
                pipelines[protocol, name] = (
                    pipeline
                    if options.sampler is None
                    else GenerationPipeline(
                        model=model, tokenizers=tokenizers, sampler=ctx.registry.build(options.sampler), device=ctx.device
                    )
                )
                pipelines[protocol, name].check(
                    task, prompts[name], candidates=options.candidates, **built[protocol, name]
                )
        seed = ctx.seed if config.seed is None else config.seed
        # One untimed prompt per task first: one-off costs (allocation, kernel set-up) would otherwise count
        # against whichever protocol runs first, one_sample.
        for name, task in tasks.items():
            pipeline.run(task, prompts[name][:1], seed=seed, batch_size=1)
        captions = {e.key: e.items[config.caption_modality] for e in examples if config.caption_modality in e.items}
        runs = []
        for protocol in dict.fromkeys(protocol for protocol, _ in built):
            generations: list[Any] = []
            timings = {}
            for name in [name for p, name in built if p == protocol]:
                options = config.task_protocols(name)[protocol]
                made, timings[name] = run_protocol(
                    pipelines[protocol, name],
                    tasks[name],
                    prompts[name][: options.prompts],
                    candidates=options.candidates,
                    **built[protocol, name],
                    seed=seed,
                    batch_size=config.batch_size,
                )
                log.info("generate: %d %s generations (%s)", len(made), name, protocol)
                generations.extend(made)
            jsonl = publish(generations, Path(ctx.out_dir) / protocol, columns=config.grid_columns, tokenizers=tokenizers)
            log_generations(ctx.tracker, generations, jsonl, captions=captions, protocol=protocol)
            runs.append(ProtocolRun(name=protocol, generations=generations, timings=timings))
        for path in write_protocols(runs, ctx.out_dir):
            ctx.tracker.log_artifact(path)


def build_protocol(options: ProtocolOptions, *, registry: Any, deps: Mapping[str, Any]) -> dict[str, Any]:
    """The protocol's reranker and refiner (None where it has none), built with the stage's deps."""
    return {
        "reranker": registry.build(options.rerank, **deps) if options.rerank is not None else None,
        "refiner": registry.build(options.refine, **deps) if options.refine is not None else None,
    }


def run_protocol(
    pipeline: GenerationPipeline,
    task: Any,
    prompts: Sequence[Prompt],
    *,
    candidates: int,
    reranker: Any,
    refiner: Any,
    seed: int,
    batch_size: int,
) -> tuple[list[Any], dict[str, Any]]:
    """The task's generations under one protocol, and the wall clock they took (sampling, reranking, refining)."""
    started = time.perf_counter()
    made = pipeline.run(
        task, prompts, candidates=candidates, reranker=reranker, refiner=refiner, seed=seed, batch_size=batch_size
    )
    seconds = time.perf_counter() - started
    timing = {
        "prompts": len(made),
        "candidates": candidates,
        "rerank": getattr(reranker, "name", None),
        "refine": getattr(refiner, "name", None),
        "seconds": seconds,
        "seconds_per_output": seconds / max(len(made), 1),
    }
    return made, timing


def log_generations(
    tracker: Any, generations: Sequence[Any], jsonl: Path, *, captions: Mapping[str, str], protocol: str
) -> None:
    """The JSONL (under `<protocol>/`), each task's grid as publish wrote it (beside the JSONL) and, for tasks that
    write text, a table of the texts against each record's caption (`captions` by key; its meta where it has none),
    and the media files publish wrote (media_files)."""
    tracker.log_artifact(jsonl, artifact_path=protocol)
    for task in dict.fromkeys(g.task for g in generations):
        made = [g for g in generations if g.task == task]
        with Image.open(jsonl.parent / f"grid-{task}.png") as picture:
            grid = np.asarray(picture.convert("RGB"))
        tracker.log_image(grid, file_name=f"{protocol}/grid-{task}.png", key=f"{protocol}/grid-{task}", step=0)
        if writes_text(made):
            known = captions if all(g.key in captions for g in made) else None
            tracker.log_table(caption_table(made, references=known), file_name=f"{protocol}/captions-{task}.json")
    # Files a tokenizer made of its items for people (a sound's WAV and spectrogram), under `<protocol>/media/<task>`.
    for task, paths in media_files(jsonl.parent).items():
        for path in paths:
            tracker.log_artifact(path, artifact_path=f"{protocol}/media/{task}")


def example(record: Any, tokenizers: Any, *, caption_modality: str) -> Prompt:
    """A record as a held-out example: its items, its first caption, and its meta as the reference."""
    items = {m: tokenizers[m].load_item(record.item(m)) for m in record.modalities if m in tokenizers}
    if record.captions:
        items[caption_modality] = record.captions[0]
    return Prompt(key=record.key, items=items, reference=dict(record.meta))
