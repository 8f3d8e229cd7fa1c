"""The MAGVLT transformer: sizes, embeddings, attention masking and heads."""

from __future__ import annotations

import math

import pytest
import torch

from mmgen.batch import Segment
from mmgen.layout import Part, pack
from mmgen.plugins.models.magvlt import MagvltModel
from mmgen.plugins.models.presets import PRESETS, architecture
from mmgen.token_space import JointTokenSpace, TokenSpace

from objective_helpers import (
    MARKERS,
    caption_segment,
    image_segment,
    one_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_model,
    tiny_space,
)


def paper_space() -> JointTokenSpace:
    image = TokenSpace(name="image", vocab_size=16_384, shape=(16, 16))
    text = TokenSpace(name="text", vocab_size=49_408, shape=(64,), variable_length=True, pad_id=0, eos_id=0)
    return JointTokenSpace(spaces=(image, text), extra_specials=MARKERS)


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_base_preset_has_the_papers_371_5m_parameters():
    with torch.device("meta"):
        model = MagvltModel.from_config(MagvltModel.Config(preset="base"), token_space=paper_space())
    d, vocab, content = 1024, 16_384 + 49_408 + 10, 16_384 + 49_408
    expected = (
        vocab * d  # one embedding table: content ids and the 10 specials
        + (256 + 64 + (256 + 64 + 4)) * d  # image, text and special-slot positions
        + 24 * (12 * d * d + 13 * d)  # blocks: qkv, out, 4x MLP (with biases), two LayerNorms
        + (d * d + d)
        + 2 * d
        + content  # head: dense, norm, output bias over content ids
        + d * 64  # length head, no bias
    )
    assert count(model) == expected == 371_533_056
    assert round(expected / 1e6, 1) == 371.5


def test_large_preset_sizes():
    with torch.device("meta"):
        model = MagvltModel.from_config(MagvltModel.Config(preset="large"), token_space=paper_space())
    assert (model.architecture.width, model.architecture.depth, model.architecture.heads) == (1280, 36, 10)
    assert count(model) == 795_228_672


def test_config_overrides_a_preset_and_rejects_unknown_ones():
    config = MagvltModel.Config(preset="shapes", depth=2, dropout=0.25)
    model = MagvltModel.from_config(config, token_space=tiny_space())
    assert len(model.blocks) == 2 and model.blocks[0].dropout == 0.25
    assert model.architecture.width == PRESETS["shapes"].width
    with pytest.raises(KeyError, match="no MAGVLT preset 'huge'"):
        architecture("huge")
    with pytest.raises(ValueError, match="not divisible by heads"):
        architecture("tiny", heads=3)


def test_init_is_normal_002_with_zero_biases_and_identity_norms():
    torch.manual_seed(0)
    model = MagvltModel.from_config(MagvltModel.Config(preset="shapes"), token_space=tiny_space())
    assert abs(model.blocks[0].mlp_in.weight.std().item() - 0.02) < 0.001
    assert abs(model.embedding.weight.std().item() - 0.02) < 0.002
    assert model.blocks[0].qkv.bias.abs().sum() == 0 and model.output_bias.abs().sum() == 0
    assert torch.equal(model.head_norm.weight, torch.ones(256))


def test_position_tables_are_row_ranges_of_one_embedding():
    model = tiny_model()
    # specials: 16 + 6 + 4 slots, then image (16) and text (6).
    assert model.table_sizes.tolist() == [26, 16, 6]
    assert model.table_starts.tolist() == [0, 26, 42]
    assert model.positions.weight.shape == (48, 32)


def test_embedding_adds_the_tables_position_rows():
    model = tiny_model(depth=1)
    packed = pack(model.token_space, ["BOC", Part(segment=image_segment([list(range(8)) * 2]))])
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
    model(packed)
    hidden = seen[0]  # what the first block receives
    # Token 1 is the image's BEGIN: special slot 1. Token 2 + p is image position p (table 1).
    expected_begin = model.embedding.weight[model.token_space.begin_id("image")] + model.positions.weight[1]
    expected_image_3 = model.embedding.weight[3] + model.positions.weight[26 + 3]
    assert torch.allclose(hidden[0, 1], expected_begin)
    assert torch.allclose(hidden[0, 2 + 3], expected_image_3)


def test_a_position_beyond_its_table_is_an_error():
    space = tiny_space()
    model = MagvltModel.from_config(
        MagvltModel.Config(preset="tiny", special_positions=3, mask_positions="modality"), token_space=space
    )
    packed = pack(space, ["BOC", Part(segment=image_segment([[0] * 16])), "BOG", Part(segment=caption_segment([[1]]))])
    with pytest.raises(ValueError, match="exceeds its table"):
        model(packed)


