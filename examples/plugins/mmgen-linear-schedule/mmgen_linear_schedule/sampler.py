"""`linear_schedule`: MaskGIT-style iterative parallel refinement with a linear unmasking schedule.

Each target starts with its unknown tokens masked. Every step samples all
masked tokens at once, keeps the most confident and re-masks the rest; after
step t of T, ceil(N (1 - t/T)) of the N unknown tokens are still masked (MaskGIT's
default is a cosine, which fixes few tokens early and many late; this one fixes
N/T per step). A fixed token is never changed again.

Confidence is the log-probability of the sampled token, plus `choice_noise`
times Gumbel noise (0: always keep the most confident). A variable-length
target (text) without given lengths first gets its length from the model's
length head on the target's BEGIN token, then is filled the same way.

Targets are generated one at a time, in request order, each conditioned on the
context and on the targets before it: `[BOC] context... earlier targets... [BOG] target`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import torch

from mmgen.api import (
    BOC,
    BOG,
    GenerationRequest,
    Part,
    RequestSegment,
    Segment,
    TokenBatch,
    non_negative,
    pack,
    positive,
)


class LinearScheduleSampler:
    name: ClassVar[str] = "linear_schedule"

    @attrs.frozen(kw_only=True)
    class Config:
        steps: int = attrs.field(default=8, validator=positive)
        temperature: float = attrs.field(default=1.0, validator=positive)
        choice_noise: float = attrs.field(default=0.0, validator=non_negative)

    def __init__(self, *, steps: int = 8, temperature: float = 1.0, choice_noise: float = 0.0) -> None:
        self.steps = steps
        self.temperature = temperature
        self.choice_noise = choice_noise

    @classmethod
    def from_config(cls, config: Config, **_deps: Any) -> LinearScheduleSampler:
        return cls(**attrs.asdict(config))

    @torch.no_grad()
    def generate(self, model: Any, request: GenerationRequest, *, generator: torch.Generator) -> TokenBatch:
        """Every target segment filled, in request order; context segments are never changed."""
        context = [context_part(s) for s in request.segments if not s.target]
        outputs = []
        for target in (s for s in request.segments if s.target):
            made = self.fill(model, context, target, generator=generator)
            outputs.append(made)
            context.append(Part(segment=made))  # later targets see this one in full
        if not outputs:
            raise ValueError("the generation request has no target segment")
        return TokenBatch(segments=outputs)

    def fill(self, model: Any, context: list[Part], target: RequestSegment, *, generator: torch.Generator) -> Segment:
        """One target: its unknown tokens unmasked over `steps` steps, by the linear schedule."""
        tokens, known, lengths = starting_point(model, context, target)
        masked = (positions(tokens) < lengths[:, None]) & ~known
        unknown = masked.sum(dim=1)
        for step in range(1, self.steps + 1):
            fix_count = masked.sum(dim=1) - still_masked(unknown, step=step, steps=self.steps)
            if not fix_count.any():
                continue  # with fewer unknown tokens than steps, some steps fix nothing: skip their pass
            current = Segment(modality=target.modality, tokens=tokens, lengths=lengths)
            logits = target_logits(model, context, Part(segment=current, mask=masked))
            sampled, confidence = self.sample(logits, generator)
            if self.choice_noise > 0:  # MaskGIT's randomness in which tokens to keep; 0 draws nothing
                confidence = confidence + self.choice_noise * gumbel(confidence.shape, generator).to(confidence.device)
            fix = most_confident(confidence, fix_count, allowed=masked)
            tokens = torch.where(fix, sampled, tokens)
            masked = masked & ~fix
        return Segment(modality=target.modality, tokens=tokens, lengths=lengths)

    def sample(self, logits: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One token per position from softmax(logits / temperature), and its log-probability."""
        log_probs = (logits.float() / self.temperature).log_softmax(dim=-1)
        flat = log_probs.exp().reshape(-1, log_probs.shape[-1])
        drawn = torch.multinomial(flat.to(generator.device), 1, generator=generator).to(logits.device)
        tokens = drawn.view(log_probs.shape[:-1])
        return tokens, log_probs.gather(-1, tokens[..., None])[..., 0]


