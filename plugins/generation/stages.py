"""Recipe stages `generate` (tasks on held-out prompts) and `evaluate` (metrics over the generations)."""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from typing import Any, ClassVar, Literal

import attrs

from mmgen.atomic import atomic_write_text
from mmgen.config import Spec, component, components
from mmgen.stage import StageContext

from .refine_config import RefineConfig
from .task_names import TASK_NAMES

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


def _known_tasks(_instance: Any, _attribute: Any, tasks: tuple[str, ...]) -> None:
    for task in tasks:
        if task not in TASK_NAMES:
            raise ValueError(f"no generation task {task!r}; tasks: {', '.join(TASK_NAMES)}")


def _at_least_one(_instance: Any, attribute: Any, value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be >= 1, got {value}")


class GenerateStage:
    """Runs generation tasks on the first `prompts` records of the data stage's held-out split.

    Reads the `tokenizers`, `train` (the model) and, when any task has more than
    one candidate reranked by CLIP, `clip` stage folders. Writes PNGs,
    `generations.jsonl` and a grid per task, all logged to the tracker.

    `rerank` picks each task's reranker: "clip" (MAGVLT; the default) or
    "cycle" (the model's own log p(image | caption), for tasks that make text
    from an image: cycle_score.py). `refine` runs cycle-checked caption
    refinement on i2t (caption_refine.py). `cycle_passes` is how many
    interleaved image masks the cycle score sums over (1: the whole image at
    once; 2: a checkerboard, twice the cost, measured sharper).
    """

    name: ClassVar[str] = "generate"

    @attrs.frozen(kw_only=True)
    class Config:
        sampler: Spec = component("samplers", default={"use": "maskgit"})
        tasks: tuple[str, ...] = attrs.field(default=("t2i", "i2t"), validator=_known_tasks)
        prompts: int = 16
        candidates: dict[str, int] = attrs.field(factory=dict)  # per task; MAGVLT uses t2i: 32, i2t: 64
        rerank: dict[str, Literal["clip", "cycle"]] = attrs.field(factory=dict)  # per task; default clip
        refine: dict[str, RefineConfig] = attrs.field(factory=dict)  # i2t only
        cycle_passes: int = attrs.field(default=2, validator=_at_least_one)
        seed: int | None = None  # None: the recipe's seed
        split: str = "test"
        batch_size: int = 16
        grid_columns: int = 8
        image_modality: str = "image"
        text_modality: str = "text"
        data_stage: str = "data"
        tokenizers_stage: str = "tokenizers"
        model_stage: str = "train"
        clip_stage: str = "clip"

    def __init__(self, config: Config) -> None:
        self.config = config

    @classmethod
    def from_config(cls, config: Config, **_: Any) -> GenerateStage:
        for option in ("candidates", "rerank", "refine"):
            unknown = set(getattr(config, option)) - set(config.tasks)
            if unknown:
                raise ValueError(f"{option} given for tasks not run: {sorted(unknown)} (tasks: {list(config.tasks)})")
        for task, how in config.rerank.items():
            if how == "cycle" and task != "i2t":
                raise ValueError(f"rerank: the cycle reranker scores captions of given images (i2t), not {task!r}")
        if set(config.refine) - {"i2t"}:
            raise ValueError(f"refine: caption refinement runs on i2t only, not {sorted(set(config.refine) - {'i2t'})}")
        return cls(config)

    def run(self, ctx: StageContext) -> None:
        from .artefacts import load_for_generation
        from .caption_refine import CaptionRefiner
        from .cycle_score import CycleReranker
        from .prompts import prompts_from_records
        from .store import publish
        from .tasks import TaskRunner

        config = self.config
        clip_reranking = any(
            n > 1 and config.rerank.get(task, "clip") == "clip" for task, n in config.candidates.items()
        )
        loaded = load_for_generation(
            tokenizers_dir=ctx.artefact(config.tokenizers_stage),
            model_dir=ctx.artefact(config.model_stage),
            clip_dir=ctx.artefact(config.clip_stage) if clip_reranking else None,
            registry=ctx.registry,
            device=ctx.device,
        )
        modalities = {"image_modality": config.image_modality, "text_modality": config.text_modality}
        sampler = ctx.registry.build(config.sampler) if config.sampler is not None else _default_sampler(ctx.registry)
        cycle = CycleReranker(loaded.model, passes=config.cycle_passes, **modalities)
        runner = TaskRunner(
            model=loaded.model,
            tokenizers=loaded.tokenizers,
            sampler=sampler,
            reranker=loaded.reranker,
            rerankers={task: cycle for task, how in config.rerank.items() if how == "cycle"},
            refiners={
                task: CaptionRefiner(loaded.model, config=c, scorer=cycle, **modalities)
                for task, c in config.refine.items()
            },
            device=ctx.device,
            **modalities,
        )
        records = read_records(ctx.artefact(config.data_stage), config.split, limit=config.prompts)
        seed = ctx.seed if config.seed is None else config.seed
        generations = []
        for task in config.tasks:
            prompts = prompts_from_records(task, records, image_tokenizer=loaded.tokenizers[config.image_modality])
            made = runner.run(
                task, prompts, candidates=config.candidates.get(task, 1), seed=seed, batch_size=config.batch_size
            )
            log.info("generate: %d %s generations", len(made), task)
            generations.extend(made)
        publish(generations, ctx.out_dir, tracker=ctx.tracker, columns=config.grid_columns)


def read_records(data_dir: Path, split: str, *, limit: int) -> list[Any]:
    """The first `limit` records of `split` in the data stage's LMDB store (`<data>/<split>.lmdb`)."""
    from mmgen.plugins.datasets.lmdb_store import LmdbStore

    store = LmdbStore(Path(data_dir) / f"{split}.lmdb")
    return [store.record(index) for index in range(min(limit, len(store)))]


def _default_sampler(registry: Any) -> Any:
    from mmgen.config import structure_spec

    return registry.build(structure_spec("samplers", {"use": "maskgit"}, path="sampler", registry=registry))


class EvaluateStage:
    """Computes every configured metric over the generate stage's generations.

    Each metric is built with the dependencies it names among `artefacts`
    (stage folders by name), `registry` and `device`; results are logged to the
    tracker as `<metric>/<name>` and written to metrics.json.
    """

    name: ClassVar[str] = "evaluate"

    @attrs.frozen(kw_only=True)
    class Config:
        metrics: tuple[Spec, ...] = components("metrics")
        generations_stage: str = "generate"

    def __init__(self, config: Config) -> None:
        self.config = config

    @classmethod
    def from_config(cls, config: Config, **_: Any) -> EvaluateStage:
        return cls(config)

    def run(self, ctx: StageContext) -> None:
        from .store import load_generations

        generations = load_generations(ctx.artefact(self.config.generations_stage))
        deps = {"artefacts": ctx.artefacts, "registry": ctx.registry, "device": ctx.device}
        results: dict[str, float] = {}
        for spec in self.config.metrics:
            metric = ctx.registry.get(spec.kind, spec.use).from_config(
                spec.config, **accepted(spec, deps, ctx.registry)
            )
            for name, value in metric.compute(generations).items():
                results[f"{spec.use}/{name}"] = float(value)
        ctx.tracker.log_metrics(results)
        path = Path(ctx.out_dir) / METRICS_FILE
        atomic_write_text(path, json.dumps(results, indent=2, sort_keys=True))
        ctx.tracker.log_artifact(path, artifact_path="evaluate")


def accepted(spec: Spec, deps: dict[str, Any], registry: Any) -> dict[str, Any]:
    """The subset of `deps` that the component's `from_config` takes (all of them with **kwargs)."""
    parameters = inspect.signature(registry.get(spec.kind, spec.use).from_config).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return dict(deps)
    names = {p.name for p in parameters}
    return {name: value for name, value in deps.items() if name in names}
