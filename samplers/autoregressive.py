"""Left-to-right sampling, token by token with a KV cache: how ARGVLT generates.

The paper (Kim et al., CVPR 2023) samples ARGVLT token by token with top-k, stopping at
end-of-text, and reranks with CLIP like MAGVLT (docs/method.md, "19. ARGVLT, the autoregressive twin").

A request's targets are generated one at a time in request order, as maskgit
does: `[BOC] context... earlier targets... [BOG] [BEGIN] target`. The sequence
up to the first token to sample is run once (its keys and values cached), then
each step runs one new slot. Rows of a batch go in lockstep: a row whose token
at a step is known (a given prefix, as in it2t) takes it instead of its draw.

Text-like targets stop at end-of-text, row by row: a finished row is padded,
and a row that reaches its last slot gets end-of-text there (a caption always
ends with it, as the tokenizer writes them). Image-like targets sample exactly
their token count. Every draw is over the target modality's own vocabulary
(the model's `logits(hidden, modality)`).

A model with `prefill` and `extend` (argvlt) is sampled with its KV cache; any
other model, or `cache: false`, recomputes the whole prefix at every step with
a left-to-right attention mask (the reference the cache must match).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import attrs
import torch

from mmgen.api import (
    FieldError,
    GenerationRequest,
    Packed,
    Part,
    RequestSegment,
    Segment,
    TokenBatch,
    UserError,
    pack,
    positive,
    positive_or_none,
)
from mmgen.plugins.models.causal import causal

from .draws import categorical


class LeftToRightError(UserError, ValueError):
    """A request the autoregressive sampler cannot fill: a target token to sample before a known one."""


@attrs.frozen(kw_only=True)
class TokenOptions:
    """How each token is drawn: temperature, then top-k, then top-p (nucleus) filtering.

    Defaults: ARGVLT samples with top-k, but no k is given for it; k = 32 is the one MAGVLT's
    I2T sampling uses (docs/method.md, "Text (variable length)"), at temperature 1.
    Top-p (Holtzman et al., ICLR 2020) is not in the paper: off.
    """

    temperature: float = attrs.field(default=1.0, validator=positive)
    top_k: int | None = attrs.field(default=32, validator=positive_or_none)
    top_p: float | None = None

    def __attrs_post_init__(self) -> None:
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise FieldError("top_p", f"must be in (0, 1] or null, got {self.top_p}")


def filter_logits(logits: torch.Tensor, options: TokenOptions) -> torch.Tensor:
    """Tempered logits [..., V] with -inf outside the top-k and outside the top-p nucleus (ties at the k-th kept)."""
    logits = logits.float() / options.temperature
    if options.top_k is not None and options.top_k < logits.shape[-1]:
        kth = logits.topk(options.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if options.top_p is not None and options.top_p < 1.0:
        probs, order = logits.softmax(dim=-1).sort(dim=-1, descending=True, stable=True)
        # Keep the most likely tokens until their mass reaches p: a token stays if the mass before it is < p.
        drop_sorted = probs.cumsum(dim=-1) - probs >= options.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, -math.inf)
    return logits


def draw(logits: torch.Tensor, options: TokenOptions, *, generator: torch.Generator) -> torch.Tensor:
    """One token [B] per row of logits [B, V]."""
    return categorical(filter_logits(logits, options), generator=generator)


class AutoregressiveSampler:
    """Fills every target of a request left to right, one token per model step."""

    name: ClassVar[str] = "autoregressive"

    @attrs.frozen(kw_only=True)
    class Config:
        fixed: TokenOptions = TokenOptions()  # image-like targets
        variable: TokenOptions = TokenOptions()  # text-like targets
        cache: bool = True  # false: recompute the prefix every step (slower; the same tokens)

    def __init__(
        self, *, fixed: TokenOptions | None = None, variable: TokenOptions | None = None, cache: bool = True
    ) -> None:
        self.fixed = fixed or TokenOptions()
        self.variable = variable or TokenOptions()
        self.cache = cache

    @classmethod
    def from_config(cls, config: Config, **_: Any) -> AutoregressiveSampler:
        return cls(fixed=config.fixed, variable=config.variable, cache=config.cache)

    def check(self, request: GenerationRequest) -> None:
        """Refuse a request it cannot fill (LeftToRightError); the generation pipeline asks before any sampling."""
        for part in request.segments:
            if part.target:
                check_left_to_right(part)

    @torch.no_grad()
    def generate(self, model: Any, request: GenerationRequest, *, generator: torch.Generator) -> TokenBatch:
        """Generate the target segments in order; returns them, in request order."""
        targets = [part for part in request.segments if part.target]
        if not targets:
            raise ValueError("generation request has no target segment")
        self.check(request)  # every target checked before any sampling
        context = [_context_part(part) for part in request.segments if not part.target]
        outputs = []
        for part in targets:
            segment = self._fill(model, context, part, generator=generator)
            outputs.append(segment)
            context.append(Part(segment=segment))  # later targets are conditioned on this one (T2IT)
        return TokenBatch(segments=outputs)

    def _fill(self, model: Any, context: list[Part], part: RequestSegment, *, generator: torch.Generator) -> Segment:
        space = model.token_space.space(part.modality)
        batch, slots = part.tokens.shape
        device = part.tokens.device
        known = part.known.bool()
        limit = _lengths(part)  # each row's last slot + 1: its given length, else the modality's length
        tokens = part.tokens.masked_fill(~known, space.pad_id or 0)
        # Every target slot is a real key: left to right, a slot never sees the ones after it anyway.
        target = Segment(modality=part.modality, tokens=tokens, lengths=torch.full_like(limit, slots))
        packed = causal(pack(model.token_space, ["BOC", *context, "BOG", Part(segment=target)]))
        start = packed.spans[-1].start
        first = int(known.sum(dim=1).min())  # the first slot some row samples (known tokens are a prefix)
        if first == slots:
            return Segment(modality=part.modality, tokens=tokens, lengths=limit)
        use_cache = self.cache and callable(getattr(model, "prefill", None))
        steps = (_CachedSteps if use_cache else _RecomputedSteps)(model, packed, first_slot=start + first)
        options = self.variable if space.variable_length else self.fixed
        lengths = limit.clone()
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        offset = model.token_space.offset(part.modality)
        hidden = steps.hidden
        for i in range(first, slots):
            sampled = draw(model.logits(hidden, part.modality), options, generator=generator)
            token = torch.where(known[:, i], tokens[:, i], sampled)
            if space.variable_length:
                token, lengths, finished = _end_rows(space, token, i, known[:, i], limit, lengths, finished)
            tokens[:, i] = token
            if i + 1 == slots or bool(finished.all()):
                break
            hidden = steps.advance(token + offset)
        return Segment(modality=part.modality, tokens=tokens, lengths=lengths)


def _end_rows(
    space: Any,
    token: torch.Tensor,
    i: int,
    known: torch.Tensor,
    limit: torch.Tensor,
    lengths: torch.Tensor,
    finished: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slot `i` of a text-like target: finished rows padded, end-of-text at a row's last slot, rows ending here."""
    active = ~finished & (i < limit)
    token = torch.where(active, token, torch.full_like(token, space.pad_id))
    last = active & (i == limit - 1)
    if space.eos_id is None:
        return token, lengths, finished | last
    token = torch.where(last & ~known, torch.full_like(token, space.eos_id), token)
    ends = active & (token == space.eos_id)
    lengths = torch.where(ends, torch.full_like(lengths, i + 1), lengths)
    return token, lengths, finished | ends | last


