"""Load a taming-transformers VQ-GAN checkpoint (e.g. `vqgan_imagenet_f16_16384`) into this plugin.

A taming checkpoint is a PyTorch Lightning file whose `state_dict` holds the
encoder (`encoder.conv_in`, `encoder.down.<level>.block.<i>...`, `encoder.mid...`),
`quant_conv`, `quantize.embedding.weight`, `post_quant_conv` and the decoder
(`decoder.up.<level>...`, where level 0 is the finest resolution although it runs
last), plus the training losses under `loss.*`, which a tokenizer does not need.
The architecture is read from the tensor shapes; only the pixel resolution is not
in the file (the network is fully convolutional), so the caller gives it: any
multiple of the downsampling factor 2**(levels - 1) (16 for f16) works, and the
token grid side is resolution / factor. The Lightning extras around `state_dict`
are read without running anything (lightning_checkpoint.py) and ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from .architecture import ArchitectureConfig
from .autoencoder import VQAutoencoder
from .lightning_checkpoint import CheckpointError, read_lightning_checkpoint

ATTENTION_NAMES = {"norm": "norm", "q": "query", "k": "key", "v": "value", "proj_out": "out"}
BLOCK_NAMES = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "nin_shortcut": "shortcut"}
ENDS = {"conv_in": "stem", "norm_out": "out_norm", "conv_out": "out_conv"}
MIDDLE = {"block_1": "block1", "attn_1": "attention", "block_2": "block2"}
TAMING_NORM_GROUPS = 32


class TamingCheckpointError(CheckpointError):
    """A file that is not a taming VQ-GAN checkpoint, or uses a variant this plugin does not implement."""


def read_taming_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """The model tensors of a taming checkpoint (Lightning's `state_dict`, or a bare state dict); the rest ignored."""
    checkpoint = read_lightning_checkpoint(path)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping) or "quantize.embedding.weight" not in state:
        raise TamingCheckpointError(f"{path}: no taming VQ-GAN state_dict (no `quantize.embedding.weight`)")
    return dict(state)


def _indices(state: Mapping[str, torch.Tensor], prefix: str) -> list[int]:
    """Sorted distinct integers k of keys `prefix<k>.<...>`."""
    return sorted({int(key[len(prefix) :].split(".")[0]) for key in state if key.startswith(prefix)})