def starting_point(model: Any, context: list[Part], target: RequestSegment) -> tuple[torch.Tensor, ...]:
    """The target's tokens, known positions and row lengths before the first step.

    Lengths are the request's; else, for a variable-length modality, predicted
    (with end-of-text written at the last position, which the length counts);
    else the full length. A variable-length row is padding past its length.
    """
    space = model.token_space.space(target.modality)
    tokens, known = target.tokens.clone(), target.known.bool().clone()
    if target.lengths is not None:
        lengths = target.lengths.to(tokens.device)
    elif space.variable_length:
        lengths = predict_lengths(model, context, target)
        if space.eos_id is not None:
            last = torch.nn.functional.one_hot(lengths - 1, tokens.shape[1]).bool() & ~known
            tokens, known = tokens.masked_fill(last, space.eos_id), known | last
    else:
        lengths = torch.full((tokens.shape[0],), tokens.shape[1], device=tokens.device)
    if space.variable_length:
        tokens = tokens.masked_fill(positions(tokens) >= lengths[:, None], space.pad_id)
    return tokens, known, lengths


def still_masked(unknown: torch.Tensor, *, step: int, steps: int) -> torch.Tensor:
    """ceil(N (1 - step/steps)) per row, in integers so that no rounding error moves a count."""
    return (unknown * (steps - step) + steps - 1) // steps


def most_confident(confidence: torch.Tensor, counts: torch.Tensor, *, allowed: torch.Tensor) -> torch.Tensor:
    """[B, L] True at the `counts[b]` most confident allowed positions of row b (earlier positions win ties)."""
    order = confidence.masked_fill(~allowed, -torch.inf).argsort(dim=1, descending=True, stable=True)
    rank = order.argsort(dim=1)
    return (rank < counts[:, None]) & allowed


def gumbel(shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    uniform = torch.rand(shape, generator=generator, device=generator.device)
    return -torch.log(-torch.log(uniform.clamp(1e-20, 1.0 - 1e-7)))


def positions(tokens: torch.Tensor) -> torch.Tensor:
    return torch.arange(tokens.shape[1], device=tokens.device)[None, :]


def context_part(segment: RequestSegment) -> Part:
    """A context segment as the model sees it: unknown positions (a dropped condition) show MASK."""
    lengths = segment.lengths
    if lengths is None:
        lengths = torch.full((segment.tokens.shape[0],), segment.tokens.shape[1], device=segment.tokens.device)
    seen = Segment(modality=segment.modality, tokens=segment.tokens, lengths=lengths.to(segment.tokens.device))
    return Part(segment=seen, mask=seen.valid() & ~segment.known.bool())


def target_logits(model: Any, context: list[Part], target: Part) -> torch.Tensor:
    """[B, L, vocab] logits of the target's positions, behind the context."""
    packed = pack(model.token_space, [BOC, *context, BOG, target])
    span = packed.spans[-1]
    hidden = model(packed)
    return model.logits(hidden[:, span.start : span.stop], target.segment.modality)


def predict_lengths(model: Any, context: list[Part], target: RequestSegment) -> torch.Tensor:
    """Each row's length from the length head on the target's BEGIN token (class k means length k + 1).

    The target is fully masked and its BEGIN query sees only what precedes it
    (`predict_length=True`), as when the head was trained. A row's length
    keeps every known token and leaves room for one new token and the end-of-text.
    """
    if not callable(getattr(model, "length_logits", None)):
        raise TypeError(f"model {type(model).__name__} has no length head; give the {target.modality!r} target lengths")
    tokens = target.tokens
    full = torch.full((tokens.shape[0],), tokens.shape[1], device=tokens.device)
    blind = Part(
        segment=Segment(modality=target.modality, tokens=tokens, lengths=full),
        mask=torch.ones_like(tokens, dtype=torch.bool),
        predict_length=True,
    )
    packed = pack(model.token_space, [BOC, *context, BOG, blind])
    hidden = model(packed)
    lengths = model.length_logits(hidden[:, packed.spans[-1].begin], target.modality).argmax(dim=-1) + 1
    last_known = (target.known.bool() * (positions(tokens) + 1)).amax(dim=1)
    return torch.maximum(lengths.to(tokens.device), last_known + 2).clamp(max=tokens.shape[1])
