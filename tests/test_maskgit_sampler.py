"""The MaskGIT sampler: exact unmasking schedules, text refinement counts, ordering of targets."""

from __future__ import annotations

import pytest
import torch

from generation_helpers import FakeModel, peaked, spaces, uniform_over
from generation_helpers import one_thread  # noqa: F401 (an autouse fixture)
from mmgen.config import ConfigError, structure
from mmgen.protocols import GenerationRequest, RequestSegment
from mmgen.samplers.maskgit import (
    FixedLengthOptions,
    MaskGitSampler,
    VariableLengthOptions,
    masked_after_step,
    remask_count,
)

NO_NOISE = dict(gumbel_start=0.0, gumbel_end=0.0)


def segment(modality, tokens, *, known=None, lengths=None, target=False):
    tokens = torch.as_tensor(tokens)
    known = torch.ones_like(tokens, dtype=torch.bool) if known is None else torch.as_tensor(known, dtype=torch.bool)
    return RequestSegment(
        modality=modality,
        tokens=tokens,
        known=known,
        lengths=None if lengths is None else torch.as_tensor(lengths),
        target=target,
    )


def blank(modality, batch, length, **kwargs):
    zeros = torch.zeros(batch, length, dtype=torch.long)
    return segment(modality, zeros, known=torch.zeros_like(zeros, dtype=torch.bool), target=True, **kwargs)


def prompt(batch=1):
    return segment("text", [[1, 2, 0, 0, 0, 0]] * batch, lengths=[3] * batch)


def masked_counts(model, modality, calls):
    return [model.masked_in(call, modality).sum(dim=1).tolist() for call in calls]


def test_cosine_schedule_counts_are_exact():
    counts = torch.tensor([16, 256])
    after = [masked_after_step(counts, step=t, steps=10).tolist() for t in range(11)]
    assert [a[0] for a in after] == [16, 16, 16, 15, 13, 12, 10, 8, 5, 3, 0]
    # cos(pi/3) * 256 is 128.00000000000003 in floating point; it must stay 128.
    assert [masked_after_step(torch.tensor([256]), step=t, steps=3).item() for t in range(4)] == [256, 222, 128, 0]


def test_image_steps_fix_at_least_one_token_each_and_end_unmasked():
    space = spaces(image_shape=(4, 4))
    model = FakeModel(space, {"image": uniform_over([8] * 16, 8), "text": uniform_over([2] * 6, 10)})
    request = GenerationRequest(segments=[prompt(), blank("image", 1, 16)])
    out = MaskGitSampler().generate(model, request, generator=torch.Generator().manual_seed(0))
    # Schedule 16,16,15,13,12,10,8,5,3,0 capped so each of the 10 steps fixes a token.
    assert masked_counts(model, "image", range(10)) == [[16], [15], [14], [13], [12], [11], [10], [8], [5], [3]]
    assert len(model.calls) == 10
    assert out.segments[0].tokens.shape == (1, 16)


def test_tokens_are_fixed_in_confidence_order_and_never_remasked():
    space = spaces()
    # Uniform over 4, 1, 8, 2 tokens: log p of any draw is -log k, so confidence order is 1, 3, 0, 2.
    model = FakeModel(space, {"image": uniform_over([4, 1, 8, 2], 8), "text": uniform_over([2] * 6, 10)})
    sampler = MaskGitSampler(fixed=FixedLengthOptions(steps=4, **NO_NOISE))
    out = sampler.generate(
        model, GenerationRequest(segments=[prompt(), blank("image", 1, 4)]), generator=torch.Generator().manual_seed(3)
    )
    masks = [model.masked_in(call, "image")[0].tolist() for call in range(4)]
    assert masks == [
        [True, True, True, True],
        [True, False, True, True],
        [True, False, True, False],
        [False, False, True, False],
    ]
    final = out.segments[0].tokens[0]
    for call in range(1, 4):
        shown = model.seen(call, "image")[0]
        fixed = ~model.masked_in(call, "image")[0]
        assert torch.equal(shown[fixed], final[fixed])
    assert final[1].item() == 0  # the only token position 1 allows


