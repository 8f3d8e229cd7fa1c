"""Vector quantizer: nearest codebook entry with a straight-through gradient (van den Oord et al. 2017).

Dead codes are the usual failure of a learned codebook: entries that no latent
picks stop receiving gradient. Two remedies, both optional: an l2-normalised
lookup (cosine similarity on the unit sphere; Yu et al. 2022, ViT-VQGAN sec. 3.2)
and restarting codes unused for `dead_after` training steps at random latents of
the current batch (Dhariwal et al. 2020, Jukebox sec. 3.2 / App. A). A new
quantizer counts every code as never used, so the first training step with
restarts places the whole codebook on real latents (a data-dependent init, as
SoundStream's k-means init): with a random codebook a few codes catch every
latent, the decoder learns to ignore them, and training can stall there.

Restarts leave twins: codes moved onto the same (or nearly the same) latent,
mostly blank canvas. Which twin a latent gets then follows the float path
(batch size, torch's AVX-512 / AVX2 / scalar kernels, MKL's modes), and a model
trained on one twin meets the other on another CPU. `merge_twins` maps every
twin group to its lowest id after training, so encoding is the same on any
float path; the entries stay, so every id still decodes.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F
from torch import nn


NEVER_USED = 2**62
# Entries closer than this (relative to the RMS entry norm, in lookup space) are twins. On the Shapes
# VQ-GAN after 5,000 updates nearest-neighbour distances are 0 (106 codes), 1e-8 to 1e-4 (71), then only 2
# up to 1e-3 and 333 above: a latent cannot tell entries 1e-4 apart from float noise (~1e-7) often.
TWIN_TOLERANCE = 1e-4


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


@attrs.frozen(kw_only=True)
class Restart:
    """Ask a training forward to first move codes unused for `dead_after` updates onto its own latents."""

    dead_after: int
    generator: torch.Generator


@attrs.frozen(kw_only=True)
class Quantized:
    """`quantized` [B, D, h, w] carries the straight-through gradient to the encoder."""

    quantized: torch.Tensor
    codes: torch.Tensor
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor
    restarted: int = 0


class VectorQuantizer(nn.Module):
    def __init__(self, *, codebook_size: int, dim: int, l2_normalize: bool) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.dim = dim
        self.l2_normalize = l2_normalize
        weight = torch.empty(codebook_size, dim)
        if l2_normalize:
            nn.init.normal_(weight)
        else:
            nn.init.uniform_(weight, -1.0 / codebook_size, 1.0 / codebook_size)
        self.codebook = nn.Parameter(weight)
        # Training steps since each code was last picked; drives dead-code restarts.
        self.register_buffer("steps_unused", torch.full((codebook_size,), NEVER_USED, dtype=torch.long))
        # The id each lookup result is reported as: itself, or its twin group's lowest id after `merge_twins`.
        # Derived from the codebook, so it is not saved: a loaded quantizer merges again.
        self.register_buffer("canonical", torch.arange(codebook_size), persistent=False)

    def entries(self) -> torch.Tensor:
        """The codebook as used for lookup: [K, D]."""
        return F.normalize(self.codebook, dim=1) if self.l2_normalize else self.codebook

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, h, w] -> code vectors [B, D, h, w]."""
        return F.embedding(codes, self.entries()).permute(0, 3, 1, 2)

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest entry for each row of `flat` [N, D] (already normalised if l2)."""
        entries = self.entries()
        if self.l2_normalize:
            return self.canonical[(flat @ entries.T).argmax(dim=1)]
        distances = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ entries.T + entries.pow(2).sum(1)[None]
        return self.canonical[distances.argmin(dim=1)]

    @torch.no_grad()
    def merge_twins(self, *, tolerance: float = TWIN_TOLERANCE) -> int:
        """Report every entry within `tolerance` (relative) of a lower id as that id's group's lowest id from
        now on; returns how many ids are merged away. In float64, so the groups do not depend on the CPU."""
        entries = self.entries().detach().to("cpu", torch.float64)
        scale = entries.pow(2).sum(1).mean().sqrt()
        close = torch.cdist(entries, entries) <= tolerance * scale
        canonical = torch.arange(self.codebook_size)
        for code in range(self.codebook_size):
            first = int(close[code].nonzero()[0])  # itself at the latest: the diagonal is 0
            canonical[code] = canonical[first]
        self.canonical = canonical.to(self.codebook.device)
        return int((canonical != torch.arange(self.codebook_size)).sum())

    def forward(self, z: torch.Tensor, *, restart: Restart | None = None) -> Quantized:
        b, d, h, w = z.shape
        if self.l2_normalize:
            z = F.normalize(z, dim=1)
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        # Restart before the lookup: the codebook is changed before this step's graph uses it.
        restarted = self.restart_dead(flat.detach(), dead_after=restart.dead_after, generator=restart.generator) if restart else 0
        with torch.no_grad():
            codes = self.nearest(flat)
        chosen = self.embed(codes.view(b, h, w))
        if self.training:
            self._count_usage(codes)
        return Quantized(
            quantized=z + (chosen - z).detach(),
            codes=codes.view(b, h, w),
            # The codebook moves towards the latents; the encoder commits to its codes.
            codebook_loss=F.mse_loss(chosen, z.detach()),
            commitment_loss=F.mse_loss(z, chosen.detach()),
            restarted=restarted,
        )

    @torch.no_grad()
    def _count_usage(self, codes: torch.Tensor) -> None:
        used = (torch.bincount(codes, minlength=self.codebook_size) > 0).long()
        if _distributed():
            torch.distributed.all_reduce(used, op=torch.distributed.ReduceOp.MAX)  # used on any rank
        self.steps_unused.add_(1).masked_fill_(used.bool(), 0)

    @torch.no_grad()
    def restart_dead(self, latents: torch.Tensor, *, dead_after: int, generator: torch.Generator) -> int:
        """Move codes unused for `dead_after` steps onto random latents [N, D]; returns how many moved."""
        dead = (self.steps_unused >= dead_after).nonzero().flatten()
        if dead.numel() == 0:
            return 0
        picks = torch.randint(latents.shape[0], (dead.numel(),), generator=generator, device=generator.device)
        self.codebook[dead] = latents[picks.to(latents.device)].to(self.codebook.dtype)
        if _distributed():
            # Every rank drew from its own batch; rank 0's choice keeps the replicas equal.
            torch.distributed.broadcast(self.codebook.data, src=0)
        self.steps_unused[dead] = 0
        return int(dead.numel())
