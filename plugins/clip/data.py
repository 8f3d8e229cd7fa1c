"""CLIP training batches from the token cache: the image tokens and one caption's tokens per record."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import attrs
import torch


@attrs.frozen(kw_only=True)
class ClipBatch:
    image: torch.Tensor  # [B, L_image] image token ids
    text: torch.Tensor  # [B, L_text] text token ids
    lengths: torch.Tensor  # [B] text lengths

    def to(self, device: torch.device | str) -> ClipBatch:
        return ClipBatch(image=self.image.to(device), text=self.text.to(device), lengths=self.lengths.to(device))


def pair_collate(collate: Callable[[Sequence[Any]], Any], *, image_modality: str, text_modality: str) -> Callable:
    """Wrap a cache's collate (items -> TokenBatch) so it gives ClipBatches.

    The cache draws each item's caption from (seed, epoch, index), so every epoch
    pairs an image with another of its captions, reproducibly.
    """

    def to_pairs(items: Sequence[Any]) -> ClipBatch:
        batch = collate(items)
        text = batch.modality(text_modality)
        return ClipBatch(image=batch.modality(image_modality).tokens, text=text.tokens, lengths=text.lengths)

    return to_pairs
