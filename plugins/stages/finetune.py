"""The `finetune` recipe stage: a trained model trained further, on another data set or task mix.

It starts from a finished train (or finetune) stage's saved model, read
through `pretrained_stage` (in a recipe usually a `reuse:` folder such as
the shipped checkpoints/shapes model), and trains it with the same trainer
as the train stage: objectives, tasks, resume, EMA, tracking and samples
work as there. The token cache must be made by the pretrained model's own
tokenizers (the recipe reuses its tokenizers stage), so ids mean what they
meant in pretraining.

Two ways to train less than the whole model:
- `freeze`: parameter-name patterns kept exactly as pretrained (the trainer
  neither updates nor averages them);
- `lora`: low-rank adapters on the named linear layers, everything else
  frozen except the `train` patterns; merged into the weights when training
  ends, so the saved model is a plain model of the pretrained kind.

The saved model records the layouts both trainings showed, so generation
allows the pretrained tasks and the new ones.

New text pieces (data the pretrained tokenizer cannot spell, longer texts):
refit the text tokenizer (the tokenizers stage's `keep_stage` keeps the
pretrained image tokenizer) and name the pretrained tokenizers stage in
`transfer_from`; the model is carried over to the new token space token by
token (plugins/models/token_transfer.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import attrs

from mmgen.api import (
    Spec,
    StageContext,
    TrainedLayouts,
    TrainerConfig,
    UserError,
    components,
    positive,
    probability,
    upstream,
)
from mmgen.objectives.tasks import TaskConfig, paper_tasks

from .answer_head import AnswerHeadOptions, grow_answer_head
from .new_parameters import with_segments
from .train_model import (
    PAPER_OBJECTIVES,
    check_attention,
    final_weights,
    fit_with_samples,
    log_model,
    objective_specials,
    parameter_count,
    read_trained_layouts,
    read_training_inputs,
    record_trained_layouts,
    trained_layouts,
    training_loss,
)
from .training_samples import SampleOptions

log = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class LoraOptions:
    """`lora:` options: adapters on the `targets` layers; of the rest only the `train` patterns train."""

    # Rank r of each adapter and its scale alpha (the update is alpha / r * B A): LoRA's usual 8 and 16.
    rank: int = attrs.field(default=8, validator=positive)
    alpha: float = attrs.field(default=16.0, validator=positive)
    # Linear layers (fnmatch over module names) that get adapters: every attention and MLP projection.
    targets: tuple[str, ...] = ("blocks.*.qkv", "blocks.*.attention_out", "blocks.*.mlp_in", "blocks.*.mlp_out")
    # Parameter-name patterns that train in full beside the adapters (e.g. an output head).
    train: tuple[str, ...] = ()


class FinetuneStage:
    name: ClassVar[str] = "finetune"
    makes_model: ClassVar[bool] = True  # `mmgen generate --run` / `mmgen serve` take the newest such folder

    @attrs.frozen(kw_only=True)
    class Config:
        objectives: tuple[Spec, ...] = components("objectives", default=PAPER_OBJECTIVES)
        tasks: dict[str, TaskConfig] = attrs.field(factory=paper_tasks)
        trainer: TrainerConfig = attrs.field(factory=TrainerConfig)
        condition_dropout: float = attrs.field(default=0.0, validator=probability)
        caption_weights: tuple[float, ...] | None = None
        samples: SampleOptions = attrs.field(factory=SampleOptions)
        # Parameter-name patterns (fnmatch) kept as pretrained, e.g. ["*embedding*", "blocks.0.*"].
        freeze: tuple[str, ...] = ()
        # Low-rank adapters instead of full fine-tuning (null: train every parameter not frozen).
        lora: LoraOptions | None = None
        # Give the model a segment-index table of this many rows (new rows start at zero, so it computes as
        # before: new_parameters.py); for sequences of several pairs (docs/in_context.md). null: as pretrained.
        max_segments: int | None = None
        # VQA as classification: a head over the train split's `top` most frequent answers (answer_head.py).
        answer_head: AnswerHeadOptions | None = None
        pretrained_stage: str = upstream("train")
        tokenizers_stage: str = upstream("tokenizers")
        # The tokenizers stage the pretrained model was trained with, when `tokenizers_stage` differs from it.
        transfer_from: str | None = upstream(None)
        cache_stage: str = upstream("cache")

    @classmethod
    def from_config(cls, config: Config, **_deps: Any) -> FinetuneStage:
        return cls(config=config)

    def __init__(self, *, config: Config) -> None:
        self.config = config

    @classmethod
    def load(cls, directory: Path, *, registry: Any, device: str = "cpu", **_: Any) -> Any:
        """The fine-tuned model, like a train stage's (same files)."""
        from .train_model import TrainModelStage

        return TrainModelStage.load(directory, registry=registry, device=device)

    def training_data(self, dataset: Any) -> Any:
        """What the trainer reads from the cache's train split (a subclass may regroup it, e.g. into episodes)."""
        return dataset

    def run(self, ctx: StageContext) -> None:
        inputs = read_training_inputs(ctx, self.config)
        finetune_and_save(
            self.config,
            pretrained_dir=ctx.inputs.path(self.config.pretrained_stage),
            tokenizers=inputs.tokenizers,
            dataset=self.training_data(inputs.dataset),
            out_dir=ctx.out_dir,
            registry=ctx.registry,
            tracker=ctx.tracker,
            device=ctx.device,
            sample_examples=inputs.sample_examples,
            sample_tasks=inputs.sample_tasks,
            pretrained_tokenizers=None if (old := self.config.transfer_from) is None else ctx.inputs.load(old),
            stage_inputs=ctx.inputs,
        )