def test_logits_are_restricted_to_the_modality_and_tied_to_its_embeddings():
    model = tiny_model()
    space = model.token_space
    hidden = torch.randn(5, 32)
    image, text = model.logits(hidden, "image"), model.logits(hidden, "text")
    assert image.shape == (5, 8) and text.shape == (5, 10)
    with torch.no_grad():
        model.output_bias.copy_(torch.arange(18.0))
    h = model.head_norm(torch.nn.functional.gelu(model.head_dense(hidden)))
    start, stop = space.content_range("text")
    assert (start, stop) == (8, 18)
    assert torch.allclose(model.logits(hidden, "text"), h @ model.embedding.weight[8:18].T + torch.arange(8.0, 18.0))


def test_padding_is_never_attended_to():
    model = tiny_model().eval()
    space = model.token_space
    image = image_segment([[1] * 16])
    a = caption_segment([[3, 4]])
    b = Segment(modality="text", tokens=a.tokens.clone(), lengths=a.lengths)
    b.tokens[0, 4:] = 7  # different garbage in the padding
    ha = model(pack(space, ["BOC", Part(segment=image), "BOG", Part(segment=a)]))
    hb = model(pack(space, ["BOC", Part(segment=image), "BOG", Part(segment=b)]))
    valid = 2 + 16 + 2 + 3  # specials, image, BOG + BEGIN, caption "3 4 EOS"
    assert torch.allclose(ha[0, :valid], hb[0, :valid], atol=1e-6)
    assert not torch.allclose(ha[0, valid:], hb[0, valid:])


def length_query(model: MagvltModel, caption: Segment) -> torch.Tensor:
    items = ["BOC", Part(segment=image_segment([[2] * 16])), "BOG", Part(segment=caption, predict_length=True)]
    packed = pack(model.token_space, items)
    return model.length_logits(model(packed)[:, packed.span("text").begin])


def test_a_length_query_ignores_the_target_in_a_one_block_model():
    model = tiny_model(depth=1).eval()
    first = length_query(model, caption_segment([[1, 2, 3]]))
    second = length_query(model, caption_segment([[9, 9, 9]]))
    assert first.shape == (1, 6)
    assert torch.allclose(first, second, atol=1e-6)


def test_deeper_blocks_leak_the_target_to_a_length_query_through_the_context():
    # Why L_TL reads its own view (objectives/target_length.py): context tokens
    # attend to the target, and the BEGIN query attends to them in the next block.
    model = tiny_model(depth=2).eval()
    first = length_query(model, caption_segment([[1, 2, 3]]))
    second = length_query(model, caption_segment([[9, 9, 9]]))
    assert not torch.allclose(first, second, atol=1e-6)


def test_length_logits_needs_a_variable_length_modality():
    model = tiny_model()
    assert model.length_logits(torch.randn(2, 32), "text").shape == (2, 6)
    with pytest.raises(KeyError, match="'image' has no length head"):
        model.length_logits(torch.randn(2, 32), "image")


def test_activation_checkpointing_gives_the_same_gradients():
    model = tiny_model()
    packed = pack(
        model.token_space, ["BOC", Part(segment=image_segment([[1] * 16])), "BOG", Part(segment=caption_segment([[4]]))]
    )

    def gradients() -> list[torch.Tensor]:
        model.zero_grad()
        model(packed).square().sum().backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    plain = gradients()
    model.set_activation_checkpointing(True)
    checkpointed = gradients()
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, checkpointed, strict=True))
    assert model.fsdp_units() == list(model.blocks)


def test_dropout_only_in_training_mode():
    space = tiny_space()
    model = MagvltModel.from_config(MagvltModel.Config(preset="tiny", dropout=0.5), token_space=space)
    packed = pack(space, ["BOC", Part(segment=image_segment([[1] * 16]))])
    model.eval()
    assert torch.equal(model(packed), model(packed))
    model.train()
    assert not torch.equal(model(packed), model(packed))


def test_extra_modality_needs_no_change():
    audio = TokenSpace(name="audio", vocab_size=5, shape=(3,))
    space = JointTokenSpace(spaces=(*tiny_space().spaces, audio))
    model = tiny_model(space)
    packed = pack(
        space,
        [
            "BOC",
            Part(segment=Segment.full("audio", torch.tensor([[0, 4, 2]]))),
            "BOG",
            Part(segment=image_segment([[1] * 16])),
        ],
    )
    assert model(packed).shape == (1, 2 + 3 + 2 + 16, 32)
    assert model.logits(torch.randn(1, 32), "audio").shape == (1, 5)
    assert math.prod(model.positions.weight.shape) == (16 + 6 + 3 + 4 + 16 + 6 + 3) * 32
