"""One pre-LayerNorm bidirectional transformer block (MAGVLT sec. 3.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TransformerBlock(nn.Module):
    """x + Attention(LN(x)), then x + MLP(LN(x)); attention and MLP with biases.

    Besides `forward`, two ways to run it over a cache of earlier slots' keys and values
    (ARGVLT's KV cache, MAGVLT's cached condition): `forward_keeping` also returns the keys
    and values of its slots, `extend` runs new slots after cached ones.
    """

    def __init__(self, *, width: int, heads: int, dropout: float = 0.0, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.attention_norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)  # one matmul for query, key and value
        self.attention_out = nn.Linear(width, width)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp_in = nn.Linear(width, mlp_ratio * width)
        self.mlp_out = nn.Linear(mlp_ratio * width, width)
        self.residual_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, S, D]; attn_mask [B, 1, S, S] (True = may attend) or None for full attention."""
        q, k, v = self._project(x)
        return self._finish(x, q, k, v, attn_mask)

    def forward_keeping(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """As `forward`, also returning the keys and values [B, H, S, D/H] of the S slots."""
        q, k, v = self._project(x)
        return self._finish(x, q, k, v, attn_mask), (k, v)

    def extend(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None, keys: torch.Tensor, values: torch.Tensor, *, at: int
    ) -> torch.Tensor:
        """x [B, n, D]: n new slots after `at` cached ones. Their keys and values are written into the
        preallocated `keys` / `values` [B, H, capacity, D/H] at slots at..at+n-1 (in place: no copy of
        the past, which a concatenation would make at every step); attention runs over the first at + n.
        attn_mask [B, 1, n, at + n] or None (every slot may attend to every one)."""
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


def grow_slots(buffer: torch.Tensor, capacity: int, *, dim: int = 2) -> torch.Tensor:
    """`buffer` lengthened to `capacity` slots along `dim` (keys and values [B, H, slots, D/H]: dim 2),
    its content first and zeros after: the room `extend` writes new slots into."""
    shape = list(buffer.shape)
    shape[dim] = capacity
    grown = buffer.new_zeros(shape)
    grown.narrow(dim, 0, buffer.shape[dim]).copy_(buffer)
    return grown
