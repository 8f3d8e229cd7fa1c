"""A transformer block for left-to-right models: MAGVLT's block that also returns its keys and values.

The keys and values of earlier slots are what a KV cache keeps, so a new token
costs one slot of work instead of a pass over the whole prefix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .transformer_block import TransformerBlock


class CausalBlock(TransformerBlock):
    """The same parameters as TransformerBlock (so the twins have the same size); also runs on a KV cache."""

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x [B, S, D], attn_mask [B, 1, S, S] (True = may attend). Returns the new states and the
        keys and values [B, H, S, D/H] of the S slots."""
        q, k, v = self._project(x)
        return self._finish(x, q, k, v, attn_mask), (k, v)

    def extend(
        self, x: torch.Tensor, attn_mask: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, *, at: int
    ) -> torch.Tensor:
        """x [B, n, D]: n new slots after `at` cached ones. Their keys and values are written into the
        preallocated `keys` / `values` [B, H, capacity, D/H] at slots at..at+n-1 (in place: no copy of
        the past, which a concatenation would make at every step); attention runs over the first at + n.
        attn_mask [B, 1, n, at + n]."""
        q, k, v = self._project(x)
        stop = at + x.shape[1]
        keys[:, :, at:stop] = k
        values[:, :, at:stop] = v
        return self._finish(x, q, keys[:, :, :stop], values[:, :, :stop], attn_mask)

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, length, width = x.shape
        qkv = self.qkv(self.attention_norm(x)).view(batch, length, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        return q, k, v

    def _finish(
        self, x: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None
    ) -> torch.Tensor:
        batch, length, width = x.shape
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.residual_dropout(self.attention_out(out.transpose(1, 2).reshape(batch, length, width)))
        return x + self.residual_dropout(self.mlp_out(F.gelu(self.mlp_in(self.mlp_norm(x)))))
