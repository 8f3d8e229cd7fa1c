"""Low-rank adapters (LoRA, Hu et al. 2021) for fine-tuning: W x + (alpha / r) B A x with W frozen.

`add_adapters` swaps each matching nn.Linear of a model for a LoRALinear
holding the original layer and two small matrices; only those train. B
starts at zero, so the adapted model computes exactly what the pretrained
one did until the first update. `merge_adapters` folds B A back into W and
puts the plain nn.Linear back, so a fine-tuned model is saved, loaded and
sampled like any other: generation needs nothing of this module.

peft is not used: it targets Hugging Face models; ours are plain nn.Modules
whose linear layers are named (blocks.0.qkv, ...), and the adapter is a few
lines.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence

import torch
from torch import nn


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable rank-r update."""

    def __init__(self, base: nn.Linear, *, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        # A as nn.Linear's own init (Kaiming uniform); B zero, so the update starts at nothing.
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale

    def merged(self) -> nn.Linear:
        """The base layer with B A folded into its weight."""
        with torch.no_grad():
            self.base.weight += (self.lora_b @ self.lora_a) * self.scale
        return self.base


def _matching(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and any(fnmatch.fnmatchcase(name, p) for p in patterns)
    ]


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def add_adapters(model: nn.Module, *, targets: Sequence[str], rank: int, alpha: float) -> list[str]:
    """Put an adapter on every nn.Linear named by `targets` (fnmatch); returns their names (none: ValueError)."""
    names = _matching(model, targets)
    if not names:
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        raise ValueError(
            f"lora.targets {list(targets)} name no linear layer of the model"
            f" (its linear layers: {', '.join(linears[:8])}{', ...' if len(linears) > 8 else ''})"
        )
    for name in names:
        _replace(model, name, LoRALinear(model.get_submodule(name), rank=rank, alpha=alpha))
    return names


def merge_adapters(model: nn.Module) -> int:
    """Fold every adapter into its layer and restore plain nn.Linear modules; returns how many."""
    names = [name for name, module in model.named_modules() if isinstance(module, LoRALinear)]
    for name in names:
        _replace(model, name, model.get_submodule(name).merged())
    return len(names)
