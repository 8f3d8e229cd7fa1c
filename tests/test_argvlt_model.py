"""ARGVLT: MAGVLT's size and layout, left-to-right attention, and a KV cache that matches the full pass."""

from __future__ import annotations

import attrs
import pytest
import torch

from mmgen.api import load_registry
from mmgen.layout import Packed, Part, pack
from mmgen.plugins.models.argvlt import ArgvltModel
from mmgen.plugins.models.causal import causal, causal_attention
from mmgen.plugins.models.magvlt import MagvltModel
from mmgen.plugins.models.presets import PRESETS, Architecture
from mmgen.plugins.models.saved import load_trained_model, save_trained_model
from mmgen.config import Spec

from objective_helpers import (
    hand_batch,
    one_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_space,
)
from test_magvlt_model import count, paper_space

TOLERANCE = 1e-5


def tiny_argvlt(*, depth: int = 2, seed: int = 0, dropout: float = 0.0) -> ArgvltModel:
    torch.manual_seed(seed)
    return ArgvltModel(
        token_space=tiny_space(), architecture=Architecture(width=32, depth=depth, heads=2, dropout=dropout)
    )


def t2i_packed(batch=None) -> Packed:
    batch = batch or hand_batch()
    return pack(
        tiny_space(), ["BOC", Part(segment=batch.modality("text")), "BOG", Part(segment=batch.modality("image"))]
    )


def head(packed: Packed, length: int) -> Packed:
    return Packed(
        tokens=packed.tokens[:, :length],
        table=packed.table[:length],
        position=packed.position[:length],
        key_padding=packed.key_padding[:, :length],
        attn_mask=None,
        spans=(),
    )


@pytest.mark.parametrize("preset", PRESETS)
def test_the_twins_have_the_same_sizes_and_argvlt_lacks_only_the_length_head(preset):
    with torch.device("meta"):
        ar = ArgvltModel.from_config(ArgvltModel.Config(preset=preset), token_space=paper_space())
        mask = MagvltModel.from_config(MagvltModel.Config(preset=preset), token_space=paper_space())
    assert ar.architecture == mask.architecture == PRESETS[preset]
    assert count(mask) - count(ar) == ar.architecture.width * 64  # text's length head: d x 64, no bias
    assert {n for n, _ in mask.named_parameters()} - {n for n, _ in ar.named_parameters()} == {
        "length_heads.text.weight"
    }


def test_base_argvlt_has_371_5m_less_the_length_head():
    with torch.device("meta"):
        model = ArgvltModel.from_config(ArgvltModel.Config(preset="base"), token_space=paper_space())
    assert count(model) == 371_533_056 - 1024 * 64


def test_causal_attention_sees_itself_and_earlier_non_padding():
    padding = torch.tensor([[False, True, False]])
    assert causal_attention(padding).tolist() == [
        [[True, False, False], [True, True, False], [True, False, True]],
    ]


def test_changing_a_later_token_leaves_every_earlier_state_exactly_unchanged():
    model = tiny_argvlt().eval()
    packed = t2i_packed()
    cut = packed.span("image").start + 5
    changed = packed.tokens.clone()
    changed[:, cut:] = (changed[:, cut:] - tiny_space().offset("image") + 1) % 8 + tiny_space().offset("image")
    with torch.no_grad():
        before = model(packed)
        after = model(attrs.evolve(packed, tokens=changed))
    assert torch.equal(before[:, :cut], after[:, :cut])
    assert not torch.allclose(before[:, cut:], after[:, cut:])


def test_the_model_is_causal_even_when_the_packed_sequence_allows_full_attention():
    model = tiny_argvlt().eval()
    packed = t2i_packed()
    assert packed.attn_mask is not None  # text padding is blocked as keys, nothing else
    with torch.no_grad():
        assert torch.equal(model(packed), model(causal(packed)))


def test_padding_is_never_attended_to():
    model = tiny_argvlt().eval()
    packed = t2i_packed()
    padding = packed.key_padding.clone()
    other = torch.where(padding, torch.full_like(packed.tokens, tiny_space().special("BOC")), packed.tokens)
    with torch.no_grad():
        a, b = model(packed), model(attrs.evolve(packed, tokens=other))
    assert torch.equal(a[~padding], b[~padding])