def test_context_and_known_target_tokens_never_change_and_counts_are_per_row():
    space = spaces(image_shape=(4, 4))
    model = FakeModel(space, {"image": uniform_over([8] * 16, 8), "text": uniform_over([2] * 6, 10)})
    source = torch.arange(32).view(2, 16) % 8
    known = torch.ones(2, 16, dtype=torch.bool)
    known[0, 5:9] = False  # row 0: 4 unknown tokens
    known[1, :] = False  # row 1: all 16 unknown
    known[1, 15] = True
    request = GenerationRequest(segments=[prompt(2), segment("image", source, known=known, target=True)])
    out = MaskGitSampler(fixed=FixedLengthOptions(steps=4)).generate(
        model, request, generator=torch.Generator().manual_seed(1)
    )
    # Row 0: ceil(cos(pi/8 k) 4) = 4, 3, 2, 0 capped to 3, 2, 1, 0. Row 1 (15): 14, 11, 6, 0.
    assert masked_counts(model, "image", range(4)) == [[4, 15], [3, 14], [2, 11], [1, 6]]
    tokens = out.segments[0].tokens
    assert torch.equal(tokens[known], source[known])
    for call in range(len(model.calls)):
        assert torch.equal(model.seen(call, "text")[:, :3], torch.tensor([[1, 2, 0]] * 2))


def test_fewer_unknown_tokens_than_steps_stops_when_done():
    space = spaces()
    model = FakeModel(space, {"image": uniform_over([8] * 4, 8), "text": uniform_over([2] * 6, 10)})
    known = torch.tensor([[True, False, False, False]])
    request = GenerationRequest(segments=[prompt(), segment("image", [[5, 0, 0, 0]], known=known, target=True)])
    out = MaskGitSampler().generate(model, request, generator=torch.Generator().manual_seed(0))
    assert masked_counts(model, "image", range(len(model.calls))) == [[3], [2], [1]]
    assert out.segments[0].tokens[0, 0].item() == 5


def test_text_length_from_length_head_then_linear_remasking():
    space = spaces()
    lengths = torch.tensor([0.0, 0.0, 0.0, 0.0, 4.0, 0.0])  # class 4 = length 5
    model = FakeModel(
        space, {"image": uniform_over([8] * 4, 8), "text": uniform_over([9] * 6, 10)}, length_logits=lengths
    )
    request = GenerationRequest(segments=[segment("image", [[1, 2, 3, 4]]), blank("text", 1, 6)])
    out = MaskGitSampler().generate(model, request, generator=torch.Generator().manual_seed(0))
    # Call 0: the length pass, text fully masked, the BEGIN query sees nothing after it.
    length_pass = model.calls[0]
    span = length_pass.span("text")
    assert model.masked_in(0, "text").tolist() == [[True] * 6]
    assert not length_pass.attn_mask[0, span.begin, span.begin + 1 :].any()
    # Then 12 iterations over all N = 5 tokens, EOS included (the authors' sample_txt_tok): floor(5 (12 - t) / 12),
    # at least 1.
    assert [c[0] for c in masked_counts(model, "text", range(1, 13))] == [5, 4, 4, 3, 3, 2, 2, 2, 1, 1, 1, 1]
    assert len(model.calls) == 13
    for call in range(1, 13):
        assert model.calls[call].key_padding[0, span.start :].tolist() == [False] * 5 + [True]
        assert not model.masked_in(call, "text")[0, 5:].any()
    text = out.segments[0]
    assert text.lengths.tolist() == [5]
    assert text.tokens[0, 5].item() == 0  # padding after the 5 sampled positions


def test_fix_eos_writes_end_of_text_at_the_predicted_length():
    space = spaces()
    lengths = torch.tensor([0.0, 0.0, 0.0, 0.0, 4.0, 0.0])  # class 4 = length 5
    model = FakeModel(
        space, {"image": uniform_over([8] * 4, 8), "text": uniform_over([9] * 6, 10)}, length_logits=lengths
    )
    request = GenerationRequest(segments=[segment("image", [[1, 2, 3, 4]]), blank("text", 1, 6)])
    sampler = MaskGitSampler(variable=VariableLengthOptions(fix_eos=True))
    out = sampler.generate(model, request, generator=torch.Generator().manual_seed(0))
    # 12 iterations over N = 4 unknown tokens (the 5th is the fixed EOS): floor(4 (12 - t) / 12), at least 1.
    assert [c[0] for c in masked_counts(model, "text", range(1, 13))] == [4, 3, 3, 3, 2, 2, 2, 1, 1, 1, 1, 1]
    for call in range(1, 13):
        assert not model.masked_in(call, "text")[0, 4:].any()
    text = out.segments[0]
    assert text.lengths.tolist() == [5]
    assert text.tokens[0, 4:].tolist() == [0, 0]  # EOS (id 0 here), then padding


