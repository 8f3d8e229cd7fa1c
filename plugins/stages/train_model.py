"""The `train` recipe stage: trains a model on the token cache with the recipe's objectives and tasks.

Reads the tokenizers stage (to build the joint token space) and the cache
stage (its `train` split), trains with the shared Trainer and saves the final
weights (the EMA ones when EMA is on) with the model's Spec and token space
(mmgen.plugins.models.saved, the one module that knows that layout).
model.json also records the layouts training showed (`trained_layouts`: each
task that took part, and the condition dropout rate), so generation runs only
requests of those layouts (mmgen.api.TrainedLayouts); `load` gives the model
that record as its `trained_layouts` (None for a model saved without it).

To the tracker it logs the parameter count (`parameters`), the trainer's
metrics (`loss`, `lr`, ...), samples while training (training_samples.py) and,
at the end, the saved model (`model/weights.pt`, `model/model.json`); in a
recipe's run each name is under the stage's key (`train/parameters`,
`train/model/weights.pt`: mmgen.stage_tracker).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs

from mmgen.api import (
    FieldError,
    GenerateOptions,
    TRAINED_LAYOUTS_KEY,
    JointTokenSpace,
    Spec,
    StageContext,
    Task,
    TrainedLayouts,
    TrainerConfig,
    UserError,
    build_sampler,
    component,
    components,
    probability,
    structure_spec,
    upstream,
)
from mmgen.objectives.tasks import TaskConfig, TaskDraw, paper_tasks

from .training_samples import SampleOptions, TrainingSamples, logging_samples, sample_examples

# MAGVLT's L = L_mask + 0.01 L_TL + 1.0 L_UM + 0.5 L_MS (weights: each objective's Config default).
PAPER_OBJECTIVES = ({"use": "mask"}, {"use": "target_length"}, {"use": "unroll_mask"}, {"use": "mixsel"})
TRAIN_SPLIT = "train"
ARTEFACT_PATH = "model"


def joint_space(tokenizers: Any, extra_specials: Sequence[str]) -> JointTokenSpace:
    """The tokenizers' spaces side by side (in their order) with the objectives' extra markers."""
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
    check_attention(model, objectives, registry=registry)
    space = joint_space(tokenizers, objective_specials(objectives, registry=registry))

    import torch

    # The initial weights follow the seed alone, not whatever ran before in this process.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        built_model = registry.build(model, token_space=space, tokenizers=tokenizers)
    return Training(
        token_space=space,
        model=built_model,
        loss=training_loss(
            objectives,
            tasks,
            seed=seed,
            registry=registry,
            token_space=space,
            tokenizers=tokenizers,
            condition_dropout=condition_dropout,
        ),
    )


def objective_specials(objectives: Sequence[Spec], *, registry: Any) -> list[str]:
    """The extra special tokens (markers) the objectives put in sequences."""
    return [name for spec in objectives for name in getattr(registry.get(spec.kind, spec.use), "extra_specials", ())]


def training_loss(
    objectives: Sequence[Spec],
    tasks: Mapping[str, TaskConfig],
    *,
    seed: int,
    registry: Any,
    token_space: Any,
    tokenizers: Any,
    condition_dropout: float,
) -> Any:
    """The objectives, built over `token_space`, summed under the task draw (TrainingLoss)."""
    from mmgen.objectives.training_loss import TrainingLoss

    built = [registry.build(spec, token_space=token_space, tokenizers=tokenizers) for spec in objectives]
    return TrainingLoss(built, TaskDraw(tasks, seed=seed), condition_dropout=condition_dropout)


def training_from_config(config: Any, *, registry: Any, tokenizers: Any) -> Training:
    """build_training with a train stage's Config (model, objectives, tasks, trainer seed, condition dropout)."""
    return build_training(
        model=config.model,
        objectives=config.objectives,
        tasks=config.tasks,
        seed=config.trainer.run_seed,
        registry=registry,
        tokenizers=tokenizers,
        condition_dropout=config.condition_dropout,
    )


def check_attention(model: Spec, objectives: Sequence[Spec], *, registry: Any) -> None:
    """Refuse objectives that train another attention than the model's (causal_lm: argvlt; mask, ...: magvlt).

    A component without an `attention` ClassVar is "bidirectional", as MAGVLT and its objectives are.
    """
    has = getattr(registry.get(model.kind, model.use), "attention", "bidirectional")
    for index, spec in enumerate(objectives):
        needs = getattr(registry.get(spec.kind, spec.use), "attention", "bidirectional")
        if needs != has:
            raise UserError(
                f"train: objectives[{index}] {spec.use!r} trains a model with {needs} attention, but model"
                f" {model.use!r} has {has} attention"
                " (argvlt trains with causal_lm; magvlt with mask, target_length, unroll_mask, mixsel)"
            )


