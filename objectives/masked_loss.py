"""Cross-entropy on masked positions only (MAGVLT sec. 3.2), averaged over all of them."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F


def masked_cross_entropy(
    logits: Mapping[str, torch.Tensor],
    targets: Mapping[str, torch.Tensor],
    *,
    label_smoothing: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean label-smoothed CE over every masked token of every modality, and its accuracy.

    `logits[m]` [N_m, V_m] and `targets[m]` [N_m] (modality-local ids). One mean
    over all tokens (not a mean per modality): each masked token counts once.
    """
    total = sum(int(t.numel()) for t in targets.values())
    if total == 0:
        raise ValueError("no masked tokens to predict")
    loss = (
        sum(
            F.cross_entropy(logits[m], targets[m], label_smoothing=label_smoothing, reduction="none").sum()
            for m in logits
        )
        / total
    )
    with torch.no_grad():
        correct = sum(int((logits[m].argmax(dim=-1) == targets[m]).sum()) for m in logits)
    return loss, {"accuracy": correct / total, "masked_tokens": float(total)}