def pretrained_model(
    pretrained_dir: Path, *, tokenizers: Any, objectives: Any, registry: Any, pretrained_tokenizers: Any = None
) -> tuple[Spec, Any]:
    """The saved model (on CPU) and its Spec, checked against this run's tokenizers and objectives.

    With `pretrained_tokenizers` (those it was trained with) and other `tokenizers`, the model carried over to
    the new tokenizers' token space.
    """
    from mmgen.plugins.models.saved import load_trained_model, saved_spec

    spec, space = saved_spec(pretrained_dir, registry)
    check_attention(spec, objectives, registry=registry)
    spaces = [t.token_space for t in tokenizers.values()]

    def listed(found: list[Any]) -> str:
        return ", ".join(f"{s.name} {s.vocab_size} x {s.length}" for s in found)

    if pretrained_tokenizers is not None:
        trained_with = [t.token_space for t in pretrained_tokenizers.values()]
        if trained_with != list(space.spaces):
            raise UserError(
                f"finetune: transfer_from names tokenizers ({listed(trained_with)}) that the pretrained model"
                f" ({pretrained_dir}) was not trained with (its spaces: {listed(list(space.spaces))})"
            )
    elif list(space.spaces) != spaces:
        raise UserError(
            f"finetune: the tokenizers stage is not the one the pretrained model ({pretrained_dir}) was trained with"
            f" (its spaces: {listed(list(space.spaces))}; these: {listed(spaces)}); reuse the pretrained run's"
            " tokenizers stage, or name it in transfer_from to carry the model over to these tokenizers"
        )
    missing = [m for m in objective_specials(objectives, registry=registry) if m not in space.extra_specials]
    if missing:
        raise UserError(
            f"finetune: the objectives use markers {missing} that the pretrained model's token space lacks"
            f" (it has {list(space.extra_specials)}); fine-tune with the objectives it was trained with"
        )
    model = load_trained_model(pretrained_dir, registry)
    if pretrained_tokenizers is None or spaces == list(space.spaces):
        return spec, model
    transferred = transferred_model(
        model, spec, tokenizers=tokenizers, pretrained_tokenizers=pretrained_tokenizers, registry=registry
    )
    return spec, transferred


def transferred_model(model: Any, spec: Spec, *, tokenizers: Any, pretrained_tokenizers: Any, registry: Any) -> Any:
    """`model` carried over to the token space of `tokenizers` (its markers kept)."""
    from mmgen.api import JointTokenSpace
    from mmgen.plugins.models.token_transfer import transfer_state

    space = JointTokenSpace(
        spaces=[t.token_space for t in tokenizers.values()], extra_specials=model.token_space.extra_specials
    )
    new_model = registry.build(spec, token_space=space, tokenizers=None)
    new_model.load_state_dict(
        transfer_state(model, new_model, old_tokenizers=pretrained_tokenizers, new_tokenizers=tokenizers)
    )
    log.info(
        "finetune: carried over to the new token space (%s)",
        ", ".join(f"{s.name} {s.vocab_size} x {s.length}" for s in space.spaces),
    )
    return new_model.eval()