def test_variable_length_defaults_are_the_authors_released_settings():
    # configs/magvlt-it2it-base-sampling.yaml and sampling_i2t.py of kakaobrain/magvlt.
    options = VariableLengthOptions()
    assert (options.steps, options.temperature, options.top_k) == (12, 0.1, 32)
    assert (options.length_top_k, options.length_jitter, options.fix_eos) == (1, 0, False)
    assert options.guidance.scale == 0
    fixed = FixedLengthOptions()
    assert (fixed.steps, fixed.temperature_start, fixed.temperature_end) == (10, 1.4, 0.6)
    assert (fixed.gumbel_start, fixed.gumbel_end, fixed.top_k, fixed.guidance.scale) == (2.0, 0.2, None, 0)


def test_remask_counts_function():
    assert [remask_count(torch.tensor([4]), step=t, steps=12).item() for t in range(12)] == [
        4,
        3,
        3,
        3,
        2,
        2,
        2,
        1,
        1,
        1,
        1,
        1,
    ]
    assert remask_count(torch.tensor([0, 24]), step=6, steps=12).tolist() == [0, 12]


def test_text_remasking_prefers_low_confidence_tokens_and_revises_them():
    space = spaces()
    # Position 0 allows 1 token (log p = 0), position 1 allows 9 (log p = -log 9): weights 1 : 9.
    table = uniform_over([1, 9, 1, 1, 1, 1], 10)
    model = FakeModel(space, {"image": uniform_over([8] * 4, 8), "text": table})
    batch = 200
    known = torch.zeros(batch, 6, dtype=torch.bool)
    known[:, 2] = True
    request = GenerationRequest(
        segments=[
            segment("image", [[1, 2, 3, 4]] * batch),
            segment("text", torch.zeros(batch, 6, dtype=torch.long), known=known, lengths=[3] * batch, target=True),
        ]
    )
    MaskGitSampler(variable=VariableLengthOptions(top_k=None, temperature=1.0)).generate(
        model, request, generator=torch.Generator().manual_seed(0)
    )
    # Iterations 1..11 re-mask one of the two unknown tokens: position 1 about 9 times in 10.
    late = torch.stack([model.masked_in(call, "text") for call in range(1, 12)])
    share = late[..., 1].float().mean().item()
    assert 0.85 < share < 0.95
    assert late[..., 0].float().mean().item() == pytest.approx(1 - share)
    assert not late[..., 2].any()
    # A token drawn earlier is revised later: position 1's value changes between iterations in some rows.
    shown = torch.stack([model.seen(call, "text")[:, 1] for call in range(1, 12)])
    visible = ~late[..., 1]
    revised = [len(set(shown[visible[:, b], b].tolist())) > 1 for b in range(batch)]
    assert sum(revised) > batch // 10


def test_infilling_keeps_known_text_and_given_length_without_a_length_pass():
    space = spaces()
    model = FakeModel(space, {"image": uniform_over([8] * 4, 8), "text": uniform_over([9] * 6, 10)})
    tokens = torch.tensor([[4, 5, 6, 7, 0, 0]])
    known = torch.tensor([[True, False, False, True, True, False]])
    request = GenerationRequest(
        segments=[segment("image", [[1, 2, 3, 4]]), segment("text", tokens, known=known, lengths=[5], target=True)]
    )
    out = MaskGitSampler().generate(model, request, generator=torch.Generator().manual_seed(0))
    assert len(model.calls) == 12
    assert model.masked_in(0, "text").tolist() == [[False, True, True, False, False, False]]
    text = out.segments[0]
    assert text.lengths.tolist() == [5]
    assert text.tokens[0, [0, 3, 4]].tolist() == [4, 7, 0]


