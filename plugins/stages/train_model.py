"""The `train` recipe stage: trains a model on the token cache with the recipe's objectives and tasks.

Reads the `tokenizers` artefact (to build the joint token space) and the
`cache` artefact (`train.lmdb`), trains with `mmgen.trainer.Trainer` and saves
the final weights (the EMA ones when EMA is on) with the model's Spec and token
space, for `mmgen.plugins.models.saved.load_trained_model`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
) -> Training:
    extra = [name for spec in objectives for name in getattr(registry.get(spec.kind, spec.use), "extra_specials", ())]
    space = joint_space(tokenizers, extra)
    built = [registry.build(spec, token_space=space, tokenizers=tokenizers) for spec in objectives]

    from mmgen.objectives.training_loss import TrainingLoss

    return Training(
        token_space=space,
        model=registry.build(model, token_space=space),
        loss=TrainingLoss(built, TaskDraw(tasks, seed=seed)),
    )


def final_weights(checkpoint: Path) -> dict[str, Any]:
    """The model weights of a trainer checkpoint, with the EMA weights in place when it has them."""
    from mmgen.checkpoint import load

    state = load(checkpoint)
    return {**state["model"], **(state["ema"] or {})}


class TrainModelStage:
    name: ClassVar[str] = "train"

    @attrs.frozen(kw_only=True)
    class Config:
        model: Spec = component("models", default={"use": "magvlt"})
        objectives: tuple[Spec, ...] = components("objectives", default=PAPER_OBJECTIVES)
        # p_tau: T2I : I2T : IT2IT = 8 : 1 : 1 by default.
        tasks: dict[str, TaskConfig] = attrs.field(factory=paper_tasks)
        trainer: TrainerConfig = attrs.field(factory=TrainerConfig)
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
        dataset = TokenCacheDataset(
            ctx.artefact(config.cache_stage) / TRAIN_SPLIT_FILE, seed=config.trainer.seed, tokenizers=tokenizers
        )
        train_and_save(
            config,
            tokenizers=tokenizers,
            dataset=dataset,
            out_dir=ctx.out_dir,
            registry=ctx.registry,
            tracker=ctx.tracker,
            device=ctx.device,
        )


def train_and_save(
    config: TrainModelStage.Config,
    *,
    tokenizers: Any,
    dataset: Any,
    out_dir: Path,
    registry: Any,
    tracker: Any = None,
    device: str = "cpu",
) -> Training:
    """Train on `dataset` (items that `dataset.collate` turns into a TokenBatch) and save the model in `out_dir`."""
    from mmgen.plugins.models.saved import save_trained_model
    from mmgen.trainer import Trainer

    training = build_training(
        model=config.model,
        objectives=config.objectives,
        tasks=config.tasks,
        seed=config.trainer.seed,
        registry=registry,
        tokenizers=tokenizers,
    )
    trainer = Trainer(config.trainer, out_dir=Path(out_dir) / "trainer", tracker=tracker, device=device)
    stream = trainer.make_stream(dataset, collate=dataset.collate)
    result = trainer.fit(training.model, loss_fn=training.loss, stream=stream)
    if result.checkpoint is not None:  # rank 0 only
        save_trained_model(
            Path(out_dir),
            state_dict=final_weights(result.checkpoint),
            spec=config.model,
            token_space=training.token_space,
        )
    return training
