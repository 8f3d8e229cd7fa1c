"""Classifier-free guidance: condition dropout for training, guided logits and schedules for sampling."""

from __future__ import annotations

import pytest
import torch

from generation_helpers import FakeModel, spaces, uniform_over
from generation_helpers import one_thread  # noqa: F401 (an autouse fixture)
from mmgen.api import (
    GenerationRequest,
    GuidanceOptions,
    RequestSegment,
    Segment,
    Task,
    TokenBatch,
    drop_condition,
    guidance_weight,
    guide,
)
from mmgen.samplers.maskgit import FixedLengthOptions, MaskGitSampler, VariableLengthOptions

T2I = Task(name="t2i", context=("text",), target=("image",))


def test_schedules():
    constant = GuidanceOptions(scale=3.0)
    rising = GuidanceOptions(scale=3.0, schedule="linear")
    assert [guidance_weight(constant, step=t, steps=4) for t in range(4)] == [3.0] * 4
    assert [guidance_weight(rising, step=t, steps=4) for t in range(4)] == [0.0, 1.0, 2.0, 3.0]
    assert guidance_weight(rising, step=0, steps=1) == 3.0
    with pytest.raises(ValueError, match="guidance scale must be >= 0"):
        GuidanceOptions(scale=-1.0)


def test_guidance_options_structure_from_a_samplers_recipe_data():
    from mmgen.api import ConfigError, load_registry, structure_spec

    registry = load_registry()

    def sampler(guidance):
        data = {"use": "maskgit", "fixed": {"steps": 4, "guidance": guidance}}
        return structure_spec("samplers", data, path="sampler", registry=registry).config

    assert sampler({"scale": 2, "schedule": "linear"}).fixed.guidance == GuidanceOptions(scale=2.0, schedule="linear")
    assert sampler({}).variable.guidance == GuidanceOptions()  # off unless a recipe asks
    with pytest.raises(ConfigError, match=r"sampler.fixed.guidance.schedule: expected one of \['constant', 'linear'\]"):
        sampler({"schedule": "cosine"})
    with pytest.raises(ConfigError, match="sampler.fixed.guidance: guidance scale must be >= 0, got -1.0"):
        sampler({"scale": -1})


def test_guide_extrapolates_away_from_the_unconditional_logits():
    cond, uncond = torch.tensor([1.0, 0.5]), torch.tensor([0.0, 1.5])
    assert guide(cond, uncond, 2.0).tolist() == [3.0, -1.5]
    assert guide(cond, uncond, 0.0) is cond


def toy_model():
    space = spaces()
    # Unconditional: token 1 (logit 1.0) beats token 2 (0.0). A visible context adds 0.9 to token 2:
    # conditioned, token 1 still wins (1.0 > 0.9); guided with w, token 2 gets 0.9 + 0.9 w.
    base = torch.full((4, 8), -30.0)
    base[:, 1], base[:, 2] = 1.0, 0.0
    shift = torch.zeros(4, 8)
    shift[:, 2] = 0.9
    text = uniform_over([3] * 6, 10)
    return FakeModel(
        space, {"image": base, "text": text}, conditioned_shift={"image": shift, "text": torch.zeros_like(text)}
    )


def t2i_request():
    return GenerationRequest(
        segments=[
            RequestSegment(
                modality="text",
                tokens=torch.tensor([[1, 2, 0, 0, 0, 0]]),
                known=torch.ones(1, 6, dtype=torch.bool),
                lengths=torch.tensor([3]),
            ),
            RequestSegment(
                modality="image",
                tokens=torch.zeros(1, 4, dtype=torch.long),
                known=torch.zeros(1, 4, dtype=torch.bool),
                target=True,
            ),
        ]
    )


def argmax_sampler(guidance):
    return MaskGitSampler(fixed=FixedLengthOptions(steps=4, top_k=1, guidance=guidance))


def test_scale_zero_equals_unguided_and_skips_the_unconditional_pass():
    for seed in range(3):
        plain_model, zero_model = toy_model(), toy_model()
        plain = MaskGitSampler().generate(plain_model, t2i_request(), generator=torch.Generator().manual_seed(seed))
        zero = MaskGitSampler(
            fixed=FixedLengthOptions(guidance=GuidanceOptions(scale=0.0, schedule="linear"))
        ).generate(zero_model, t2i_request(), generator=torch.Generator().manual_seed(seed))
        assert torch.equal(plain.segments[0].tokens, zero.segments[0].tokens)
        assert len(zero_model.calls) == len(plain_model.calls) == 4