def final_weights(checkpoint: Path) -> dict[str, Any]:
    """The model weights of a trainer checkpoint, with the EMA weights in place when it has them."""
    from mmgen.api import load_checkpoint

    state = load_checkpoint(checkpoint)
    return {**state["model"], **(state["ema"] or {})}


class TrainModelStage:
    name: ClassVar[str] = "train"
    makes_model: ClassVar[bool] = True  # `mmgen generate --run` / `mmgen serve` take the newest such folder

    @attrs.frozen(kw_only=True)
    class Config:
        model: Spec = component("models")
        objectives: tuple[Spec, ...] = components("objectives", default=PAPER_OBJECTIVES)
        # p_tau: T2I : I2T : IT2IT = 8 : 1 : 1 by default.
        tasks: dict[str, TaskConfig] = attrs.field(factory=paper_tasks)
        trainer: TrainerConfig = attrs.field(factory=TrainerConfig)
        # Per row, the chance its whole context is MASK (for classifier-free guidance; MAGVLT: 0).
        condition_dropout: float = attrs.field(default=0.0, validator=probability)
        # Relative chance of each of a record's caption rows (rows past the list weigh 1); null: uniform.
        caption_weights: tuple[float, ...] | None = None
        samples: SampleOptions = attrs.field(factory=SampleOptions)
        tokenizers_stage: str = upstream("tokenizers")
        cache_stage: str = upstream("cache")

        def __attrs_post_init__(self) -> None:
            if not self.objectives:  # found when the recipe loads, not after earlier stages ran
                raise FieldError("objectives", "the train stage needs at least one objective (e.g. [{use: mask}])")

    @classmethod
    def from_config(cls, config: Config, **_deps: Any) -> TrainModelStage:
        return cls(config=config)

    def __init__(self, *, config: Config) -> None:
        self.config = config

    @classmethod
    def load(cls, directory: Path, *, registry: Any, device: str = "cpu", **_: Any) -> Any:
        """The trained model, on `device`, in eval mode."""
        from mmgen.plugins.models.saved import load_trained_model

        model = load_trained_model(Path(directory), registry, device=device)
        model.trained_layouts = read_trained_layouts(Path(directory))
        return model

    def run(self, ctx: StageContext) -> None:
        inputs = read_training_inputs(ctx, self.config)
        train_and_save(
            self.config,
            tokenizers=inputs.tokenizers,
            dataset=inputs.dataset,
            out_dir=ctx.out_dir,
            registry=ctx.registry,
            tracker=ctx.tracker,
            device=ctx.device,
            sample_examples=inputs.sample_examples,
            sample_tasks=inputs.sample_tasks,
        )


@attrs.frozen(kw_only=True)
class TrainingInputs:
    """What a training stage (train, finetune) reads before its first update."""

    tokenizers: Any
    dataset: Any
    sample_examples: list[Any] | None
    sample_tasks: list[Any] | None


def read_training_inputs(ctx: StageContext, config: Any) -> TrainingInputs:
    """The tokenizers, the cache's train split and the samples to log, for a config with `tokenizers_stage`,
    `cache_stage`, `trainer`, `caption_weights` and `samples` (the train and finetune stages')."""
    tokenizers = ctx.inputs.load(config.tokenizers_stage)
    cache = ctx.inputs.load(config.cache_stage)
    # Passing the tokenizers makes the dataset refuse a cache that other tokenizers made.
    dataset = cache.split(
        TRAIN_SPLIT, seed=config.trainer.run_seed, tokenizers=tokenizers, caption_weights=config.caption_weights
    )
    # Read before training, so a missing split or task fails now rather than at the first sample.
    examples = tasks = None
    if ctx.tracker is not None and config.samples.prompts > 0:
        examples = sample_examples(cache, config.samples, tokenizers=tokenizers)
        tasks = [
            ctx.registry.build(structure_spec("tasks", name, path=f"samples.tasks[{i}]", registry=ctx.registry))
            for i, name in enumerate(config.samples.tasks)
        ]
    return TrainingInputs(tokenizers=tokenizers, dataset=dataset, sample_examples=examples, sample_tasks=tasks)


def trained_layouts(config: TrainModelStage.Config) -> TrainedLayouts:
    """The tasks that took part (weight > 0 and starting before the last update) and the condition dropout."""
    tasks = [
        Task(name=name, context=t.context, target=t.target, mask_context=t.mask_context)
        for name, t in config.tasks.items()
        if t.weight > 0 and t.start_step < config.trainer.steps
    ]
    return TrainedLayouts(tasks=tasks, condition_dropout=config.condition_dropout)


