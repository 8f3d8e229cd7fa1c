"""MAGVLT's optional local mixing: a convolution over each image segment's embeddings, and nothing else."""

from __future__ import annotations

import pytest
import torch

from mmgen.layout import Part, pack
from mmgen.plugins.models.local_mixing import LocalMixing
from mmgen.plugins.models.magvlt import MagvltModel
from mmgen.plugins.models.presets import Architecture

from objective_helpers import (
    caption_segment,
    image_segment,
    one_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_space,
)

WIDTH = 8


def packed_pair():
    image = image_segment([list(range(8)) * 2, [7 - i % 8 for i in range(16)]])
    captions = caption_segment([[5], [1, 2, 3]])
    return pack(tiny_space(), ["BOC", Part(segment=captions), "BOG", Part(segment=image)])


def test_a_new_model_with_local_mixing_computes_what_the_plain_one_does():
    space = tiny_space()
    sizes = Architecture(width=32, depth=2, heads=2)
    torch.manual_seed(0)
    plain = MagvltModel(token_space=space, architecture=sizes)
    torch.manual_seed(0)
    mixed = MagvltModel(token_space=space, architecture=sizes, local_mixing=3)
    state = mixed.state_dict()
    assert not state["local_mixing.conv.weight"].any() and not state["local_mixing.conv.bias"].any()
    mixed.load_state_dict({**plain.state_dict(), **{k: v for k, v in state.items() if k.startswith("local_mixing.")}})
    packed = packed_pair()
    torch.testing.assert_close(mixed(packed), plain(packed))


def test_only_the_image_span_changes_and_by_the_convolution_of_its_grid():
    mixing = LocalMixing(tiny_space(), width=WIDTH, kernel=3)
    torch.nn.init.normal_(mixing.conv.weight)
    torch.nn.init.normal_(mixing.conv.bias)
    packed = packed_pair()
    image = packed.span("image")
    x = torch.randn(2, packed.tokens.shape[1], WIDTH)
    y = mixing(x, packed.spans)
    outside = torch.ones(x.shape[1], dtype=torch.bool)
    outside[image.start : image.stop] = False
    assert torch.equal(y[:, outside], x[:, outside])  # specials and text untouched
    grid = x[:, image.start : image.stop].transpose(1, 2).reshape(2, WIDTH, 4, 4)  # row-major 4x4 grid
    expected = grid + torch.nn.functional.conv2d(grid, mixing.conv.weight, mixing.conv.bias, padding=1)
    torch.testing.assert_close(y[:, image.start : image.stop], expected.flatten(2).transpose(1, 2))
    # Token (row 0, col 0) mixes only its in-grid neighbours: with a kernel that reads the right
    # neighbour only, its new value is its own plus token (0, 1)'s.
    with torch.no_grad():
        mixing.conv.weight.zero_()
        mixing.conv.bias.zero_()
        mixing.conv.weight[torch.arange(WIDTH), torch.arange(WIDTH), 1, 2] = 1.0
    y = mixing(x, packed.spans)
    torch.testing.assert_close(y[:, image.start], x[:, image.start] + x[:, image.start + 1])
    torch.testing.assert_close(y[:, image.start + 3], x[:, image.start + 3])  # (0, 3): no right neighbour


def test_a_span_that_is_not_the_grid_is_an_error():
    mixing = LocalMixing(tiny_space(), width=WIDTH, kernel=3)
    packed = packed_pair()
    short = [s if s.modality != "image" else type(s)(modality="image", start=s.start, length=15, begin=s.begin,
                                                       part_index=s.part_index) for s in packed.spans]
    with pytest.raises(ValueError, match=r"image span of 15 tokens is not its \(4, 4\) grid"):
        mixing(torch.zeros(2, packed.tokens.shape[1], WIDTH), short)


@pytest.mark.parametrize("kernel", [-1, 2])
def test_the_kernel_must_be_odd_or_zero(kernel):
    with pytest.raises(ValueError, match="magvlt: local_mixing must be 0 .off. or an odd kernel size"):
        MagvltModel.Config(local_mixing=kernel)
