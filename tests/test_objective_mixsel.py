"""L_MS: the mixture function, the mixed sequence with its selection marker, and the loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmgen.batch import Segment, TokenBatch
from mmgen.objectives.mixsel import MixSel, Mixture, encode_separator
from mmgen.objectives.mixture import join_sequences, mix_grids, resize_indices
from mmgen.protocols import StepInput
from mmgen.task import Task
from mmgen.token_space import JointTokenSpace

from objective_helpers import (
    I2T,
    IT2IT,
    T2I,
    caption_segment,
    image_segment,
    one_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_model,
    tiny_space,
)

FIRST = torch.arange(16)[None]  # rows 0-3, 4-7, 8-11, 12-15
SECOND = FIRST + 16


def test_resize_keeps_the_nearest_centre_cells():
    assert resize_indices(4, 2, "cpu").tolist() == [1, 3]
    assert resize_indices(16, 8, "cpu").tolist() == [1, 3, 5, 7, 9, 11, 13, 15]
    assert resize_indices(5, 3, "cpu").tolist() == [0, 2, 4]
    assert resize_indices(5, 2, "cpu").tolist() == [1, 3]


def test_resized_halves_side_by_side_and_stacked():
    side = mix_grids(FIRST, SECOND, shape=(4, 4), vertical=torch.tensor([False]))
    assert side.view(4, 4).tolist() == [[1, 3, 17, 19], [5, 7, 21, 23], [9, 11, 25, 27], [13, 15, 29, 31]]
    stacked = mix_grids(FIRST, SECOND, shape=(4, 4), vertical=torch.tensor([True]))
    assert stacked.view(4, 4).tolist() == [[4, 5, 6, 7], [12, 13, 14, 15], [20, 21, 22, 23], [28, 29, 30, 31]]


def test_cropped_halves_keep_their_positions():
    side = mix_grids(FIRST, SECOND, shape=(4, 4), vertical=torch.tensor([False]), how="crop")
    assert side.view(4, 4).tolist() == [[0, 1, 18, 19], [4, 5, 22, 23], [8, 9, 26, 27], [12, 13, 30, 31]]
    stacked = mix_grids(FIRST, SECOND, shape=(4, 4), vertical=torch.tensor([True]), how="crop")
    assert stacked.view(4, 4).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [24, 25, 26, 27], [28, 29, 30, 31]]
    with pytest.raises(ValueError, match="unknown mixing 'paste'"):
        mix_grids(FIRST, SECOND, shape=(4, 4), vertical=torch.tensor([True]), how="paste")


def test_captions_join_with_the_separator_and_are_never_cut():
    first = caption_segment([[5], [1, 2]])
    second = caption_segment([[1, 2, 3], [9, 8]])
    joined = join_sequences(first, second, separator=(9,), eos_id=0, pad_id=0)
    assert joined.tokens.tolist() == [[5, 9, 1, 2, 3, 0], [1, 2, 9, 9, 8, 0]]
    assert joined.lengths.tolist() == [6, 6]
    short = join_sequences(caption_segment([[5]]), caption_segment([[3]]), separator=(8, 7), eos_id=0, pad_id=0)
    assert short.tokens.tolist() == [[5, 8, 7, 3, 0, 0]] and short.lengths.tolist() == [5]
    long = caption_segment([[9, 8, 7, 6, 4]])
    with pytest.raises(ValueError, match="joined captions of row 0 take 8 tokens, more than 6"):
        join_sequences(caption_segment([[5]]), long, separator=(9,), eos_id=0, pad_id=0)


def short_batch() -> TokenBatch:
    images = image_segment([[0] * 16, list(range(16)), [7] * 16])
    images = Segment.full("image", images.tokens % 8)
    return TokenBatch(segments=(images, caption_segment([[5], [1, 2], [3]])))


def segments_of(batch: TokenBatch) -> dict[str, Segment]:
    return {"image": batch.modality("image"), "text": batch.modality("text")}


def mixsel(**options) -> MixSel:
    """Token-grid mixing (pixel mixing: test_mixsel_pixels.py)."""
    return MixSel(token_space=tiny_space(), separators={"text": (9,)}, **{"mixing": "tokens_resize", **options})


def test_t2i_mixes_captions_marks_the_selected_one_and_targets_its_image():
    space = tiny_space()
    mixture = Mixture(
        partner=torch.tensor([1, 2, 0]),
        own_second=torch.tensor([False, True, False]),
        stacked=torch.zeros(3, dtype=torch.bool),
    )
    batch = short_batch()
    packed, targets, masks = mixsel().sequence(
        T2I, segments_of(batch), mixture, generator=torch.Generator().manual_seed(0)
    )
    # [BOC] [BEGIN_text] mixed text x6 [BOG_*] [BEGIN_image] own image x16 (masked)
    text = packed.tokens[:, 2:8] - space.offset("text")
    assert text.tolist() == [
        [5, 9, 1, 2, 0, 0],  # own caption first, then partner 1's: BOG_LEFT
        [3, 9, 1, 2, 0, 0],  # partner 2's first, own second: BOG_RIGHT
        [3, 9, 5, 0, 0, 0],  # own first, then partner 0's: BOG_LEFT
    ]
    # Lengths 5, 5 and 4 with the end-of-text; the rest is padding.
    assert packed.key_padding[:, 2:8].tolist() == [[False] * 5 + [True], [False] * 5 + [True], [False] * 4 + [True] * 2]
    assert packed.tokens[:, 8].tolist() == [space.special(n) for n in ("BOG_LEFT", "BOG_RIGHT", "BOG_LEFT")]
    assert torch.equal(targets["image"].tokens, batch.modality("image").tokens)
    r = torch.rand(3, generator=torch.Generator().manual_seed(0))
    expected = torch.ceil(torch.cos(torch.pi / 2 * r) * 16).clamp(1, 16).long()
    assert masks["image"].sum(dim=1).tolist() == expected.tolist()
    image = batch.modality("image").tokens
    assert torch.equal(packed.tokens[:, 10:], torch.where(masks["image"], space.mask_id("image"), image))


def test_i2t_mixes_images_top_bottom_and_targets_the_selected_caption():
    space = tiny_space()
    mixture = Mixture(
        partner=torch.tensor([2, 0, 1]),
        own_second=torch.tensor([True, False, False]),
        stacked=torch.tensor([True, True, False]),
    )
    batch = short_batch()
    packed, targets, masks = mixsel().sequence(
        I2T, segments_of(batch), mixture, generator=torch.Generator().manual_seed(3)
    )
    images = batch.modality("image").tokens
    row0 = mix_grids(images[2:3], images[0:1], shape=(4, 4), vertical=torch.tensor([True]))  # partner on top
    row1 = mix_grids(images[1:2], images[0:1], shape=(4, 4), vertical=torch.tensor([True]))
    row2 = mix_grids(images[2:3], images[1:2], shape=(4, 4), vertical=torch.tensor([False]))
    assert torch.equal(packed.tokens[:, 2:18], torch.cat([row0, row1, row2]))
    assert packed.tokens[:, 18].tolist() == [space.special(n) for n in ("BOG_BOTTOM", "BOG_TOP", "BOG_LEFT")]
    assert torch.equal(targets["text"].tokens, batch.modality("text").tokens)
    assert not (masks["text"] & ~batch.modality("text").valid()).any()
    assert set(masks) == {"text"}  # I2T never masks the mixed context


def test_it2it_without_mask_context_is_mixed_like_i2t():
    mixture = Mixture(
        partner=torch.tensor([1, 2, 0]),
        own_second=torch.zeros(3, dtype=torch.bool),
        stacked=torch.zeros(3, dtype=torch.bool),
    )
    objective = mixsel(mask_context=False)
    one = objective.sequence(I2T, segments_of(short_batch()), mixture, generator=torch.Generator().manual_seed(1))
    two = objective.sequence(IT2IT, segments_of(short_batch()), mixture, generator=torch.Generator().manual_seed(1))
    assert torch.equal(one[0].tokens, two[0].tokens) and set(two[2]) == {"text"}


def test_partners_are_other_samples_and_captions_are_never_stacked():
    objective = mixsel()
    for seed in range(20):
        mixture = objective.draw_mixture(T2I, batch_size=3, rows=3, generator=torch.Generator().manual_seed(seed))
        assert (mixture.partner != torch.arange(3)).all()
        assert not mixture.stacked.any()
    draws = [
        objective.draw_mixture(I2T, batch_size=4, rows=4, generator=torch.Generator().manual_seed(s)) for s in range(20)
    ]
    assert any(d.stacked.any() for d in draws) and any((~d.stacked).any() for d in draws)
    assert any(d.own_second.any() for d in draws) and any((~d.own_second).any() for d in draws)
    single = objective.draw_mixture(I2T, batch_size=1, rows=1, generator=torch.Generator().manual_seed(0))
    assert single.partner.tolist() == [0]


def test_loss_is_cross_entropy_on_the_masked_target_of_the_mixed_sequence():
    space = tiny_space()
    model = tiny_model(space)
    objective = mixsel(fraction=0.6)
    out = objective(model, StepInput(batch=short_batch(), task=I2T, generator=torch.Generator().manual_seed(4)))
    generator = torch.Generator().manual_seed(4)
    mixture = objective.draw_mixture(I2T, batch_size=3, rows=2, generator=generator)
    packed, targets, masks = objective.sequence(I2T, segments_of(short_batch()), mixture, generator=generator)
    assert packed.batch_size == 2  # ceil(0.6 * 3) rows
    logits = model.logits(model(packed)[:, 20:26][masks["text"]], "text")
    truth = targets["text"].tokens[masks["text"]]
    assert torch.allclose(out.loss, F.cross_entropy(logits, truth, label_smoothing=0.1))
    assert out.metrics["masked_tokens"] == float(masks["text"].sum())


def test_a_task_without_context_has_nothing_to_mix():
    unconditional = Task(name="pair", target=("image", "text"))
    out = mixsel()(tiny_model(), StepInput(batch=short_batch(), task=unconditional, generator=torch.Generator()))
    assert out.loss.item() == 0.0 and out.metrics == {}


class FakeTextTokenizer:
    modality = "text"

    def encode(self, items: list[str]) -> Segment:
        assert items == [" | "]
        return caption_segment([[4]])


def test_the_separator_comes_from_the_text_tokenizer():
    space = tiny_space()
    assert encode_separator(" | ", space.space("text"), {"text": FakeTextTokenizer()}) == (4,)
    built = MixSel.from_config(MixSel.Config(separator=" | "), token_space=space, tokenizers=[FakeTextTokenizer()])
    assert built.separators == {"text": (4,)} and built.weight == 0.5
    given = MixSel.from_config(MixSel.Config(separator_ids=(9, 8)), token_space=space)
    assert given.separators == {"text": (9, 8)}
    with pytest.raises(ValueError, match="needs the 'text' tokenizer to encode its separator"):
        MixSel.from_config(MixSel.Config(), token_space=space)


def test_the_space_must_hold_the_selection_markers():
    plain = JointTokenSpace(spaces=tiny_space().spaces)
    with pytest.raises(KeyError, match="BOG_LEFT"):
        MixSel(token_space=plain, separators={"text": (9,)})
    assert MixSel.extra_specials == ("BOG_LEFT", "BOG_RIGHT", "BOG_TOP", "BOG_BOTTOM")
    with pytest.raises(ValueError, match="unknown mixing 'resize': use 'pixels', 'tokens_resize', 'tokens_crop'"):
        MixSel(token_space=tiny_space(), separators={"text": (9,)}, mixing="resize")
