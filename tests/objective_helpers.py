"""A tiny joint space, hand-made batches and a tiny MAGVLT, shared by the model and objective tests."""

from __future__ import annotations

import pytest
import torch

from mmgen.batch import Segment, TokenBatch
from mmgen.plugins.models.magvlt import MagvltModel
from mmgen.plugins.models.presets import Architecture
from mmgen.task import Task
from mmgen.token_space import JointTokenSpace, TokenSpace


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; on this shared 2-core machine two threads thrash."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


MARKERS = ("BOG_LEFT", "BOG_RIGHT", "BOG_TOP", "BOG_BOTTOM")
T2I = Task(name="t2i", context=("text",), target=("image",))
I2T = Task(name="i2t", context=("image",), target=("text",))
IT2IT = Task(name="it2it", context=("image",), target=("text",), mask_context=True)


def tiny_space(*, image_shape=(4, 4), image_vocab=8, text_length=6, text_vocab=10) -> JointTokenSpace:
    """image: a 4x4 grid of 8 codes; text: up to 6 tokens of 10, 0 = end-of-text = pad (as MAGVLT's BPE)."""
    image = TokenSpace(name="image", vocab_size=image_vocab, shape=image_shape)
    text = TokenSpace(
        name="text", vocab_size=text_vocab, shape=(text_length,), variable_length=True, pad_id=0, eos_id=0
    )
    return JointTokenSpace(spaces=(image, text), extra_specials=MARKERS)


def caption_segment(captions: list[list[int]], *, length: int = 6) -> Segment:
    """Captions given without end-of-text; each gets EOS (0) appended and is padded with 0."""
    rows = [c + [0] * (length - len(c)) for c in captions]
    return Segment(
        modality="text",
        tokens=torch.tensor(rows),
        lengths=torch.tensor([len(c) + 1 for c in captions]),
    )


def image_segment(rows: list[list[int]]) -> Segment:
    return Segment.full("image", torch.tensor(rows))


def hand_batch() -> TokenBatch:
    """Three pairs: images with distinct codes, captions of 1, 3 and 5 words (lengths 2, 4, 6 with EOS)."""
    images = image_segment(
        [[i % 8 for i in range(16)], [(3 * i + 1) % 8 for i in range(16)], [7 - i % 8 for i in range(16)]]
    )
    captions = caption_segment([[5], [1, 2, 3], [9, 8, 7, 6, 4]])
    return TokenBatch(segments=(images, captions))


def tiny_model(space: JointTokenSpace | None = None, *, depth: int = 2, seed: int = 0) -> MagvltModel:
    torch.manual_seed(seed)
    return MagvltModel(token_space=space or tiny_space(), architecture=Architecture(width=32, depth=depth, heads=2))
