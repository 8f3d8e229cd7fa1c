"""The `train` recipe stage: trains a model on the token cache with the recipe's objectives and tasks.

Reads the `tokenizers` artefact (to build the joint token space) and the
`cache` artefact (`train.lmdb`), trains with `mmgen.trainer.Trainer` and saves
the final weights (the EMA ones when EMA is on) with the model's Spec and token
space, for `mmgen.plugins.models.saved.load_trained_model`.

To the tracker it logs the parameter count (`train/parameters`), samples while
training (`samples/step-NNNNNN-t2i.png`: T2I images for fixed captions of a
held-out cache split, the caption under each; `samples/step-NNNNNN-i2t.txt`:
I2T captions for those records' images) and, at the end, the saved model
(`model/weights.pt`, `model/model.json`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs

from mmgen.config import Spec, component, components
from mmgen.objectives.tasks import TaskConfig, TaskDraw, paper_tasks
from mmgen.stage import StageContext
from mmgen.trainer import TrainerConfig

# MAGVLT's L = L_mask + 0.01 L_TL + 1.0 L_UM + 0.5 L_MS (weights: each objective's Config default).
PAPER_OBJECTIVES = ({"use": "mask"}, {"use": "target_length"}, {"use": "unroll_mask"}, {"use": "mixsel"})
TRAIN_SPLIT_FILE = "train.lmdb"
# Samples use the generation tasks' default role names (`TaskRunner`).
IMAGE_MODALITY = "image"
TEXT_MODALITY = "text"
ARTEFACT_PATH = "model"


def joint_space(tokenizers: Any, extra_specials: Sequence[str]) -> Any:
    """The tokenizers' spaces side by side (in their order) with the objectives' extra markers."""
    from mmgen.token_space import JointTokenSpace

    found = tokenizers.values() if isinstance(tokenizers, Mapping) else tokenizers
    return JointTokenSpace(spaces=[t.token_space for t in found], extra_specials=tuple(dict.fromkeys(extra_specials)))


@attrs.frozen(kw_only=True)
class Training:
    """Everything built for a training run: the space, the model and the loss."""

    token_space: Any
    model: Any
    loss: Any


def build_training(
    *,
    model: Spec,
    objectives: Sequence[Spec],
    tasks: Mapping[str, TaskConfig],
    seed: int,
    registry: Any,
    tokenizers: Any,
    condition_dropout: float = 0.0,
) -> Training:
    extra = [name for spec in objectives for name in getattr(registry.get(spec.kind, spec.use), "extra_specials", ())]
    space = joint_space(tokenizers, extra)
    built = [registry.build(spec, token_space=space, tokenizers=tokenizers) for spec in objectives]

    import torch

    from mmgen.objectives.training_loss import TrainingLoss

    # The initial weights follow the seed alone, not whatever ran before in this process.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        built_model = registry.build(model, token_space=space, tokenizers=tokenizers)
    return Training(
        token_space=space,
        model=built_model,
        loss=TrainingLoss(built, TaskDraw(tasks, seed=seed), condition_dropout=condition_dropout),
    )


def final_weights(checkpoint: Path) -> dict[str, Any]:
    """The model weights of a trainer checkpoint, with the EMA weights in place when it has them."""
    from mmgen.checkpoint import load

    state = load(checkpoint)
    return {**state["model"], **(state["ema"] or {})}


def _probability(_instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be in [0, 1], got {value}")


def _positive_or_none(_instance: Any, attribute: attrs.Attribute, value: int | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be > 0 or null, got {value}")


def _non_negative(_instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value}")


@attrs.frozen(kw_only=True)
class SampleOptions:
    """Samples logged while training: each of `tasks` on the first `prompts` records of the cache's `split`.

    `every`: at steps every, 2 every, ...; null: after the last step only.
    `prompts: 0` logs no samples. The model's default sampler, the trainer's seed.
    """

    every: int | None = attrs.field(default=None, validator=_positive_or_none)
    prompts: int = attrs.field(default=8, validator=_non_negative)
    split: str = "val"
    tasks: tuple[str, ...] = ("t2i", "i2t")  # registered generation task names


class TrainModelStage:
    name: ClassVar[str] = "train"

    @attrs.frozen(kw_only=True)
    class Config:
        model: Spec = component("models")
        objectives: tuple[Spec, ...] = components("objectives", default=PAPER_OBJECTIVES)
        # p_tau: T2I : I2T : IT2IT = 8 : 1 : 1 by default.
        tasks: dict[str, TaskConfig] = attrs.field(factory=paper_tasks)
        trainer: TrainerConfig = attrs.field(factory=TrainerConfig)
        # Per row, the chance its whole context is MASK (for classifier-free guidance; MAGVLT: 0).
        condition_dropout: float = attrs.field(default=0.0, validator=_probability)
        # Relative chance of each caption row of a record (rows past the list weigh 1); null: uniform.
        # Shapes: row 0 is the `full` template that evaluation prompts use.
        caption_weights: tuple[float, ...] | None = None
        samples: SampleOptions = attrs.field(factory=SampleOptions)
        tokenizers_stage: str = "tokenizers"  # the earlier stages this one reads
        cache_stage: str = "cache"

    @classmethod
    def from_config(cls, config: Config, **_deps: Any) -> TrainModelStage:
        return cls(config=config)

    def __init__(self, *, config: Config) -> None:
        if not config.objectives:
            raise ValueError("the train stage needs at least one objective")
        self.config = config

    def run(self, ctx: StageContext) -> None:
        from mmgen.plugins.datasets.token_cache import TokenCacheDataset
        from mmgen.tokenizers.saved import load_saved_tokenizers

        config = self.config
        tokenizers = load_saved_tokenizers(ctx.artefact(config.tokenizers_stage), ctx.registry)
        # Passing the tokenizers makes the dataset refuse a cache that other tokenizers made.
        cache = ctx.artefact(config.cache_stage)
        dataset = TokenCacheDataset(
            cache / TRAIN_SPLIT_FILE,
            seed=config.trainer.seed,
            tokenizers=tokenizers,
            caption_weights=config.caption_weights,
        )
        # Read before training, so a missing split fails now rather than at the first sample.
        prompts = None
        if ctx.tracker is not None and config.samples.prompts > 0:
            prompts = read_sample_prompts(cache, config.samples, tokenizers=tokenizers)
        train_and_save(
            config,
            tokenizers=tokenizers,
            dataset=dataset,
            out_dir=ctx.out_dir,
            registry=ctx.registry,
            tracker=ctx.tracker,
            device=ctx.device,
            sample_prompts=prompts,
        )


@attrs.frozen(kw_only=True)
class SamplePrompts:
    """The fixed prompts of the training samples: each record's caption (T2I) and image (I2T)."""

    keys: tuple[str, ...]
    captions: tuple[str, ...]
    images: tuple[Any, ...]  # uint8 [3, H, W] tensors, decoded from the cached tokens