@pytest.mark.parametrize("prefix", [1, 9, 12])
def test_cached_steps_give_the_full_passes_states(prefix):
    # prefix 9: BOC, BEGIN_text, 6 text slots, BOG (row 0's caption pads are in the cache); 12: 2 image tokens.
    model = tiny_argvlt().eval()
    packed = t2i_packed()
    with torch.no_grad():
        full = model(packed)
        hidden, cache = model.prefill(head(packed, prefix))
        steps = [
            model.extend(
                packed.tokens[:, s : s + 1],
                packed.table[s : s + 1],
                packed.position[s : s + 1],
                cache,
                key_padding=packed.key_padding[:, s : s + 1],
            )
            for s in range(prefix, packed.tokens.shape[1])
        ]
    assert torch.allclose(hidden, full[:, :prefix], atol=TOLERANCE)
    assert torch.allclose(torch.cat(steps, dim=1), full[:, prefix:], atol=TOLERANCE)
    assert cache.length == packed.tokens.shape[1] and len(cache.layers) == 2
    assert cache.layers[0][0].shape == (3, 2, packed.tokens.shape[1], 16)


@pytest.mark.parametrize("capacity", [None, 9, 40])
def test_the_cache_is_written_in_place_within_its_capacity_and_grows_beyond_it(capacity):
    # None: buffers of the prefix's length, doubled when full; 9: room for 5 more slots, then doubled;
    # 40: room for everything, so every step writes into the buffers prefill allocated.
    model = tiny_argvlt().eval()
    packed = t2i_packed()
    total = packed.tokens.shape[1]
    with torch.no_grad():
        full = model(packed)
        _, cache = model.prefill(head(packed, 4), capacity=capacity)
        first = cache.keys[0].data_ptr()
        grown = []
        steps = []
        for s in range(4, total):
            steps.append(
                model.extend(
                    packed.tokens[:, s : s + 1],
                    packed.table[s : s + 1],
                    packed.position[s : s + 1],
                    cache,
                    key_padding=packed.key_padding[:, s : s + 1],
                )
            )
            grown.append(cache.keys[0].data_ptr() != first)
            first = cache.keys[0].data_ptr()
    assert torch.allclose(torch.cat(steps, dim=1), full[:, 4:], atol=TOLERANCE)
    assert cache.length == total and torch.equal(cache.key_padding, packed.key_padding)
    expected_growths = {None: 3, 9: 2, 40: 0}[capacity]  # 4 -> 8 -> 16 -> 32 >= total; 9 -> 18 -> 36; none
    assert sum(grown) == expected_growths, (total, grown)


def test_extending_several_slots_at_once_equals_one_by_one():
    model = tiny_argvlt().eval()
    packed = t2i_packed()
    with torch.no_grad():
        full = model(packed)
        _, cache = model.prefill(head(packed, 2))
        several = model.extend(
            packed.tokens[:, 2:], packed.table[2:], packed.position[2:], cache, key_padding=packed.key_padding[:, 2:]
        )
    assert torch.allclose(several, full[:, 2:], atol=TOLERANCE)


def test_activation_checkpointing_gives_the_same_gradients():
    grads = []
    for enabled in (False, True):
        model = tiny_argvlt().train()
        model.set_activation_checkpointing(enabled)
        model.logits(model(t2i_packed()), "image").sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_logits_are_restricted_to_the_modality():
    model = tiny_argvlt().eval()
    hidden = model(t2i_packed())
    assert model.logits(hidden, "image").shape == (3, hidden.shape[1], 8)
    assert model.logits(hidden, "text").shape == (3, hidden.shape[1], 10)
    assert model.default_sampler == "autoregressive" and not hasattr(model, "length_logits")


def test_a_saved_model_is_rebuilt_by_name(tmp_path):
    registry = load_registry()
    model = ArgvltModel.from_config(ArgvltModel.Config(preset="tiny"), token_space=tiny_space())
    spec = Spec(kind="models", use="argvlt", config=ArgvltModel.Config(preset="tiny"))
    save_trained_model(tmp_path, state_dict=model.state_dict(), spec=spec, token_space=tiny_space())
    loaded = load_trained_model(tmp_path, registry)
    assert isinstance(loaded, ArgvltModel) and not loaded.training
    packed = t2i_packed(hand_batch())
    with torch.no_grad():
        assert torch.equal(loaded(packed), model.eval()(packed))


def test_registered_with_magvlts_options():
    entry = load_registry().entry("models", "argvlt")
    assert entry.cls is ArgvltModel
    fields = [(f.name, f.default) for f in attrs.fields(ArgvltModel.Config)]
    assert fields == [(f.name, f.default) for f in attrs.fields(MagvltModel.Config)]