def test_predicted_length_keeps_a_known_prefix_and_room_for_eos():
    space = spaces()
    lengths = torch.tensor([9.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # argmax says length 1
    model = FakeModel(
        space, {"image": uniform_over([8] * 4, 8), "text": uniform_over([9] * 6, 10)}, length_logits=lengths
    )
    known = torch.tensor([[True, True, True, False, False, False]])
    request = GenerationRequest(
        segments=[segment("image", [[1, 2, 3, 4]]), segment("text", [[3, 4, 5, 0, 0, 0]], known=known, target=True)]
    )
    plain = MaskGitSampler().generate(model, request, generator=torch.Generator().manual_seed(0))
    assert plain.segments[0].lengths.tolist() == [4]  # at least one new token after the prefix
    model.calls.clear()
    sampler = MaskGitSampler(variable=VariableLengthOptions(fix_eos=True))
    out = sampler.generate(model, request, generator=torch.Generator().manual_seed(0))
    # With fix_eos: at least one new token after the prefix, then EOS: length 5.
    text = out.segments[0]
    assert text.lengths.tolist() == [5]
    assert text.tokens[0, :3].tolist() == [3, 4, 5] and text.tokens[0, 4:].tolist() == [0, 0]
    assert [c[0] for c in masked_counts(model, "text", range(1, 13))] == [1] * 12


def test_length_options_top_k_and_jitter():
    space = spaces()
    lengths = torch.tensor([0.0, 0.0, 3.0, 2.9, 0.0, 0.0])  # lengths 3 and 4 about equally likely
    model = FakeModel(
        space, {"image": uniform_over([8] * 4, 8), "text": uniform_over([9] * 6, 10)}, length_logits=lengths
    )

    def run(**options):
        request = GenerationRequest(segments=[segment("image", [[1, 2, 3, 4]] * 64), blank("text", 64, 6)])
        sampler = MaskGitSampler(variable=VariableLengthOptions(steps=1, **options))
        return set(
            sampler.generate(model, request, generator=torch.Generator().manual_seed(0)).segments[0].lengths.tolist()
        )

    assert run() == {3}  # argmax
    assert run(length_top_k=2) == {3, 4}
    assert run(length_jitter=2) == {1, 2, 3, 4, 5}  # 3 + [-2, 2]
    assert run(length_jitter=2, fix_eos=True) == {2, 3, 4, 5}  # 1 clamped up to 2 (one token and EOS)


def test_several_targets_are_generated_in_order_each_conditioned_on_the_earlier():
    space = spaces()
    lengths = torch.tensor([0.0, 0.0, 5.0, 0.0, 0.0, 0.0])
    model = FakeModel(
        space, {"image": peaked([1, 2, 3, 4], 8), "text": peaked([5, 6, 7, 8, 9, 9], 10)}, length_logits=lengths
    )
    request = GenerationRequest(segments=[prompt(), blank("image", 1, 4), blank("text", 1, 6)])
    sampler = MaskGitSampler(fixed=FixedLengthOptions(steps=4), variable=VariableLengthOptions(steps=3))
    out = sampler.generate(model, request, generator=torch.Generator().manual_seed(0))
    assert [s.modality for s in out.segments] == ["image", "text"]
    assert out.segments[0].tokens.tolist() == [[1, 2, 3, 4]]
    assert out.segments[1].tokens.tolist() == [[5, 6, 7, 0, 0, 0]] and out.segments[1].lengths.tolist() == [3]
    bog = space.special("BOG")
    image_calls = [[s.modality for s in c.spans] for c in model.calls[:4]]
    text_calls = [[s.modality for s in c.spans] for c in model.calls[4:]]
    assert image_calls == [["text", "image"]] * 4
    assert text_calls == [["text", "image", "text"]] * 4  # length pass + 3 iterations
    for packed in model.calls[4:]:
        image = packed.span("image")
        assert packed.tokens[0, image.stop].item() == bog
        assert (packed.tokens[0, image.start : image.stop]).tolist() == [1, 2, 3, 4]


def test_same_seed_same_output_other_seed_differs():
    space = spaces(image_shape=(4, 4))
    model = FakeModel(space, {"image": uniform_over([8] * 16, 8), "text": uniform_over([2] * 6, 10)})
    request = GenerationRequest(segments=[prompt(), blank("image", 1, 16)])
    sampler = MaskGitSampler()
    first = sampler.generate(model, request, generator=torch.Generator().manual_seed(7)).segments[0].tokens
    again = sampler.generate(model, request, generator=torch.Generator().manual_seed(7)).segments[0].tokens
    other = sampler.generate(model, request, generator=torch.Generator().manual_seed(8)).segments[0].tokens
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_on_step_sees_every_step_and_changes_nothing():
    """The live view's hook (`mmgen serve`): one call per step, fixed tokens as they end up, the same output."""
    space = spaces(image_shape=(4, 4))
    model = FakeModel(space, {"image": uniform_over([8] * 16, 8), "text": uniform_over([2] * 6, 10)})
    request = GenerationRequest(segments=[prompt(), blank("image", 1, 16)])
    seen = []
    record = lambda **step: seen.append(step)  # noqa: E731
    sampler = MaskGitSampler()
    plain = sampler.generate(model, request, generator=torch.Generator().manual_seed(7)).segments[0].tokens
    watched = sampler.generate(model, request, generator=torch.Generator().manual_seed(7), on_step=record)
    assert torch.equal(watched.segments[0].tokens, plain)
    assert [(s["step"], s["steps"]) for s in seen] == [(t, 10) for t in range(1, 11)]
    assert [s["masked"].sum().item() for s in seen] == [15, 14, 13, 12, 11, 10, 8, 5, 3, 0]
    for step in seen:  # a fixed token is shown as it ends up
        fixed = ~step["masked"]
        assert torch.equal(step["segment"].tokens[fixed], plain[fixed])
    text_model = FakeModel(
        spaces(), {"image": uniform_over([8] * 4, 8), "text": uniform_over([9] * 6, 10)},
        length_logits=torch.tensor([0.0, 0.0, 0.0, 0.0, 4.0, 0.0]),
    )
    captions = []
    text_request = GenerationRequest(segments=[segment("image", [[1, 2, 3, 4]]), blank("text", 1, 6)])
    out = MaskGitSampler().generate(
        text_model, text_request, generator=torch.Generator().manual_seed(0), on_step=lambda **s: captions.append(s)
    )
    assert [s["step"] for s in captions] == list(range(1, 13)) and not captions[-1]["masked"].any()
    assert torch.equal(captions[-1]["segment"].tokens, out.segments[0].tokens)
    assert captions[-1]["segment"].lengths.tolist() == [5]


def test_model_without_length_head_needs_lengths():
    space = spaces()

    class NoLengthHead(FakeModel):
        length_logits = None

    model = NoLengthHead(space, {"image": uniform_over([8] * 4, 8), "text": uniform_over([9] * 6, 10)})
    request = GenerationRequest(segments=[segment("image", [[1, 2, 3, 4]]), blank("text", 1, 6)])
    with pytest.raises(TypeError, match="no length head; give the 'text' target lengths"):
        MaskGitSampler().generate(model, request, generator=torch.Generator())


def test_config_structures_per_modality_kind_and_rejects_typos():
    config = structure(
        MaskGitSampler.Config,
        {
            "fixed": {"steps": 8, "guidance": {"scale": 2.0, "schedule": "linear"}},
            "variable": {"top_k": None, "length_top_k": 3},
        },
    )
    sampler = MaskGitSampler.from_config(config)
    assert (sampler.fixed.steps, sampler.fixed.temperature_start, sampler.fixed.guidance.schedule) == (8, 1.4, "linear")
    assert (sampler.variable.steps, sampler.variable.top_k, sampler.variable.length_top_k) == (12, None, 3)
    with pytest.raises(ConfigError, match="fixed.step: unknown option.*did you mean 'steps'"):
        structure(MaskGitSampler.Config, {"fixed": {"step": 8}})
    with pytest.raises(ValueError, match="steps must be > 0"):
        FixedLengthOptions(steps=0)


def test_registered_as_maskgit():
    from mmgen.registry import load_registry

    assert load_registry().get("samplers", "maskgit") is MaskGitSampler