def test_guidance_runs_an_unconditional_pass_with_the_context_masked():
    model = toy_model()
    out = argmax_sampler(GuidanceOptions(scale=1.0)).generate(
        model, t2i_request(), generator=torch.Generator().manual_seed(0)
    )
    assert out.segments[0].tokens.tolist() == [[2, 2, 2, 2]]
    # One pass per step over 2 rows: the conditional row, then the unconditional one (context all MASK).
    assert len(model.calls) == 4 and all(call.tokens.shape[0] == 2 for call in model.calls)
    for call in range(4):
        context = model.masked_in(call, "text", 0)[:, :3]
        assert not context[0].any() and context[1].all()
        # The target is the same in both rows of a step.
        assert torch.equal(model.masked_in(call, "image")[0], model.masked_in(call, "image")[1])
        assert torch.equal(model.seen(call, "image")[0], model.seen(call, "image")[1])


def test_unguided_follows_the_conditional_argmax():
    out = argmax_sampler(GuidanceOptions(scale=0.0)).generate(toy_model(), t2i_request(), generator=torch.Generator())
    assert out.segments[0].tokens.tolist() == [[1, 1, 1, 1]]


def test_linear_schedule_starts_unguided():
    # Step 0 (w = 0) fixes one token to 1; steps 1..3 (w = 1/3, 2/3, 1) pick 2 (0.9 + 0.9 w > 1.0).
    model = toy_model()
    out = argmax_sampler(GuidanceOptions(scale=1.0, schedule="linear")).generate(
        model, t2i_request(), generator=torch.Generator()
    )
    assert sorted(out.segments[0].tokens[0].tolist()) == [1, 2, 2, 2]
    assert [call.tokens.shape[0] for call in model.calls] == [1, 2, 2, 2]  # step 0 conditional only


def test_text_guidance_uses_the_variable_length_options():
    space = spaces()
    text = torch.full((6, 10), -30.0)
    text[:, 3], text[:, 4] = 1.0, 0.0
    shift = torch.zeros(6, 10)
    shift[:, 4] = 0.9
    model = FakeModel(
        space,
        {"image": uniform_over([8] * 4, 8), "text": text},
        conditioned_shift={"image": torch.zeros(4, 8), "text": shift},
    )
    request = GenerationRequest(
        segments=[
            RequestSegment(
                modality="image", tokens=torch.tensor([[1, 2, 3, 4]]), known=torch.ones(1, 4, dtype=torch.bool)
            ),
            RequestSegment(
                modality="text",
                tokens=torch.zeros(1, 6, dtype=torch.long),
                known=torch.zeros(1, 6, dtype=torch.bool),
                lengths=torch.tensor([4]),
                target=True,
            ),
        ]
    )
    guided = MaskGitSampler(variable=VariableLengthOptions(steps=2, top_k=1, guidance=GuidanceOptions(scale=1.0)))
    assert guided.generate(model, request, generator=torch.Generator()).segments[0].tokens.tolist() == [
        [4, 4, 4, 4, 0, 0]
    ]
    plain = MaskGitSampler(variable=VariableLengthOptions(steps=2, top_k=1))
    assert plain.generate(model, request, generator=torch.Generator()).segments[0].tokens.tolist() == [
        [3, 3, 3, 3, 0, 0]
    ]


def batch(rows=8):
    image = Segment.full("image", torch.arange(rows * 4).view(rows, 4) % 8)
    lengths = torch.tensor([2, 3, 4, 5, 6, 6, 2, 3][:rows])
    text = Segment(modality="text", tokens=torch.ones(rows, 6, dtype=torch.long), lengths=lengths)
    return TokenBatch(segments=[image, text])


def test_drop_condition_masks_every_valid_context_token_of_dropped_rows():
    masks = drop_condition(batch(), T2I, p=1.0, generator=torch.Generator())
    assert set(masks) == {"text"}  # the image is the target
    assert torch.equal(masks["text"], batch().modality("text").valid())  # padding stays padding
    assert not drop_condition(batch(), T2I, p=0.0, generator=torch.Generator())["text"].any()