def taming_architecture(state: Mapping[str, torch.Tensor], *, resolution: int) -> ArchitectureConfig:
    """The ArchitectureConfig the tensor shapes describe, at `resolution` pixels."""
    stem = state["encoder.conv_in.weight"]
    ch, in_channels = stem.shape[0], stem.shape[1]
    levels = _indices(state, "encoder.down.")
    factor = 2 ** (len(levels) - 1)
    if resolution <= 0 or resolution % factor:
        raise TamingCheckpointError(
            f"resolution {resolution} is not a positive multiple of this checkpoint's downsampling factor {factor}"
            f" (the token grid side is resolution / {factor})"
        )
    ch_mult = tuple(state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] // ch for i in levels)
    blocks = _indices(state, "encoder.down.0.block.")
    attention_levels = [i for i in levels if f"encoder.down.{i}.attn.0.q.weight" in state]
    codebook_size, codebook_dim = state["quantize.embedding.weight"].shape
    z_channels = state["post_quant_conv.weight"].shape[0]
    if state["encoder.conv_out.weight"].shape[0] != z_channels:
        raise TamingCheckpointError("encoder output is not z_channels wide (double_z checkpoints are not VQ-GANs)")
    return ArchitectureConfig(
        resolution=resolution,
        in_channels=in_channels,
        ch=ch,
        ch_mult=ch_mult,
        num_res_blocks=len(blocks),
        attn_resolutions=tuple(resolution // 2**i for i in attention_levels),
        z_channels=z_channels,
        norm_groups=TAMING_NORM_GROUPS,
        codebook_size=codebook_size,
        codebook_dim=codebook_dim,
        l2_normalize=False,  # taming looks codes up by plain Euclidean distance
    )


def _rename_inner(parts: list[str], key: str) -> list[str]:
    """Names inside a residual or attention block."""
    kind, index, layer, *rest = parts
    if kind == "block" and layer in BLOCK_NAMES:
        return ["blocks", index, BLOCK_NAMES[layer], *rest]
    if kind == "attn" and layer in ATTENTION_NAMES:
        return ["attentions", index, ATTENTION_NAMES[layer], *rest]
    raise TamingCheckpointError(f"unsupported taming key {key!r}")


def _rename_coder(part: str, parts: list[str], levels: int, key: str) -> list[str]:
    """Names under `encoder.` / `decoder.` (`parts` without that prefix)."""
    head, rest = parts[0], parts[1:]
    if head in ENDS:
        return [ENDS[head], *rest]
    if head == "mid" and rest and rest[0] in MIDDLE:
        inner = MIDDLE[rest[0]]
        if inner == "attention":
            return ["middle", inner, ATTENTION_NAMES[rest[1]], *rest[2:]]
        return ["middle", inner, BLOCK_NAMES[rest[1]], *rest[2:]]
    if part == "encoder" and head == "down":
        level, kind = rest[0], rest[1]
        if kind == "downsample":
            return ["downsamples", level, *rest[2:]]
        return ["levels", level, *_rename_inner(rest[1:], key)]
    if part == "decoder" and head == "up":
        # taming numbers decoder levels by resolution (0 = finest) but runs them coarsest first; ours run in order.
        level, kind = str(levels - 1 - int(rest[0])), rest[1]
        if kind == "upsample":
            return ["upsamples", level, *rest[2:]]
        return ["levels", level, *_rename_inner(rest[1:], key)]
    raise TamingCheckpointError(f"unsupported taming key {key!r}")


def rename_taming_key(key: str, *, levels: int) -> str | None:
    """Our parameter name for a taming one; None for training-only entries (`loss.*`)."""
    parts = key.split(".")
    if parts[0] == "loss":
        return None
    if key == "quantize.embedding.weight":
        return "quantizer.codebook"
    if parts[0] == "quant_conv":
        return ".".join(["to_code", *parts[1:]])
    if parts[0] == "post_quant_conv":
        return ".".join(["from_code", *parts[1:]])
    if parts[0] in ("encoder", "decoder"):
        try:
            return ".".join([parts[0], *_rename_coder(parts[0], parts[1:], levels, key)])
        except (IndexError, KeyError, ValueError) as exc:
            if isinstance(exc, TamingCheckpointError):
                raise
            raise TamingCheckpointError(f"unsupported taming key {key!r}") from None
    raise TamingCheckpointError(f"unsupported taming key {key!r}")


def convert_taming_state_dict(
    state: Mapping[str, torch.Tensor], *, resolution: int
) -> tuple[ArchitectureConfig, dict[str, torch.Tensor]]:
    """(architecture, our state dict) for a taming VQ-GAN state dict."""
    architecture = taming_architecture(state, resolution=resolution)
    levels = len(architecture.ch_mult)
    converted = {}
    for key, tensor in state.items():
        name = rename_taming_key(key, levels=levels)
        if name is not None:
            converted[name] = tensor
    return architecture, converted


def load_taming_checkpoint(path: Path | str, *, resolution: int = 256) -> VQAutoencoder:
    """A VQAutoencoder holding the checkpoint's weights; every tensor must find its place."""
    taming_state = read_taming_state_dict(path)
    try:
        architecture, state = convert_taming_state_dict(taming_state, resolution=resolution)
    except TamingCheckpointError as exc:  # the converter knows no file name
        raise TamingCheckpointError(f"{path}: {exc}") from None
    autoencoder = VQAutoencoder(architecture)
    missing, unexpected = autoencoder.load_state_dict(state, strict=False)
    missing = [name for name in missing if name != "quantizer.steps_unused"]
    if missing or unexpected:
        raise TamingCheckpointError(f"{path}: tensors do not fit (missing {missing}, unexpected {unexpected})")
    return autoencoder.eval()
