"""Left-to-right attention over a packed sequence (ARGVLT, the unidirectional twin of MAGVLT).

One rule for training, the full forward pass and cached sampling: a query sees
itself and every earlier slot that is not padding. The causal_lm objective and
the autoregressive sampler give the model this mask in `Packed.attn_mask`, so
any model that honours the mask (MAGVLT's too) attends left to right.
"""

from __future__ import annotations

import attrs
import torch

from mmgen.api import Packed


def causal_attention(key_padding: torch.Tensor) -> torch.Tensor:
    """[B, S, S] True where query q may attend to key k: k <= q, and k is not padding unless k == q."""
    length = key_padding.shape[1]
    earlier = torch.ones(length, length, dtype=torch.bool, device=key_padding.device).tril()
    eye = torch.eye(length, dtype=torch.bool, device=key_padding.device)
    # A padding query still sees itself (as `pack` does), so no row of the mask is empty.
    return earlier[None] & (~key_padding[:, None, :] | eye[None])


def causal(packed: Packed) -> Packed:
    """`packed` with its attention restricted to left to right (and any mask it had kept)."""
    mask = causal_attention(packed.key_padding)
    if packed.attn_mask is not None:
        mask = mask & packed.attn_mask
    return attrs.evolve(packed, attn_mask=mask)
