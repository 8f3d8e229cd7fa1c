"""VQA as classification at generation time: one forward pass, the answer head's best class, its answer written.

For a request whose one target is a text with a known prefix (the `vqa` task's: the image known, the text
`question: ... answer:` known and the rest to write), the model sees the sequence its answer head trained on
(plugins/models/answer_head.py `question_sequence`: the text at full length, every slot after the prefix
MASK), the head's argmax class is taken, and the text returned is the prefix, that class's answer tokens
(the head's `answer_tokens`) and EOS. So `vqa_accuracy` reads the answer after `answer:` as it does for the
generative variant, and the two are selected per generate stage: `sampler: {use: answer_head}` or
`{use: maskgit}` (`mmgen generate --task vqa --sampler answer_head`). Deterministic: the generator is unused.
Any other request (an image target, a caption from nothing: the other tasks of a generate stage) goes to
the `fallback` sampler, maskgit with the options given there.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import torch

from mmgen.api import GenerationRequest, Part, RequestSegment, Segment, TokenBatch, UserError
from mmgen.plugins.models.answer_head import question_sequence

from .maskgit import MaskGitSampler

NO_HEAD = (
    "the answer_head sampler needs a model with an answer head (VQA as classification), and this one has none:"
    " fine-tune it with the finetune stage's answer_head option, or use the maskgit sampler"
)


class AnswerHeadSampler:
    """Answers a question by the model's answer head (the official MAGVLT code's `it2l`)."""

    name: ClassVar[str] = "answer_head"

    @attrs.frozen(kw_only=True)
    class Config:
        # What samples the requests that are no question (other tasks of the same generate stage).
        fallback: MaskGitSampler.Config = MaskGitSampler.Config()

    def __init__(self, *, fallback: MaskGitSampler.Config | None = None) -> None:
        options = fallback or MaskGitSampler.Config()
        self.fallback = MaskGitSampler.from_config(options)

    @classmethod
    def from_config(cls, config: Config, **_: Any) -> AnswerHeadSampler:
        return cls(fallback=config.fallback)

    def is_question(self, request: GenerationRequest, *, space: Any) -> bool:
        """One text target whose known tokens are a non-empty prefix of every row (the vqa task's request)."""
        targets = [part for part in request.segments if part.target]
        if len(targets) != 1 or not space.space(targets[0].modality).variable_length:
            return False
        known = targets[0].known.bool()
        count = known.sum(dim=1)
        prefix = torch.arange(known.shape[1], device=known.device)[None, :] < count[:, None]
        return bool((count > 0).all()) and torch.equal(known, prefix)

    @torch.no_grad()
    def generate(self, model: Any, request: GenerationRequest, *, generator: torch.Generator) -> TokenBatch:
        """The target text: its known prefix, the argmax class's answer, EOS; in a TokenBatch like maskgit's.

        A request that is no question (an image target, a caption from nothing) goes to the fallback sampler.
        """
        space = model.token_space
        if not self.is_question(request, space=space):
            return self.fallback.generate(model, request, generator=generator)
        if getattr(model, "answer_head", None) is None:
            raise UserError(NO_HEAD)
        target = next(part for part in request.segments if part.target)
        text_space = space.space(target.modality)
        prefix_lengths = target.known.bool().sum(dim=1)
        context = [_context_part(part) for part in request.segments if not part.target]
        packed, bog = question_sequence(
            space, context, tokens=target.tokens, prefix_lengths=prefix_lengths, text=target.modality
        )
        classes = model.answer_logits(model(packed)[:, bog]).argmax(dim=-1)
        answers = model.answer_head.answer_tokens[classes]
        text = written(target.tokens, prefix_lengths, answers, eos=text_space.eos_id, modality=target.modality)
        return TokenBatch(segments=[text])


def _context_part(part: RequestSegment) -> Part:
    """A context segment as the maskgit sampler shows it: unknown positions MASK."""
    lengths = part.lengths
    if lengths is None:
        lengths = torch.full((part.tokens.shape[0],), part.tokens.shape[1], device=part.tokens.device)
    segment = Segment(modality=part.modality, tokens=part.tokens, lengths=lengths.to(part.tokens.device))
    return Part(segment=segment, mask=~part.known.bool() & segment.valid())


def written(
    tokens: torch.Tensor, prefix_lengths: torch.Tensor, answers: torch.Tensor, *, eos: int, modality: str
) -> Segment:
    """Each row's first `prefix_lengths` tokens, then its answer ids (up to their EOS), then EOS (and EOS
    padding); an answer too long for the text is cut so that EOS still ends it."""
    length = tokens.shape[1]
    rows, lengths = [], []
    for ids, n, answer in zip(tokens.tolist(), prefix_lengths.tolist(), answers.tolist()):
        spelt = answer[: answer.index(eos)] if eos in answer else answer
        body = (ids[:n] + spelt)[: length - 1]
        rows.append(body + [eos] * (length - len(body)))
        lengths.append(len(body) + 1)
    device = tokens.device
    return Segment(
        modality=modality,
        tokens=torch.tensor(rows, dtype=torch.long, device=device).view(len(rows), length),
        lengths=torch.tensor(lengths, dtype=torch.long, device=device),
    )