def test_drop_condition_draws_rows_from_the_generator_once_for_all_context():
    masks = drop_condition(batch(8), T2I, p=0.5, generator=torch.Generator().manual_seed(0))
    expected = torch.rand(8, generator=torch.Generator().manual_seed(0)) < 0.5
    assert torch.equal(masks["text"], batch(8).modality("text").valid() & expected[:, None])
    both = Task(name="it2t", context=("image", "text"), target=("audio",))
    masks = drop_condition(batch(8), both, p=0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(masks["image"].any(dim=1), expected) and torch.equal(masks["text"].any(dim=1), expected)


def test_drop_condition_rejects_bad_inputs():
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\], got 1.5"):
        drop_condition(batch(), T2I, p=1.5, generator=torch.Generator())
    t2t = Task(name="t2t", context=("text",), target=("text",))
    with pytest.raises(ValueError, match=r"\['text'\] is both context and target"):
        drop_condition(batch(), t2t, p=0.1, generator=torch.Generator())


def test_the_batched_passes_equal_two_separate_passes_of_a_real_model():
    # The sampler runs the conditional and unconditional sequences as one batch of 2B rows; on a
    # MAGVLT with random weights the guided logits equal those of two separate passes (float rounding).
    from objective_helpers import hand_batch, tiny_model

    from mmgen.samplers.maskgit import _Known, _target_logits
    from mmgen.api import Part

    model = tiny_model(depth=2).eval()
    batch = hand_batch()
    text, image = batch.modality("text"), batch.modality("image")
    hidden = torch.zeros(3, 6, dtype=torch.bool)
    hidden[1, 0] = True  # one context token of row 1 shown as MASK
    context = [_Known(segment=text, mask=hidden)]
    masked = torch.zeros(3, 16, dtype=torch.bool)
    masked[:, ::3] = True
    with torch.no_grad():
        batched = MaskGitSampler()._logits(model, context, image, masked, weight=1.5)
        cond = _target_logits(model, context, Part(segment=image, mask=masked))
        dropped = [_Known(segment=text, mask=torch.ones(3, 6, dtype=torch.bool))]
        uncond = _target_logits(model, dropped, Part(segment=image, mask=masked))
    assert batched.shape == (3, 16, 8)
    torch.testing.assert_close(batched, guide(cond, uncond, 1.5), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(cond, uncond, atol=1e-3)  # the context matters, so the check is not vacuous


def test_above_the_batch_threshold_the_two_passes_run_apart_with_the_same_result(monkeypatch):
    # Above ONE_GUIDED_BATCH_ROWS request rows the conditional and unconditional passes run as two
    # calls (faster at batch 32 on a CPU); the guided logits equal the one-batch ones (float rounding).
    from objective_helpers import hand_batch, tiny_model

    import mmgen.samplers.maskgit as maskgit
    from mmgen.samplers.maskgit import _Known

    model = tiny_model(depth=2).eval()
    batch = hand_batch()
    text, image = batch.modality("text"), batch.modality("image")
    context = [_Known(segment=text, mask=torch.zeros(3, 6, dtype=torch.bool))]
    masked = torch.zeros(3, 16, dtype=torch.bool)
    masked[:, 1::2] = True
    with torch.no_grad():
        monkeypatch.setattr(maskgit, "ONE_GUIDED_BATCH_ROWS", 8)
        one_batch = MaskGitSampler()._logits(model, context, image, masked, weight=2.0)
        monkeypatch.setattr(maskgit, "ONE_GUIDED_BATCH_ROWS", 2)
        two_passes = MaskGitSampler()._logits(model, context, image, masked, weight=2.0)
    torch.testing.assert_close(two_passes, one_batch, rtol=1e-5, atol=1e-5)

    toy = toy_model()
    out = argmax_sampler(GuidanceOptions(scale=1.0)).generate(toy, t2i_request(), generator=torch.Generator())
    assert out.segments[0].tokens.tolist() == [[2, 2, 2, 2]]
    monkeypatch.setattr(maskgit, "ONE_GUIDED_BATCH_ROWS", 0)
    toy = toy_model()
    out = argmax_sampler(GuidanceOptions(scale=1.0)).generate(toy, t2i_request(), generator=torch.Generator())
    assert out.segments[0].tokens.tolist() == [[2, 2, 2, 2]]
    assert len(toy.calls) == 8 and all(call.tokens.shape[0] == 1 for call in toy.calls)
    for call in range(8):  # conditional, then unconditional (context all MASK), at every step
        assert toy.masked_in(call, "text", 0)[0, :3].all() == (call % 2 == 1)
