"""A transformer block for left-to-right models: MAGVLT's block that also returns its keys and values.

The keys and values of earlier slots are what a KV cache keeps, so a new token
costs one slot of work instead of a pass over the whole prefix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .transformer_block import TransformerBlock


class CausalBlock(TransformerBlock):
    """The same parameters as TransformerBlock (so the twins have the same size); attention over past + new slots."""

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x [B, n, D] new slots; past: keys and values [B, H, P, D/H] of earlier slots or None.

        attn_mask [B, 1, n, P + n] (True = may attend). Returns the new states and the keys and
        values of all P + n slots.
        """
        batch, length, width = x.shape
        h = self.attention_norm(x)
        q, k, v = self.qkv(h).view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.residual_dropout(self.attention_out(out.transpose(1, 2).reshape(batch, length, width)))
        x = x + self.residual_dropout(self.mlp_out(F.gelu(self.mlp_in(self.mlp_norm(x)))))
        return x, (k, v)