class _CachedSteps:
    """The prefix run once into the model's KV cache, then one slot per step."""

    def __init__(self, model: Any, packed: Packed, *, first_slot: int) -> None:
        self.model, self.packed, self.slot = model, packed, first_slot
        # The cache's buffers are sized once for the whole sequence: each step writes one slot in place.
        hidden, self.cache = model.prefill(_prefix(packed, first_slot), capacity=packed.tokens.shape[1])
        self.hidden = hidden[:, -1]

    def advance(self, token: torch.Tensor) -> torch.Tensor:
        """Hidden state [B, D] after feeding `token` (joint ids [B]) at the next slot."""
        at = slice(self.slot, self.slot + 1)
        hidden = self.model.extend(token[:, None], self.packed.table[at], self.packed.position[at], self.cache)
        self.slot += 1
        return hidden[:, -1]


class _RecomputedSteps:
    """No cache: the whole sequence so far runs again at every step."""

    def __init__(self, model: Any, packed: Packed, *, first_slot: int) -> None:
        self.model, self.slot = model, first_slot
        self.packed = attrs.evolve(packed, tokens=packed.tokens.clone())
        self.hidden = self._last()

    def advance(self, token: torch.Tensor) -> torch.Tensor:
        self.packed.tokens[:, self.slot] = token
        self.slot += 1
        return self._last()

    def _last(self) -> torch.Tensor:
        return self.model(_prefix(self.packed, self.slot))[:, -1]


def _prefix(packed: Packed, length: int) -> Packed:
    """The first `length` slots of a packed sequence (with the spans that fit in them)."""
    return Packed(
        tokens=packed.tokens[:, :length],
        table=packed.table[:length],
        position=packed.position[:length],
        key_padding=packed.key_padding[:, :length],
        attn_mask=None if packed.attn_mask is None else packed.attn_mask[:, :length, :length],
        spans=tuple(span for span in packed.spans if span.stop <= length),
    )


def check_left_to_right(part: RequestSegment) -> None:
    """Refuse a target with a token to sample before a known one: left to right, it would ignore what follows."""
    valid = torch.arange(part.tokens.shape[1], device=part.tokens.device)[None, :] < _lengths(part)[:, None]
    known = part.known.bool() & valid
    prefix = torch.arange(known.shape[1], device=known.device)[None, :] < known.sum(dim=1, keepdim=True)
    if not torch.equal(known, prefix):
        raise LeftToRightError(
            f"the autoregressive sampler generates left to right, but the {part.modality!r} target has known "
            "tokens after ones to generate (inpainting, infilling): use a MAGVLT model with the maskgit sampler"
        )


def _context_part(part: RequestSegment) -> Part:
    """A context segment; its unknown positions (a dropped condition) are shown as MASK, as maskgit does."""
    segment = Segment(modality=part.modality, tokens=part.tokens, lengths=_lengths(part))
    return Part(segment=segment, mask=~part.known.bool() & segment.valid())


def _lengths(part: RequestSegment) -> torch.Tensor:
    if part.lengths is not None:
        return part.lengths.to(part.tokens.device)
    return torch.full((part.tokens.shape[0],), part.tokens.shape[1], dtype=torch.long, device=part.tokens.device)
