"""CLIP's symmetric contrastive loss (Radford et al., 2021, fig. 3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of image->text and text->image cross-entropy over the batch; and the image->text top-1 accuracy.

    `image`, `text` are unit embeddings [B, E] of matching pairs (row i with row i).
    """
    logits = scale * image @ text.T
    labels = torch.arange(image.shape[0], device=image.device)
    loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    accuracy = (logits.argmax(dim=1) == labels).float().mean()
    return loss, accuracy


def retrieval_accuracy(image: torch.Tensor, text: torch.Tensor) -> dict[str, float]:
    """Top-1 retrieval among N pairs: image -> its text, and text -> its image (chance: 1 / N)."""
    similarity = image @ text.T
    labels = torch.arange(image.shape[0], device=image.device)
    return {
        "image_to_text_top1": (similarity.argmax(dim=1) == labels).float().mean().item(),
        "text_to_image_top1": (similarity.argmax(dim=0) == labels).float().mean().item(),
    }
