"""L_UM: the step-unrolled second prediction, from a hand-made first step."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmgen.layout import pack
from mmgen.objectives.masked_forward import SHARED_KEY, MaskedForward
from mmgen.objectives.task_layout import task_items
from mmgen.objectives.unroll_mask import UnrollMask, first_step_tokens, lowest_confidence
from mmgen.protocols import StepInput

from objective_helpers import (
    I2T,
    hand_batch,
    one_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_model,
    tiny_space,
)

# Captions: [5 EOS . . . .], [1 2 3 EOS . .], [9 8 7 6 4 EOS]
TEXT_MASK = torch.tensor(
    [
        [True, False, False, False, False, False],
        [False, True, True, True, False, False],
        [True, True, False, True, True, True],
    ]
)
# First-step guesses at the masked positions, row-major; sharpness sets their confidence.
GUESSES = [7, 2, 6, 1, 9, 3, 3, 1, 0]
SHARPNESS = [9.0, 8.0, 1.0, 7.0, 2.0, 6.0, 5.0, 4.0, 3.0]


def first_step(*, requires_grad: bool = False) -> MaskedForward:
    space = tiny_space()
    batch = hand_batch()
    segments = {"image": batch.modality("image"), "text": batch.modality("text")}
    logits = torch.zeros(len(GUESSES), 10)
    logits[torch.arange(len(GUESSES)), torch.tensor(GUESSES)] = torch.tensor(SHARPNESS)
    packed = pack(space, task_items(space, I2T, segments, masks={"text": TEXT_MASK}))
    return MaskedForward(
        packed=packed,
        hidden=torch.zeros(3, packed.tokens.shape[1], 32),
        segments=segments,
        masks={"text": TEXT_MASK},
        logits={"text": logits.requires_grad_(requires_grad)},
    )


def expected_count(r: torch.Tensor) -> list[int]:
    available = TEXT_MASK.sum(dim=1)
    return torch.minimum(torch.ceil(r * available).clamp(min=1).long(), available).tolist()


def test_predictions_fill_exactly_the_masked_positions():
    objective = UnrollMask(token_space=tiny_space(), first_step="argmax")
    filled, _ = objective.unroll(first_step(), rows=3, generator=torch.Generator().manual_seed(0))
    truth = hand_batch().modality("text").tokens
    assert filled["text"].tokens.tolist() == [
        [7, 0, 0, 0, 0, 0],
        [1, 2, 6, 1, 0, 0],
        [9, 3, 7, 3, 1, 0],
    ]
    assert torch.equal(filled["text"].tokens[~TEXT_MASK], truth[~TEXT_MASK])
    assert torch.equal(filled["text"].lengths, torch.tensor([2, 4, 6]))
    assert torch.equal(filled["image"].tokens, hand_batch().modality("image").tokens)


def test_random_remask_is_a_subset_sized_by_a_fresh_ratio():
    objective = UnrollMask(token_space=tiny_space(), first_step="argmax")
    for seed in range(10):
        _, remasks = objective.unroll(first_step(), rows=3, generator=torch.Generator().manual_seed(seed))
        r = torch.rand(3, generator=torch.Generator().manual_seed(seed))  # the first draw: r'
        assert remasks["text"].sum(dim=1).tolist() == expected_count(r)  # text: ratio r'
        assert not (remasks["text"] & ~TEXT_MASK).any()


def test_low_confidence_remask_takes_the_least_confident_predictions():
    objective = UnrollMask(token_space=tiny_space(), first_step="argmax", remask="low_confidence")
    _, remasks = objective.unroll(first_step(), rows=3, generator=torch.Generator().manual_seed(2))
    r = torch.rand(3, generator=torch.Generator().manual_seed(2))
    assert expected_count(r) == [1, 2, 4]
    # Least confident first: row 1 positions 2 (sharpness 1), 3 (7), 1 (8); row 2 positions 0, 5, 4, 3, 1.
    assert remasks["text"].tolist() == [
        [True, False, False, False, False, False],
        [False, False, True, True, False, False],
        [True, False, False, True, True, True],
    ]


def test_lowest_confidence_breaks_ties_by_position():
    mask = torch.tensor([[True, True, True, False]])
    chosen = lowest_confidence(mask, torch.tensor([-1.0, -1.0, -0.5]), torch.tensor([1]))
    assert chosen.tolist() == [[True, False, False, False]]


def test_sampled_first_step_follows_the_softmax():
    logits = torch.log(torch.tensor([[0.25, 0.75]])).repeat(4000, 1)
    tokens, log_probs = first_step_tokens(
        logits, how="sample", temperature=1.0, generator=torch.Generator().manual_seed(0)
    )
    assert abs(tokens.float().mean().item() - 0.75) < 0.03
    assert torch.allclose(log_probs, torch.log(torch.tensor([0.25, 0.75]))[tokens])
    argmax, _ = first_step_tokens(logits, how="argmax", temperature=1.0, generator=torch.Generator())
    assert (argmax == 1).all()


def test_loss_predicts_the_remasked_ground_truth_from_the_models_own_fills():
    space = tiny_space()
    model = tiny_model(space)
    objective = UnrollMask(token_space=space, first_step="argmax", label_smoothing=0.1)
    first = first_step(requires_grad=True)
    inputs = StepInput(
        batch=hand_batch(), task=I2T, generator=torch.Generator().manual_seed(1), shared={SHARED_KEY: first}
    )
    out = objective(model, inputs)

    filled, remasks = objective.unroll(first_step(), rows=3, generator=torch.Generator().manual_seed(1))
    packed = pack(space, task_items(space, I2T, filled, masks=remasks))
    assert (packed.tokens[:, 20:][remasks["text"]] == space.mask_id("text")).all()
    hidden = model(packed)
    logits = model.logits(hidden[:, 20:26][remasks["text"]], "text")
    truth = hand_batch().modality("text").tokens[remasks["text"]]
    assert torch.allclose(out.loss, F.cross_entropy(logits, truth, label_smoothing=0.1))
    assert out.metrics["masked_tokens"] == float(remasks["text"].sum())
    out.loss.backward()
    assert first.logits["text"].grad is None  # no gradient through the first prediction
    assert model.blocks[0].qkv.weight.grad is not None


def test_loss_on_all_masked_also_scores_the_filled_in_predictions():
    space = tiny_space()
    objective = UnrollMask(token_space=space, loss_on="all_masked")
    inputs = StepInput(
        batch=hand_batch(), task=I2T, generator=torch.Generator().manual_seed(1), shared={SHARED_KEY: first_step()}
    )
    out = objective(tiny_model(space), inputs)
    assert out.metrics["masked_tokens"] == float(TEXT_MASK.sum()) == 9.0


def test_fraction_unrolls_only_the_first_rows():
    space = tiny_space()
    objective = UnrollMask(token_space=space, first_step="argmax", fraction=0.5)
    filled, remasks = objective.unroll(
        first_step(), rows=math.ceil(0.5 * 3), generator=torch.Generator().manual_seed(2)
    )
    assert filled["text"].tokens.tolist() == [[7, 0, 0, 0, 0, 0], [1, 2, 6, 1, 0, 0]]
    assert remasks["text"].shape == (2, 6)
    inputs = StepInput(
        batch=hand_batch(), task=I2T, generator=torch.Generator().manual_seed(2), shared={SHARED_KEY: first_step()}
    )
    out = objective(tiny_model(space), inputs)
    assert out.metrics["masked_tokens"] == float(remasks["text"].sum())


def test_without_a_cached_first_step_it_makes_one():
    space = tiny_space()
    inputs = StepInput(batch=hand_batch(), task=I2T, generator=torch.Generator().manual_seed(0))
    UnrollMask(token_space=space)(tiny_model(space), inputs)
    assert isinstance(inputs.shared[SHARED_KEY], MaskedForward)


def test_options_are_checked_and_default_to_our_decisions():
    config = UnrollMask.Config()
    assert (config.weight, config.first_step, config.remask, config.loss_on, config.fraction) == (
        1.0,
        "sample",
        "random",
        "remasked",
        1.0,
    )
    with pytest.raises(ValueError, match="unknown first_step"):
        UnrollMask(token_space=tiny_space(), first_step="greedy")
    with pytest.raises(ValueError, match="fraction"):
        UnrollMask(token_space=tiny_space(), fraction=0.0)



def test_second_step_keeps_dropped_context_masked():
    """Guidance training: a row whose context the first pass dropped keeps it dropped in the unrolled pass."""
    from mmgen.objectives.training_loss import CONDITION_DROPOUT_KEY
    from objective_helpers import T2I

    seen = []
    model = tiny_model()
    original = model.forward
    model.forward = lambda packed: seen.append(packed.tokens.clone()) or original(packed)
    inputs = StepInput(batch=hand_batch(), task=T2I, generator=torch.Generator().manual_seed(0))
    inputs.shared[CONDITION_DROPOUT_KEY] = 1.0
    UnrollMask(token_space=model.token_space)(model, inputs)
    first = inputs.shared[SHARED_KEY]
    span = first.packed.span("text")
    valid = first.segments["text"].valid()
    assert len(seen) == 2
    for tokens in seen:
        assert (tokens[:, span.start : span.stop][valid] == model.token_space.mask_id("text")).all()
