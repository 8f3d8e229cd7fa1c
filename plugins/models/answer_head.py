"""VQA as classification: a head over an answer vocabulary (the official MAGVLT code's `it2l` head).

The head reads the hidden state of `[BOG]` in the VQA layout

    [BOC] [BEGIN_image] image [BOG] [BEGIN_text] question: ... answer: MASK MASK ...

(`question_sequence`): the text at its full length, the question prefix known and every later slot MASK,
as a text target looks before any token of it is written. `[BOG]` attends to the whole sequence and has no
loss of its own, so it serves as the summary token. The head is Linear -> GELU -> LayerNorm -> Linear over
`answer_classes` answers; beside it the buffer `answer_tokens` [classes, text length] holds each class's
answer as text token ids (EOS-padded), saved with the weights, so a sampler writes the answer with no
tokenizer at hand.

A model saved without a head (`answer_classes: 0`) has none of these tensors and computes as before. The
finetune stage grows a pretrained model by the head (`with_answer_head`): every pretrained tensor is kept
bit for bit, the head starts from the model's own initialisation; any other difference between the two
state dicts is an error (no blanket `strict=False`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from mmgen.api import JointTokenSpace, Packed, Part, Segment, Spec, UserError, pack

HEAD_PREFIX = "answer_head."  # every tensor a grown model adds is under it
TOKENS_KEY = "answer_head.answer_tokens"


class AnswerHead(nn.Module):
    """Scores over `classes` answers from a [..., width] state; `answer_tokens` spells each answer."""

    def __init__(self, *, width: int, classes: int, answer_length: int, eos_id: int) -> None:
        super().__init__()
        if classes < 1:
            raise ValueError(f"an answer head needs at least one class, got {classes}")
        self.dense = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, classes)
        # Until the finetune stage writes the answers, every class spells the empty answer.
        self.register_buffer("answer_tokens", torch.full((classes, answer_length), eos_id, dtype=torch.long))

    @property
    def classes(self) -> int:
        return self.out.out_features

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(F.gelu(self.dense(hidden))))


def answer_space(token_space: JointTokenSpace) -> Any:
    """The text space an answer is spelt in: the (first) variable-length modality."""
    for space in token_space.spaces:
        if space.variable_length:
            return space
    raise UserError(f"model: answer_classes needs a text modality; the token space has {list(token_space.modalities)}")


def question_sequence(
    space: JointTokenSpace, context: Sequence[Part], *, tokens: torch.Tensor, prefix_lengths: torch.Tensor, text: str
) -> tuple[Packed, int]:
    """The VQA layout and the index of its `[BOG]`: `context` after BOC; the text [B, L] at full length after
    BOG, its first `prefix_lengths[b]` tokens shown and every later slot MASK."""
    slots = torch.arange(tokens.shape[1], device=tokens.device)
    unknown = slots[None, :] >= prefix_lengths.to(tokens.device)[:, None]
    target = Part(segment=Segment.full(text, tokens), mask=unknown)
    packed = pack(space, ["BOC", *context, "BOG", target])
    return packed, packed.spans[-1].begin - 1


def encode_answers(answers: Sequence[str], *, tokenizer: Any, length: int) -> torch.Tensor:
    """[len(answers), length] text ids of each answer, ending in EOS and EOS-padded (the tokenizer's encode)."""
    encoded = tokenizer.encode(list(answers)).tokens
    if encoded.shape[1] != length:
        raise UserError(
            f"finetune: answer_head: the {tokenizer.modality!r} tokenizer writes {encoded.shape[1]} tokens,"
            f" the model's text has {length}"
        )
    return encoded.long()


def with_answer_head(
    spec: Spec, model: Any, answer_tokens: torch.Tensor, *, registry: Any, seed: int
) -> tuple[Spec, Any]:
    """(spec, model) grown by an answer head over `answer_tokens.shape[0]` classes spelt by `answer_tokens`.

    The head's weights come from the model's init under `seed` (the same head for the same seed).
    """
    if "answer_classes" not in attrs.fields_dict(type(spec.config)):
        raise UserError(f"finetune: answer_head: a {spec.use!r} model has no answer head option")
    if spec.config.answer_classes:
        raise UserError(
            f"finetune: answer_head: the pretrained model already has an answer head ({spec.config.answer_classes}"
            " classes); set answer_head: null to train it further"
        )
    grown_spec = attrs.evolve(spec, config=attrs.evolve(spec.config, answer_classes=int(answer_tokens.shape[0])))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        grown = registry.build(grown_spec, token_space=model.token_space, tokenizers=None)
    load_with_head(grown, model.state_dict(), answer_tokens)
    return grown_spec, grown.train(model.training)


def load_with_head(model: Any, pretrained: Mapping[str, torch.Tensor], answer_tokens: torch.Tensor) -> None:
    """Load `pretrained` into `model`, which has an answer head besides: the head keeps its initial weights."""
    own = model.state_dict()
    added = sorted(set(own) - set(pretrained))
    stray = [name for name in added if not name.startswith(HEAD_PREFIX)]
    dropped = sorted(set(pretrained) - set(own))
    if stray or dropped:
        raise ValueError(f"pretrained weights differ beyond {HEAD_PREFIX}*: missing {stray}, unexpected {dropped}")
    if tuple(answer_tokens.shape) != tuple(own[TOKENS_KEY].shape):
        raise ValueError(f"answer tokens {tuple(answer_tokens.shape)}, the head holds {tuple(own[TOKENS_KEY].shape)}")
    head = {name: own[name] for name in added}
    model.load_state_dict({**pretrained, **head, TOKENS_KEY: answer_tokens})
