"""Freezing named parameters for fine-tuning: the trainer then neither updates nor averages them.

Patterns are fnmatch patterns over parameter names (`model.named_parameters()`:
`code_embedding.weight`, `blocks.0.qkv.weight`, ...): the first two blocks are
`blocks.0.*` and `blocks.1.*`. A pattern that names nothing is an error, so a
typo never silently trains what it meant to freeze.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from torch import nn


def matching_parameters(model: nn.Module, patterns: Sequence[str], *, option: str) -> list[str]:
    """Names of the parameters matching any pattern (ValueError naming `option` for a pattern that matches none)."""
    names = [name for name, _ in model.named_parameters()]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            groups = sorted({name.split(".")[0] for name in names})
            raise ValueError(
                f"{option}: {pattern!r} names no parameter of the model (its parameters start with:"
                f" {', '.join(groups)}; e.g. 'blocks.0.*' for the first block)"
            )
    return [name for name in names if any(fnmatch.fnmatchcase(name, p) for p in patterns)]


def freeze(model: nn.Module, names: Sequence[str]) -> None:
    """requires_grad False on the named parameters."""
    parameters = dict(model.named_parameters())
    for name in names:
        parameters[name].requires_grad_(False)