def read_sample_prompts(cache_dir: Path, options: SampleOptions, *, tokenizers: Mapping[str, Any]) -> SamplePrompts:
    """The first `options.prompts` records of `<cache_dir>/<split>.lmdb`, decoded by `tokenizers`."""
    from mmgen.plugins.datasets.token_cache import StaleCacheError, TokenCacheDataset

    missing = {IMAGE_MODALITY, TEXT_MODALITY} - set(tokenizers)
    if missing:
        raise ValueError(
            f"training samples need {sorted(missing)} tokenizers (have {sorted(tokenizers)}); set samples.prompts: 0"
        )
    path = Path(cache_dir) / f"{options.split}.lmdb"
    try:
        cache = TokenCacheDataset(path, tokenizers=tokenizers)  # seed 0, epoch 0: the same caption rows every run
    except StaleCacheError as error:
        raise ValueError(
            f"training samples read split {options.split!r}: {error}; set samples.split or samples.prompts: 0"
        ) from None
    count = min(options.prompts, len(cache))
    if count == 0:
        raise ValueError(f"training samples: split {options.split!r} of the token cache is empty")
    batch = cache.collate(cache.__getitems__(list(range(count))))
    return SamplePrompts(
        keys=tuple(cache.key(index) for index in range(count)),
        captions=tuple(tokenizers[TEXT_MODALITY].decode(batch.modality(TEXT_MODALITY))),
        images=tuple(tokenizers[IMAGE_MODALITY].decode(batch.modality(IMAGE_MODALITY))),
    )


