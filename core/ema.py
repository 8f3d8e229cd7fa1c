"""Exponential moving average of a module's parameters, for sampling.

The average lives in plain shadow tensors (one per parameter, same sharding as
the parameter), not in a second module: a module sharded with FSDP2 cannot be
deep-copied, but its sharded parameters can be averaged shard by shard.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Mapping

import torch
from torch import nn


class EMA:
    """shadow <- decay * shadow + (1 - decay) * param after every optimizer step."""

    def __init__(self, module: nn.Module, *, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema decay must be in [0, 1), got {decay}")
        self.decay = decay
        # Every name of a tied parameter (an embedding shared with the output
        # head) maps to one shadow tensor, so the saved averages cover each key
        # of the module's state_dict and a tied pair stays tied.
        self.shadow: dict[str, torch.Tensor] = {}
        self._unique: list[str] = []
        first_name: dict[int, str] = {}
        for name, p in module.named_parameters(remove_duplicate=False):
            if not p.requires_grad:
                continue
            if id(p) in first_name:
                self.shadow[name] = self.shadow[first_name[id(p)]]
            else:
                first_name[id(p)] = name
                self._unique.append(name)
                self.shadow[name] = p.detach().clone()

    def _pairs(self, module: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(shadow, parameter) for each distinct tracked parameter."""
        params = dict(module.named_parameters(remove_duplicate=False))
        missing = set(self.shadow) - set(params)
        if missing:
            raise KeyError(f"module lacks parameters the EMA tracks: {sorted(missing)[:5]}")
        return [self.shadow[n] for n in self._unique], [params[n].detach() for n in self._unique]

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        shadows, params = self._pairs(module)
        # lerp(shadow, param, 1 - decay) == decay * shadow + (1 - decay) * param.
        for shadow, param in zip(shadows, params):
            shadow.lerp_(param.to(shadow.dtype), 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Overwrite `module`'s tracked parameters with the averages."""
        shadows, params = self._pairs(module)
        for shadow, param in zip(shadows, params):
            param.copy_(shadow)

    @contextmanager
    def applied(self, module: nn.Module) -> Iterator[nn.Module]:
        """Run a block with the averages swapped into `module`, then restore its weights."""
        _, params = self._pairs(module)
        with torch.no_grad():
            backup = [p.clone() for p in params]
        self.copy_to(module)
        try:
            yield module
        finally:
            with torch.no_grad():
                for param, saved in zip(params, backup):
                    param.copy_(saved)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        if set(state) != set(self.shadow):
            raise KeyError(
                f"EMA state names differ: missing {sorted(set(self.shadow) - set(state))[:5]},"
                f" unexpected {sorted(set(state) - set(self.shadow))[:5]}"
            )
        for name, value in state.items():
            self.shadow[name].copy_(value)
