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

    `keep_stage` (optional) names a finished tokenizers stage whose tokenizers are
    kept as they are for every modality not listed here: a fine-tune that needs
    new text pieces refits the text tokenizer and keeps the pretrained image
    tokenizer (and so its codes). The kept stage's order stays; a listed
    tokenizer takes its modality's place, a listed new modality comes last.
    """

    name: ClassVar[str] = "tokenizers"

    @attrs.frozen(kw_only=True)
    class Config:
        tokenizers: tuple[Spec, ...] = components("tokenizers")
        data_stage: str = upstream("data")
        seed: int | None = None  # each fit's seed; None: the recipe's
        # A finished tokenizers stage whose tokenizers are kept for the modalities not listed above.
        keep_stage: str | None = upstream(None)

        def __attrs_post_init__(self) -> None:
            # Checked when the recipe loads, not after earlier stages ran.
            if not self.tokenizers and self.keep_stage is None:
                message = (
                    "the tokenizers stage needs at least one tokenizer: give `tokenizers: [{use: ...}]` or a keep_stage"
                )
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
        fitted: dict[str, Any] = {}
        for spec in self.config.tokenizers:
            tokenizer = ctx.registry.build(spec)
            if tokenizer.modality in fitted:
                raise ValueError(f"two tokenizers for modality {tokenizer.modality!r}")
            fit = getattr(tokenizer, "fit", None)
            if fit is not None:
                log.info("training the %s tokenizer (%s)", tokenizer.modality, spec.use)
                work = ctx.out_dir / "work" / tokenizer.modality
                fit(records, out_dir=work, tracker=ctx.tracker, device=ctx.device, seed=seed)
            fitted[tokenizer.modality] = tokenizer
        kept: dict[str, Any] = {}
        if self.config.keep_stage is not None:
            kept = ctx.inputs.load(self.config.keep_stage)
            log.info("kept from stage %s: %s", self.config.keep_stage, ", ".join(m for m in kept if m not in fitted))
        save_tokenizers(kept_then_fitted(kept, fitted), ctx.out_dir)


def kept_then_fitted(kept: dict[str, Any], fitted: dict[str, Any]) -> dict[str, Any]:
    """The kept tokenizers in their order, each replaced by a fitted one of its modality; new modalities last."""
    merged = {modality: fitted.get(modality, tokenizer) for modality, tokenizer in kept.items()}
    merged.update({modality: tokenizer for modality, tokenizer in fitted.items() if modality not in merged})
    return merged