class TrainingSamples:
    """What the trainer's `sample_fn` does: T2I and I2T on the fixed prompts, then a grid and a caption list."""

    def __init__(self, *, prompts: SamplePrompts, tokenizers: Mapping[str, Any], sampler: Any, seed: int) -> None:
        from mmgen.plugins.generation.tasks import Prompt

        self.tokenizers = tokenizers
        self.sampler = sampler
        self.seed = seed
        self.t2i = [Prompt(key=k, text=c) for k, c in zip(prompts.keys, prompts.captions)]
        self.i2t = [
            Prompt(key=k, image=i, reference={"caption": c})
            for k, i, c in zip(prompts.keys, prompts.images, prompts.captions)
        ]

    def generate(self, model: Any) -> tuple[list[Any], list[Any]]:
        """T2I and I2T generations, each task in one batch; the same weights give the same samples."""
        from mmgen.plugins.generation.tasks import TaskRunner

        device = next(model.parameters()).device
        runner = TaskRunner(model=model, tokenizers=self.tokenizers, sampler=self.sampler, device=device)
        t2i = runner.run("t2i", self.t2i, seed=self.seed, batch_size=len(self.t2i))
        i2t = runner.run("i2t", self.i2t, seed=self.seed, batch_size=len(self.i2t))
        return t2i, i2t

    def log(self, t2i: Sequence[Any], i2t: Sequence[Any], *, step: int, tracker: Any) -> None:
        from mmgen.plugins.generation.grid import generation_cell, render_grid

        tracker.log_image(render_grid([generation_cell(g) for g in t2i]), file_name=f"samples/step-{step:06d}-t2i.png")
        tracker.log_text(caption_table(i2t), file_name=f"samples/step-{step:06d}-i2t.txt")


def caption_table(generations: Sequence[Any]) -> str:
    """One line per I2T generation: key, generated caption, the record's caption (tab-separated, with a header)."""
    lines = ["key\tgenerated\treference"]
    lines += [f"{g.key}\t{g.outputs['text']}\t{g.reference['caption']}" for g in generations]
    return "\n".join(lines) + "\n"


def logging_samples(samples: TrainingSamples, *, trainer: Any, tracker: Any) -> Callable[[Any, int], None]:
    """The trainer's `sample_fn(module, step)`: generate, then log on rank 0.

    Under FSDP every rank generates: the sharded forward needs them all.
    """

    def sample_fn(module: Any, step: int) -> None:
        made = samples.generate(module)
        if trainer.is_main:
            samples.log(*made, step=step, tracker=tracker)

    return sample_fn


def parameter_count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def log_model(directory: Path, tracker: Any) -> None:
    """The saved model's files as tracker artefacts under `model/`."""
    from mmgen.plugins.models.saved import DESCRIPTION_FILE, WEIGHTS_FILE

    for name in (WEIGHTS_FILE, DESCRIPTION_FILE):
        tracker.log_artifact(Path(directory) / name, artifact_path=ARTEFACT_PATH)


def default_sampler(registry: Any) -> Any:
    from mmgen.config import structure_spec

    return registry.build(structure_spec("samplers", {"use": "maskgit"}, path="sampler", registry=registry))


def train_and_save(
    config: TrainModelStage.Config,
    *,
    tokenizers: Any,
    dataset: Any,
    out_dir: Path,
    registry: Any,
    tracker: Any = None,
    device: str = "cpu",
    sample_prompts: SamplePrompts | None = None,
) -> Training:
    """Train on `dataset` (items that `dataset.collate` turns into a TokenBatch) and save the model in `out_dir`.

    With a tracker: logs the parameter count, samples for `sample_prompts` (if
    given) every `config.samples.every` steps, and the saved model.
    """
    from mmgen.distributed import env_world
    from mmgen.plugins.models.saved import save_trained_model
    from mmgen.trainer import Trainer

    training = build_training(
        model=config.model,
        objectives=config.objectives,
        tasks=config.tasks,
        seed=config.trainer.seed,
        registry=registry,
        tokenizers=tokenizers,
        condition_dropout=config.condition_dropout,
    )
    trainer = Trainer(config.trainer, out_dir=Path(out_dir) / "trainer", tracker=tracker, device=device)
    if tracker is not None and env_world()[0] == 0:
        # Counted before training: an FSDP-sharded module holds only its rank's share.
        tracker.log_metrics({"train/parameters": float(parameter_count(training.model))})
    sample_fn = None
    if tracker is not None and sample_prompts is not None:
        samples = TrainingSamples(
            prompts=sample_prompts, tokenizers=tokenizers, sampler=default_sampler(registry), seed=config.trainer.seed
        )
        sample_fn = logging_samples(samples, trainer=trainer, tracker=tracker)
    stream = trainer.make_stream(dataset, collate=dataset.collate)
    result = trainer.fit(
        training.model, loss_fn=training.loss, stream=stream, sample_fn=sample_fn, sample_every=config.samples.every
    )
    if result.checkpoint is not None:  # rank 0 only
        save_trained_model(
            Path(out_dir),
            state_dict=final_weights(result.checkpoint),
            spec=config.model,
            token_space=training.token_space,
        )
        if tracker is not None:
            log_model(Path(out_dir), tracker)
    return training
