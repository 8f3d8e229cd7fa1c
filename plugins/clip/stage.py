"""Recipe stage `clip`: train the dual encoder contrastively on the image-caption pairs of the token cache."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import attrs

from mmgen.api import StageContext, TrainerConfig, upstream

log = logging.getLogger(__name__)


class ClipStage:
    """Trains the dual encoder with the shared Trainer on the token cache the train stage reads; saves it.

    Writes `clip.json` + `clip.pt` (see model.py). When the cache has a
    validation split it logs held-out retrieval: among `eval_records` val
    pairs, how often an image's own caption scores best (and the reverse).
    """

    name: ClassVar[str] = "clip"

    @attrs.frozen(kw_only=True)
    class Config:
        width: int = 128
        depth: int = 2
        heads: int = 4
        embed_dim: int = 64
        trainer: TrainerConfig = TrainerConfig(steps=300, batch_size=64, lr=1e-3, warmup_steps=30, checkpoint_every=100)
        train_split: str = "train"  # splits of the token cache
        eval_split: str = "val"
        eval_records: int = 256
        image_modality: str = "image"
        text_modality: str = "text"
        tokenizers_stage: str = upstream("tokenizers")
        cache_stage: str = upstream("cache")

    def __init__(self, config: Config) -> None:
        self.config = config

    @classmethod
    def from_config(cls, config: Config, **_: Any) -> ClipStage:
        return cls(config)

    @classmethod
    def load(cls, directory: Path, *, device: str = "cpu", **_: Any) -> Any:
        """The trained CLIP model (model.py), on `device`, in eval mode."""
        from .model import load_clip

        return load_clip(directory, device=device)

    def run(self, ctx: StageContext) -> None:
        from mmgen.api import Trainer

        from .data import pair_collate
        from .model import ClipModel, ClipSizes, save_clip

        config = self.config
        tokenizers = ctx.inputs.load(config.tokenizers_stage)
        cache = ctx.inputs.load(config.cache_stage)
        dataset = cache.split(config.train_split, seed=config.trainer.run_seed, tokenizers=tokenizers)
        image_space = tokenizers[config.image_modality].token_space
        text_space = tokenizers[config.text_modality].token_space
        model = ClipModel(
            ClipSizes(
                image_vocab=image_space.vocab_size,
                image_length=image_space.length,
                text_vocab=text_space.vocab_size,
                text_length=text_space.length,
                width=config.width,
                depth=config.depth,
                heads=config.heads,
                embed_dim=config.embed_dim,
            )
        )
        collate = pair_collate(
            dataset.collate, image_modality=config.image_modality, text_modality=config.text_modality
        )
        trainer = Trainer(
            config.trainer,
            out_dir=ctx.out_dir / "trainer",
            tracker=ctx.tracker,
            device=ctx.device,
            progress_desc="clip",
        )
        trainer.fit(model, loss_fn=clip_loss, stream=trainer.make_stream(dataset, collate=collate))
        if not trainer.is_main:
            return
        trained = trainer.sampling_module.eval()
        save_clip(trained, ctx.out_dir)
        if cache.has(config.eval_split):
            held_out = cache.split(config.eval_split, seed=config.trainer.run_seed, tokenizers=tokenizers)
            retrieval = held_out_retrieval(trained, held_out, collate=collate, count=config.eval_records)
            ctx.tracker.log_metrics(retrieval)
            log.info("clip: held-out retrieval %s", retrieval)


def clip_loss(module: Any, batch: Any, step: int, generator: Any) -> Any:
    """`loss_fn` for the Trainer: symmetric InfoNCE over the batch."""
    from mmgen.api import ObjectiveOutput

    from .loss import contrastive_loss

    scale = module.scale()
    loss, accuracy = contrastive_loss(
        module.encode_image(batch.image), module.encode_text(batch.text, batch.lengths), scale
    )
    return ObjectiveOutput(loss=loss, metrics={"accuracy": accuracy, "scale": scale.detach()})


def held_out_retrieval(model: Any, dataset: Any, *, collate: Any, count: int) -> dict[str, float]:
    import torch

    from .loss import retrieval_accuracy

    batch = collate(dataset.__getitems__(list(range(min(count, len(dataset))))))
    device = next(model.parameters()).device
    with torch.no_grad():
        image = model.encode_image(batch.image.to(device))
        text = model.encode_text(batch.text.to(device), batch.lengths.to(device))
    return retrieval_accuracy(image, text)
