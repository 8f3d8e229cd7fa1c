"""Cross-entropy on masked positions only (MAGVLT sec. 3.2), averaged over all of them.

`class_balance` (alpha, not in MAGVLT; 0 = the paper's plain mean) weights each
masked token by n_c ** -alpha, n_c being how often its class occurs among the
modality's masked targets in this batch, with the weights rescaled to average 1.
On Shapes 84% of image tokens are the blank canvas; alpha > 0 lets the rare
object tokens carry more of the gradient, so objects are drawn sooner, but it
also keeps the model from learning where the caption puts them (README, "MAGVLT:
how fast it learns on a CPU"), so the recipes keep the paper's alpha = 0.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F


def class_weights(targets: torch.Tensor, *, alpha: float) -> torch.Tensor:
    """[N] weights n_c ** -alpha per target, rescaled to mean 1 (all ones when alpha is 0)."""
    if alpha == 0.0 or targets.numel() == 0:
        return torch.ones(targets.shape, device=targets.device)
    _, inverse, counts = torch.unique(targets, return_inverse=True, return_counts=True)
    weights = counts[inverse].float().pow(-alpha)
    return weights * (targets.numel() / weights.sum())


def masked_cross_entropy(
    logits: Mapping[str, torch.Tensor],
    targets: Mapping[str, torch.Tensor],
    *,
    label_smoothing: float,
    class_balance: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean label-smoothed CE over every masked token of every modality, and its accuracy.

    `logits[m]` [N_m, V_m] and `targets[m]` [N_m] (modality-local ids). One mean
    over all tokens (not a mean per modality): each masked token counts once.
    """
    total = sum(int(t.numel()) for t in targets.values())
    if total == 0:
        raise ValueError("no masked tokens to predict")
    if class_balance < 0.0:
        raise ValueError(f"class_balance must be >= 0, got {class_balance}")
    loss = (
        sum(
            (
                F.cross_entropy(logits[m], targets[m], label_smoothing=label_smoothing, reduction="none")
                * class_weights(targets[m], alpha=class_balance)
            ).sum()
            for m in logits
        )
        / total
    )
    with torch.no_grad():
        correct = sum(int((logits[m].argmax(dim=-1) == targets[m]).sum()) for m in logits)
    return loss, {"accuracy": correct / total, "masked_tokens": float(total)}