def record_trained_layouts(directory: Path, layouts: TrainedLayouts) -> None:
    """Add the record to the saved model's model.json."""
    from mmgen.api import atomic_write_text
    from mmgen.plugins.models.saved import DESCRIPTION_FILE

    path = Path(directory) / DESCRIPTION_FILE
    description = json.loads(path.read_text(encoding="utf-8"))
    description[TRAINED_LAYOUTS_KEY] = layouts.to_data()
    atomic_write_text(path, json.dumps(description, indent=2))


def read_trained_layouts(directory: Path) -> TrainedLayouts | None:
    """The saved model's record; None for a model saved before mmgen wrote it (every layout allowed)."""
    from mmgen.plugins.models.saved import DESCRIPTION_FILE

    data = json.loads((Path(directory) / DESCRIPTION_FILE).read_text(encoding="utf-8")).get(TRAINED_LAYOUTS_KEY)
    return None if data is None else TrainedLayouts.from_data(data)


def parameter_count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def log_model(directory: Path, tracker: Any) -> None:
    """The saved model's files as tracker artefacts under `model/`."""
    from mmgen.plugins.models.saved import DESCRIPTION_FILE, WEIGHTS_FILE

    for name in (WEIGHTS_FILE, DESCRIPTION_FILE):
        tracker.log_artifact(Path(directory) / name, artifact_path=ARTEFACT_PATH)


def train_and_save(
    config: TrainModelStage.Config,
    *,
    tokenizers: Any,
    dataset: Any,
    out_dir: Path,
    registry: Any,
    tracker: Any = None,
    device: str = "cpu",
    sample_examples: Sequence[Any] | None = None,
    sample_tasks: Sequence[Any] | None = None,
) -> Training:
    """Train on `dataset` (items that `dataset.collate` turns into a TokenBatch) and save the model in `out_dir`.

    With a tracker: logs the parameter count, samples of `sample_tasks` on
    `sample_examples` (if given) every `config.samples.every` steps, and the saved model.
    """
    from mmgen.plugins.models.saved import save_trained_model

    training = training_from_config(config, registry=registry, tokenizers=tokenizers)
    _, result = fit_with_samples(
        config,
        model=training.model,
        loss=training.loss,
        tokenizers=tokenizers,
        dataset=dataset,
        out_dir=out_dir,
        registry=registry,
        tracker=tracker,
        device=device,
        sample_examples=sample_examples,
        sample_tasks=sample_tasks,
    )
    if result.checkpoint is not None:  # rank 0 only
        save_trained_model(
            Path(out_dir),
            state_dict=final_weights(result.checkpoint),
            spec=config.model,
            token_space=training.token_space,
        )
        record_trained_layouts(Path(out_dir), trained_layouts(config))
        if tracker is not None:
            log_model(Path(out_dir), tracker)
    return training


def fit_with_samples(
    config: Any,
    *,
    model: Any,
    loss: Any,
    tokenizers: Any,
    dataset: Any,
    out_dir: Path,
    registry: Any,
    tracker: Any = None,
    device: str = "cpu",
    sample_examples: Sequence[Any] | None = None,
    sample_tasks: Sequence[Any] | None = None,
) -> tuple[Any, Any]:
    """Train `model` with the shared Trainer under `out_dir/trainer` (resuming there); returns (trainer, result).

    With a tracker: logs the parameter count first and samples of `sample_tasks` on `sample_examples`
    (if given) every `config.samples.every` steps.
    """
    from mmgen.api import Trainer, env_world

    trainer = Trainer(config.trainer, out_dir=Path(out_dir) / "trainer", tracker=tracker, device=device)
    if tracker is not None and env_world()[0] == 0:
        # Counted before training: an FSDP-sharded module holds only its rank's share.
        tracker.log_metrics({"parameters": float(parameter_count(model))})
    sample_fn = None
    if tracker is not None and sample_examples is not None:
        samples = TrainingSamples(
            examples=sample_examples,
            tasks=sample_tasks,
            tokenizers=tokenizers,
            sampler=build_sampler(GenerateOptions(), model=model, registry=registry),
            seed=config.trainer.run_seed,
        )
        sample_fn = logging_samples(samples, trainer=trainer, tracker=tracker)
    stream = trainer.make_stream(dataset, collate=dataset.collate)
    result = trainer.fit(model, loss_fn=loss, stream=stream, sample_fn=sample_fn, sample_every=config.samples.every)
    return trainer, result
