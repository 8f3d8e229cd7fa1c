"""Teacher-forced colour probe on Shapes: does MAGVLT draw objects in the colour the caption names?

The placement probe (`conditioning_probe.py`) showed the model reading where
objects go long before any generation was right; this one showed why they
still came out wrong: with random code embeddings the model never read the
colour words (docs/results/magvlt-training.md, "Why colour was never learned").

Each code gets the colour it mostly stands for: the majority Shapes palette
colour of the image patches it encodes (0 = the white canvas; a patch with
fewer than `min_pixels` coloured pixels counts as canvas). With every image
token masked and the full caption given, the probe sums the model's
probability over the codes of each colour at every object position and reports

- `colour/right_given_object`: p(codes of the right colour) / p(codes of any
  object colour), averaged over object positions; 1/6 = not read at all;
- `colour/object_mass`: p(codes of any object colour) at object positions;
- `colour/right_given_object_1`, `_2`: the first, over one- and two-object
  captions only. With two objects of different colours a model that reads the
  colour words but not which object each belongs to gets ~0.5 on `_2`: this
  measures attribute binding.
"""

from __future__ import annotations

import numpy as np
import torch

from conditioning_probe import image_cross_entropy

from mmgen.batch import TokenBatch
from mmgen.plugins.datasets.shapes.caption_parser import parse_caption
from mmgen.plugins.datasets.shapes.spec import BACKGROUND, PALETTE


def palette() -> np.ndarray:
    """[7, 3]: the canvas, then the Shapes colours in spec order."""
    return np.array([BACKGROUND, *PALETTE.values()], dtype=np.int64)


def patch_colours(images: torch.Tensor, *, patch: int, min_pixels: int) -> np.ndarray:
    """uint8 [B, 3, S, S] -> [B, (S/patch)^2] palette index per patch (row by row), 0 = canvas."""
    pixels = images.permute(0, 2, 3, 1).numpy().astype(np.int64)
    nearest = ((pixels[..., None, :] - palette()) ** 2).sum(-1).argmin(-1)  # [B, S, S]
    b, side = nearest.shape[0], nearest.shape[1] // patch
    per_patch = nearest.reshape(b, side, patch, side, patch).transpose(0, 1, 3, 2, 4).reshape(b, side * side, -1)
    counts = np.stack([(per_patch == c).sum(-1) for c in range(len(palette()))], -1)  # [B, P, 7]
    coloured = counts[..., 1:].sum(-1)
    return np.where(coloured >= min_pixels, counts[..., 1:].argmax(-1) + 1, 0)


def code_colours(codes: np.ndarray, colours: np.ndarray, *, vocab_size: int) -> np.ndarray:
    """[vocab_size] the majority patch colour of each code over (codes, colours) pairs; unseen codes: 0."""
    table = np.zeros((vocab_size, len(palette())), dtype=np.int64)
    np.add.at(table, (codes.ravel(), colours.ravel()), 1)
    return table.argmax(1)


@torch.no_grad()
def colour_probe(
    model, batch: TokenBatch, *, colours: np.ndarray, code_colour: np.ndarray, counts: np.ndarray | None = None
) -> dict[str, float]:
    """The probe above; `colours` [B, P] are the true patch colours of `batch`'s images, `counts` [B] their objects."""
    was_training = model.training
    model.eval()
    try:
        probabilities = image_cross_entropy(model, batch, text_modality="text", image_modality="image").softmax(-1)
    finally:
        model.train(was_training)
    p = probabilities.numpy()
    mass = np.stack([p[..., code_colour == c].sum(-1) for c in range(len(palette()))], -1)  # [B, P, 7]
    objects = colours > 0
    share = mass[..., 1:] / np.maximum(1.0 - mass[..., :1], 1e-12)  # [B, P, 6] among object colours
    right = np.take_along_axis(share, np.maximum(colours - 1, 0)[..., None], -1)[..., 0]  # [B, P]
    result = {
        "colour/right_given_object": float(right[objects].mean()),
        "colour/object_mass": float((1.0 - mass[objects, 0]).mean()),
    }
    for n in (1, 2) if counts is not None else ():
        where = objects & (counts[:, None] == n)
        result[f"colour/right_given_object_{n}"] = float(right[where].mean()) if where.any() else float("nan")
    return result


def colour_probe_inputs(tokenizers, records, *, min_pixels: int = 6):
    """For `colour_probe`: (batch with each record's first caption, patch colours [B, P], codes, objects [B])."""
    image_tokenizer = tokenizers["image"]
    images = torch.stack([image_tokenizer.load_item(r.data) for r in records])
    codes = image_tokenizer.encode(images)
    grid = image_tokenizer.architecture.grid
    colours = patch_colours(images, patch=images.shape[-1] // grid, min_pixels=min_pixels)
    text = tokenizers["text"].encode([r.captions[0] for r in records])
    counts = np.array([len(parse_caption(r.captions[0])) for r in records])
    return TokenBatch(segments=[codes, text]), colours, codes.tokens.numpy(), counts


def code_colour_table(tokenizers, records, *, min_pixels: int = 6) -> np.ndarray:
    """`code_colours` over the images of `records` (use training records)."""
    _, colours, codes, _ = colour_probe_inputs(tokenizers, records, min_pixels=min_pixels)
    return code_colours(codes, colours, vocab_size=tokenizers["image"].token_space.vocab_size)

