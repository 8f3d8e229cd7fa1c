"""The `tokenizers` recipe stage: trains each modality's tokenizer on the data stage's stores."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import attrs

from mmgen.api import FieldError, Spec, StageContext, components, upstream

from .saved import load_saved_tokenizers, save_tokenizers

log = logging.getLogger(__name__)


class TokenizersStage:
    """Builds every listed tokenizer, fits the trainable ones, saves all in listed order.

    The listed order is the joint token space's order, so list the image tokenizer
    first for MAGVLT's layout (image codes, then text codes). A trainable tokenizer
    has `fit(records, *, out_dir, tracker, device, seed)`, where `records(split)` is
    the data stage's store of that split: a map-style sequence of Records (random
    access for shuffled training batches; iterating it reads them in order).
    Training options live in each tokenizer's own Config.
    """

    name: ClassVar[str] = "tokenizers"

    @attrs.frozen(kw_only=True)
    class Config:
        tokenizers: tuple[Spec, ...] = components("tokenizers")
        data_stage: str = upstream("data")
        seed: int | None = None  # each fit's seed; None: the recipe's

        def __attrs_post_init__(self) -> None:
            if not self.tokenizers:  # checked when the recipe loads, not after earlier stages ran
                message = "the tokenizers stage needs at least one tokenizer: give `tokenizers: [{use: ...}]`"
                raise FieldError("tokenizers", message)

    def __init__(self, *, config: Config) -> None:
        self.config = config

    @classmethod
    def from_config(cls, config: Config, **_: Any) -> TokenizersStage:
        return cls(config=config)

    @classmethod
    def load(cls, directory: Path, *, registry: Any, **_: Any) -> dict[str, Any]:
        """The saved tokenizers by modality, in joint-space order, each checked against its content hash."""
        return load_saved_tokenizers(directory, registry)

    def run(self, ctx: StageContext) -> None:
        records = ctx.inputs.load(self.config.data_stage).records
        seed = ctx.seed if self.config.seed is None else self.config.seed
        tokenizers: dict[str, Any] = {}
        for spec in self.config.tokenizers:
            tokenizer = ctx.registry.build(spec)
            if tokenizer.modality in tokenizers:
                raise ValueError(f"two tokenizers for modality {tokenizer.modality!r}")
            fit = getattr(tokenizer, "fit", None)
            if fit is not None:
                log.info("training the %s tokenizer (%s)", tokenizer.modality, spec.use)
                work = ctx.out_dir / "work" / tokenizer.modality
                fit(records, out_dir=work, tracker=ctx.tracker, device=ctx.device, seed=seed)
            tokenizers[tokenizer.modality] = tokenizer
        save_tokenizers(tokenizers, ctx.out_dir)