def restrict_training(model: Any, config: FinetuneStage.Config) -> dict[str, list[str]]:
    """Apply `freeze` and `lora` to `model` in place; returns the frozen parameters and adapted layers by name."""
    from mmgen.plugins.models.freeze import freeze, matching_parameters
    from mmgen.plugins.models.lora import add_adapters

    try:
        frozen = matching_parameters(model, config.freeze, option="freeze")
        adapted: list[str] = []
        if config.lora is not None:
            lora = config.lora
            keep = set(matching_parameters(model, lora.train, option="lora.train")) - set(frozen)
            frozen = [name for name, _ in model.named_parameters() if name not in keep]
            freeze(model, frozen)
            adapted = add_adapters(model, targets=lora.targets, rank=lora.rank, alpha=lora.alpha)
        else:
            freeze(model, frozen)
    except ValueError as exc:
        raise UserError(f"finetune: {exc}") from None
    return {"frozen": frozen, "adapted": adapted}


def combined_layouts(pretrained: TrainedLayouts | None, config: FinetuneStage.Config) -> TrainedLayouts | None:
    """The layouts pretraining and fine-tuning showed; None (every layout) stays None."""
    if pretrained is None:
        return None
    new = trained_layouts(config)  # reads tasks, trainer.steps and condition_dropout: finetune has them all
    names = {task.name for task in new.tasks}
    return TrainedLayouts(
        tasks=[*(t for t in pretrained.tasks if t.name not in names), *new.tasks],
        condition_dropout=max(pretrained.condition_dropout, new.condition_dropout),
    )


def finetune_and_save(
    config: FinetuneStage.Config,
    *,
    pretrained_dir: Path,
    tokenizers: Any,
    dataset: Any,
    out_dir: Path,
    registry: Any,
    tracker: Any = None,
    device: str = "cpu",
    sample_examples: Any = None,
    sample_tasks: Any = None,
    pretrained_tokenizers: Any = None,
    stage_inputs: Any = None,
) -> Any:
    """Fine-tune the model saved in `pretrained_dir` on `dataset` and save it in `out_dir`; returns the model."""
    from mmgen.api import env_world
    from mmgen.plugins.models.lora import merge_adapters
    from mmgen.plugins.models.saved import save_trained_model

    spec, model = pretrained_model(
        pretrained_dir,
        tokenizers=tokenizers,
        objectives=config.objectives,
        registry=registry,
        pretrained_tokenizers=pretrained_tokenizers,
    )
    spec, model = with_segments(spec, model, config.max_segments, registry=registry)
    spec, model = grow_answer_head(
        spec, model, config, inputs=stage_inputs, tokenizers=tokenizers, out_dir=out_dir, registry=registry
    )
    restricted = restrict_training(model, config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info(
        "finetune: %d of %d parameters train (%d frozen tensors, %d adapted layers)",
        trainable,
        parameter_count(model),
        len(restricted["frozen"]),
        len(restricted["adapted"]),
    )
    loss = training_loss(
        config.objectives,
        config.tasks,
        seed=config.trainer.run_seed,
        registry=registry,
        token_space=model.token_space,
        tokenizers=tokenizers,
        condition_dropout=config.condition_dropout,
    )
    if tracker is not None and env_world()[0] == 0:
        tracker.log_metrics({"trainable_parameters": float(trainable)})
    trainer, result = fit_with_samples(
        config,
        model=model,
        loss=loss,
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
        model = trainer.module.cpu()
        model.load_state_dict(final_weights(result.checkpoint))
        merge_adapters(model)  # a plain model again: W + (alpha / r) B A
        save_trained_model(Path(out_dir), state_dict=model.state_dict(), spec=spec, token_space=model.token_space)
        layouts = combined_layouts(read_trained_layouts(pretrained_dir), config)
        if layouts is not None:
            record_trained_layouts(Path(out_dir), layouts)
        if tracker is not None:
            log_model(Path(out_dir), tracker)
    return model
