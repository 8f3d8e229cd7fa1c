"""The VQ-GAN training objective (Esser et al. 2021, eq. 4-7) as a `loss_fn` for `mmgen.trainer`.

L = rec + perceptual + codebook + beta * commitment + lambda * GAN, where lambda
is the adaptive weight (eq. 7): the ratio of the reconstruction and GAN
gradient norms at the decoder's last layer, times `disc_weight`, zero before
`disc_start`. One optimizer trains generator and discriminator together: the
generator's adversarial term is computed with the discriminator's parameters
frozen, and the discriminator's hinge loss sees detached reconstructions.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Literal

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from mmgen.api import ObjectiveOutput, existing_file

from .autoencoder import VQAutoencoder, pixels_to_unit
from .discriminator import PatchDiscriminator
from .perceptual import LPIPS
from .quantizer import Restart

log = logging.getLogger(__name__)

@attrs.frozen(kw_only=True)
class LossConfig:
    """Loss weights and the GAN schedule.

    `reconstruction`: taming uses l1 + LPIPS; on flat-colour images l2 learns
    much faster (l1's median prefers the white background under uncertainty).
    `perceptual_weights`: a local LPIPS file (see `perceptual.py`), which must
    exist when the recipe loads; None turns the perceptual term off. `disc_start`: the update at which
    the discriminator and the adversarial term switch on (None: never).
    `dead_after`: restart codes unused for this many updates (None: never).
    """

    reconstruction: Literal["l1", "l2"] = "l2"
    reconstruction_weight: float = 1.0
    perceptual_weight: float = 1.0
    perceptual_weights: str | None = attrs.field(default=None, validator=existing_file)
    codebook_weight: float = 1.0
    commitment_weight: float = 0.25
    disc_start: int | None = None
    disc_weight: float = 0.8
    disc_channels: int = 64
    disc_layers: int = 3
    dead_after: int | None = 20


class VQGANTrainee(nn.Module):
    """Everything the optimizer updates: the autoencoder and its discriminator (plus the frozen LPIPS net)."""

    def __init__(self, autoencoder: VQAutoencoder, loss: LossConfig) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.discriminator = (
            PatchDiscriminator(
                in_channels=autoencoder.architecture.in_channels,
                channels=loss.disc_channels,
                layers=loss.disc_layers,
                norm_groups=autoencoder.architecture.norm_groups,
            )
            if loss.disc_start is not None
            else None
        )
        self.perceptual = perceptual_network(loss.perceptual_weights) if loss.perceptual_weight > 0 else None


def perceptual_network(path: str | None) -> LPIPS | None:
    """The frozen LPIPS net from `path`; None (the term is off) without a file."""
    if path is None:
        return None
    if not Path(path).is_file():
        log.warning("perceptual loss off: no LPIPS weights at %s", path)
        return None
    return LPIPS.from_file(path)


def hinge_discriminator_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean())


def adaptive_weight(nll: torch.Tensor, adversarial: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    """||grad nll|| / ||grad adversarial|| at the decoder's last layer (eq. 7), clamped, no gradient."""
    nll_grad = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
    adv_grad = torch.autograd.grad(adversarial, last_layer, retain_graph=True)[0]
    return (nll_grad.norm() / (adv_grad.norm() + 1e-4)).clamp(0.0, 1e4).detach()


def code_statistics(codes: torch.Tensor, codebook_size: int) -> tuple[float, float]:
    """(share of the codebook used, perplexity = exp(entropy of code frequencies))."""
    counts = torch.bincount(codes.flatten(), minlength=codebook_size).float()
    p = counts / counts.sum()
    nonzero = p[p > 0]
    return float((counts > 0).float().mean()), float(torch.exp(-(nonzero * nonzero.log()).sum()))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two pixel tensors in [-1, 1] (peak-to-peak 2)."""
    mse = float((a.detach().clamp(-1, 1) - b.detach()).pow(2).mean())
    return 10.0 * math.log10(4.0 / mse) if mse > 0 else float("inf")


class VQGANLoss:
    """`loss_fn(module, batch, step, generator)` for the shared trainer; `batch` is uint8 [B, 3, H, W]."""

    def __init__(self, config: LossConfig) -> None:
        self.config = config

    def __call__(self, module: VQGANTrainee, batch: torch.Tensor, step: int, generator: torch.Generator) -> ObjectiveOutput:
        c = self.config
        x = pixels_to_unit(batch)
        restart = Restart(dead_after=c.dead_after, generator=generator) if c.dead_after is not None else None
        reconstruction, q = module.autoencoder(x, restart=restart)
        error = reconstruction - x
        rec = error.abs().mean() if c.reconstruction == "l1" else error.pow(2).mean()
        nll = c.reconstruction_weight * rec
        metrics: dict[str, float | torch.Tensor] = {"rec_loss": rec.detach(), "psnr": psnr(reconstruction, x)}
        if module.perceptual is not None:
            perceptual = module.perceptual(x, reconstruction).mean()
            nll = nll + c.perceptual_weight * perceptual
            metrics["perceptual_loss"] = perceptual.detach()
        loss = nll + c.codebook_weight * q.codebook_loss + c.commitment_weight * q.commitment_loss
        usage, perplexity = code_statistics(q.codes, module.autoencoder.quantizer.codebook_size)
        metrics.update(
            codebook_loss=q.codebook_loss.detach(),
            commitment_loss=q.commitment_loss.detach(),
            batch_usage=usage,
            batch_perplexity=perplexity,
            restarted=float(q.restarted),
        )
        if module.discriminator is not None and c.disc_start is not None and step >= c.disc_start:
            gan_loss, gan_metrics = self._adversarial(module, x, reconstruction, nll)
            loss = loss + gan_loss
            metrics.update(gan_metrics)
        return ObjectiveOutput(loss=loss, metrics=metrics)

    def _adversarial(
        self, module: VQGANTrainee, x: torch.Tensor, reconstruction: torch.Tensor, nll: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        discriminator = module.discriminator
        # Generator term: gradients reach the autoencoder only.
        discriminator.requires_grad_(False)
        try:
            generator_loss = -discriminator(reconstruction).mean()
        finally:
            discriminator.requires_grad_(True)
        weight = self.config.disc_weight * adaptive_weight(nll, generator_loss, module.autoencoder.decoder.last_layer)
        # Discriminator term: detached fakes, so its gradients reach the discriminator only.
        d_loss = hinge_discriminator_loss(discriminator(x), discriminator(reconstruction.detach()))
        return weight * generator_loss + d_loss, {
            "generator_loss": generator_loss.detach(),
            "disc_loss": d_loss.detach(),
            "disc_adaptive_weight": weight,
        }
