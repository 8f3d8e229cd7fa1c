"""A transformer block for left-to-right models: MAGVLT's block that also returns its keys and values.

The keys and values of earlier slots are what a KV cache keeps, so a new token
costs one slot of work instead of a pass over the whole prefix (`extend`,
inherited from TransformerBlock).
"""

from __future__ import annotations

import torch

from .transformer_block import TransformerBlock


class CausalBlock(TransformerBlock):
    """The same parameters as TransformerBlock (so the twins have the same size); also runs on a KV cache."""

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x [B, S, D], attn_mask [B, 1, S, S] (True = may attend). Returns the new states and the
        keys and values [B, H, S, D/H] of the S slots."""
        return self.forward_keeping(x, attn_mask)
