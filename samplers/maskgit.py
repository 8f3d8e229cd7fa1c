"""MaskGIT-style iterative parallel refinement, as MAGVLT samples (Kim et al., arXiv 2303.12208; MaskGIT, 2202.04200).

A request lists segments; context segments (target=False) go between BOC and
BOG, and each target segment is generated after BOG, one at a time in request
order: `[BOC] context... earlier targets... [BOG] target`. So T2IT generates the
image from the prompt, then the caption from the prompt and that image.
Unknown context positions stay MASK tokens (a masked or dropped condition, as
in IT2IT training and the unconditional branch of guidance); only targets are
filled, and a known token never changes.

Fixed-length modalities (image grids) follow MaskGIT's cosine schedule: every
step samples all masked tokens, keeps the most confident, re-masks the rest.
Variable-length modalities (text) first predict their length from the BEGIN
token, then re-mask low-confidence tokens at a linearly falling rate, so any
generated token can still be revised.

A model with `condition_attention: own` (its context attends only to itself)
gets its context's keys and values computed once per target (and once for
guidance's unconditional rows); each refinement step then runs only the slots
from BOG on (`encode_condition` / `forward_target`), with the same result.
"""

from __future__ import annotations

import math
from typing import Any, Callable, ClassVar

import attrs
import torch

from mmgen.api import (
    GenerationRequest,
    GuidanceOptions,
    Part,
    RequestSegment,
    Segment,
    TokenBatch,
    UserError,
    guidance_weight,
    guide,
    pack,
)

from .draws import categorical, gumbel

# Guidance runs its two passes as one batch of 2B rows up to this many request rows, as two passes
# above it: on a CPU one batch is faster at batch 1 and slower at batch 32 (benchmarks/perf_draws.py).
ONE_GUIDED_BATCH_ROWS = 8

# Products like cos(pi/3) * 256 = 128.00000000000003 must count as 128, not 129.
SCHEDULE_DECIMALS = 6


@attrs.frozen(kw_only=True)
class FixedLengthOptions:
    """Image-like targets (MAGVLT T2I sampling)."""

    # Sources (docs/method.md, "Sampler defaults"): the authors' configs/magvlt-it2it-base-sampling.yaml
    # (`sampling:`) and magvlt/models/maskgit/maskgit.py::sample_t2i.
    steps: int = 10  # img_num_steps 10 (sampling_t2i.py sets t2i_n_steps from it)
    temperature_start: float = 1.4  # img_temperature_start
    temperature_end: float = 0.6  # img_temperature_end
    gumbel_start: float = 2.0  # img_mult_temperature_start (multinomial-maskgit choice noise)
    gumbel_end: float = 0.2  # img_mult_temperature_end
    top_k: int | None = None  # sample_t2i samples from the full distribution
    guidance: GuidanceOptions = GuidanceOptions()  # off: MAGVLT has no guidance (mmgen extension)

    def __attrs_post_init__(self) -> None:
        _check_positive(
            steps=self.steps, temperature_start=self.temperature_start, temperature_end=self.temperature_end
        )
        _check_top_k(self.top_k)


@attrs.frozen(kw_only=True)
class VariableLengthOptions:
    """Text-like targets (MAGVLT I2T sampling).

    `length_top_k` > 1 draws each row's length from the k most likely lengths
    (in proportion to their probability), so candidates for reranking try
    several lengths; `length_jitter` adds a uniform offset in [-j, j].
    `fix_eos` writes end-of-text at the last position of a predicted length (the
    length head counts the caption with its EOS) and makes every predicted length
    leave room for it; the authors' sampler does neither.
    """

    # Sources (docs/method.md, "Sampler defaults"): the authors' configs/magvlt-it2it-base-sampling.yaml
    # (`sampling:`), sampling_i2t.py and magvlt/models/maskgit/maskgit.py::sample_i2t / sample_txt_tok.
    steps: int = 12  # txt_num_steps 12: sampling_i2t.py copies it into the i2t_n_steps sample_txt_tok reads
    temperature: float = 0.1  # txt_temperature 0.1 (was 0.5, the recipes keep it)
    top_k: int | None = 32  # txt_top_k 32 (txt_top_p 0: off)
    length_top_k: int = 1  # sample_i2t: the argmax of the length head
    length_jitter: int = 0  # sample_i2t: its length variation is randint(1), always 0
    fix_eos: bool = False  # sample_txt_tok samples all N positions, EOS included (was True, the recipes keep it)
    guidance: GuidanceOptions = GuidanceOptions()  # off: MAGVLT has no guidance (mmgen extension)

    def __attrs_post_init__(self) -> None:
        _check_positive(steps=self.steps, temperature=self.temperature, length_top_k=self.length_top_k)
        _check_top_k(self.top_k)
        if self.length_jitter < 0:
            raise ValueError(f"length_jitter must be >= 0, got {self.length_jitter}")


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{name} must be > 0, got {value}")


def _check_top_k(top_k: int | None) -> None:
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or null, got {top_k}")


def masked_after_step(unknown: torch.Tensor, *, step: int, steps: int) -> torch.Tensor:
    """Tokens still masked after step `step` (1-based) of `steps`: ceil(cos(pi/2 step/steps) N)."""
    if step >= steps:
        return torch.zeros_like(unknown)
    ratio = math.cos(math.pi / 2 * step / steps)
    return torch.ceil(torch.round(unknown.double() * ratio, decimals=SCHEDULE_DECIMALS)).long()


def remask_count(unknown: torch.Tensor, *, step: int, steps: int) -> torch.Tensor:
    """Tokens re-masked at text iteration `step` (0-based): floor(N (T - t) / T), at least one."""
    count = torch.div(unknown * (steps - step), steps, rounding_mode="floor")
    return torch.minimum(count.clamp(min=1), unknown)


def linear(start: float, end: float, *, step: int, steps: int) -> float:
    """Value at step `step` (0-based) of a linear ramp from `start` to `end` over `steps`."""
    return start if steps == 1 else start + (end - start) * step / (steps - 1)


def top_per_row(scores: torch.Tensor, counts: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """[B, L] True at the `counts[b]` highest-scoring allowed positions of each row."""
    scores = scores.masked_fill(~allowed, -math.inf)
    order = scores.argsort(dim=1, descending=True, stable=True)
    rank = order.argsort(dim=1)
    return (rank < counts[:, None]) & allowed


def sample_tokens(
    logits: torch.Tensor, *, temperature: float, top_k: int | None, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per position; returns it and its log-probability under the tempered distribution."""
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    log_probs = logits.log_softmax(dim=-1)
    tokens = categorical(log_probs, generator=generator)
    return tokens, log_probs.gather(-1, tokens[..., None]).squeeze(-1)


@attrs.frozen(kw_only=True)
class _Known:
    """A segment whose tokens are settled: context or an earlier target."""

    segment: Segment
    mask: torch.Tensor  # True where the model sees MASK instead of the token


class MaskGitSampler:
    """Fills every unknown target position of a request by iterative refinement."""

    name: ClassVar[str] = "maskgit"

    @attrs.frozen(kw_only=True)
    class Config:
        fixed: FixedLengthOptions = FixedLengthOptions()
        variable: VariableLengthOptions = VariableLengthOptions()

    def __init__(self, *, fixed: FixedLengthOptions | None = None, variable: VariableLengthOptions | None = None):
        self.fixed = fixed or FixedLengthOptions()
        self.variable = variable or VariableLengthOptions()

    @classmethod
    def from_config(cls, config: Config, **_: Any) -> MaskGitSampler:
        return cls(fixed=config.fixed, variable=config.variable)

    def branch_requests(self, request: GenerationRequest, *, space: Any) -> list[GenerationRequest]:
        """The other sequences this sampler shows the model for `request`: guidance's unconditional pass.

        For each guided target (its kind's `guidance.scale` > 0) the same request with every
        context token MASK; the generation pipeline checks these layouts against training too.
        """
        branches = []
        for part in request.segments:
            if not part.target:
                continue
            options = self.variable if space.space(part.modality).variable_length else self.fixed
            if options.guidance.scale > 0:
                dropped = [s if s.target else attrs.evolve(s, known=torch.zeros_like(s.known)) for s in request.segments]
                branches.append(GenerationRequest(segments=dropped))
        return branches

    @torch.no_grad()
    def generate(
        self,
        model: Any,
        request: GenerationRequest,
        *,
        generator: torch.Generator,
        on_step: Callable[..., None] | None = None,
    ) -> TokenBatch:
        """Generate the target segments in order; returns them, in request order.

        `on_step`, if given, is called after every refinement step (a live view such as `mmgen serve`'s) as
        `on_step(step=, steps=, segment=, masked=)`: step counts from 1; `segment` holds every token as it
        stands, still-masked positions filled with this step's samples; `masked` is True where a token is not
        yet fixed (image targets; all False for text, whose every token may still be revised).
        """
        if getattr(model, "attention", "bidirectional") == "causal":
            raise UserError(
                f"the maskgit sampler fills masked tokens in parallel, but model {getattr(model, 'name', type(model).__name__)!r} "
                "attends left to right: use the autoregressive sampler (the model's default)"
            )
        space = model.token_space
        context = [_as_known(part) for part in request.segments if not part.target]
        outputs = []
        for part in request.segments:
            if not part.target:
                continue
            if space.space(part.modality).variable_length:
                segment = self._fill_variable(model, context, part, generator=generator, on_step=on_step)
            else:
                segment = self._fill_fixed(model, context, part, generator=generator, on_step=on_step)
            outputs.append(segment)
            # Later targets are conditioned on this one (T2IT, unconditional pairs).
            context.append(_Known(segment=segment, mask=torch.zeros_like(segment.tokens, dtype=torch.bool)))
        if not outputs:
            raise ValueError("generation request has no target segment")
        return TokenBatch(segments=outputs)

    def _fill_fixed(
        self,
        model: Any,
        context: list[_Known],
        part: RequestSegment,
        *,
        generator: torch.Generator,
        on_step: Callable[..., None] | None = None,
    ) -> Segment:
        """MAGVLT T2I: T steps; after step t, ceil(cos(pi/2 t/T) N) tokens stay masked."""
        options = self.fixed
        tokens = part.tokens.clone()
        lengths = _lengths(part)
        masked = ~part.known.bool() & _valid(tokens, lengths)
        unknown = masked.sum(dim=1)
        condition = _cached_condition(model)
        for step in range(options.steps):
            if not masked.any():
                break
            logits = self._logits(
                model,
                context,
                Segment(modality=part.modality, tokens=tokens, lengths=lengths),
                masked,
                weight=guidance_weight(options.guidance, step=step, steps=options.steps),
                condition=condition,
            )
            temperature = linear(options.temperature_start, options.temperature_end, step=step, steps=options.steps)
            sampled, log_p = sample_tokens(logits, temperature=temperature, top_k=options.top_k, generator=generator)
            # Confidence: log p of the sampled token plus annealed Gumbel noise (MaskGIT's choice randomness).
            noise = linear(options.gumbel_start, options.gumbel_end, step=step, steps=options.steps)
            confidence = log_p + noise * gumbel(log_p.shape, generator=generator, device=log_p.device)
            # At least one token is fixed per step; fixed tokens are never re-masked.
            still = torch.minimum(masked_after_step(unknown, step=step + 1, steps=options.steps), masked.sum(1) - 1)
            fix = top_per_row(confidence, masked.sum(1) - still.clamp(min=0), masked)
            tokens = torch.where(fix, sampled, tokens)
            masked = masked & ~fix
            if on_step is not None:
                guess = Segment(modality=part.modality, tokens=torch.where(masked, sampled, tokens), lengths=lengths)
                on_step(step=step + 1, steps=options.steps, segment=guess, masked=masked.clone())
        return Segment(modality=part.modality, tokens=tokens, lengths=lengths)

    def _fill_variable(
        self,
        model: Any,
        context: list[_Known],
        part: RequestSegment,
        *,
        generator: torch.Generator,
        on_step: Callable[..., None] | None = None,
    ) -> Segment:
        """MAGVLT I2T: predict the length, then T iterations re-masking floor(N (T - t)/T) tokens."""
        options = self.variable
        modality_space = model.token_space.space(part.modality)
        tokens = part.tokens.clone()
        known = part.known.bool().clone()
        if part.lengths is None:
            lengths = self._predict_lengths(model, context, part, generator=generator)
        else:
            lengths = part.lengths.to(tokens.device)
        valid = _valid(tokens, lengths)
        known &= valid
        tokens = tokens.masked_fill(~valid, modality_space.pad_id)  # positions >= N are padding, blocked as keys
        if part.lengths is None and options.fix_eos and modality_space.eos_id is not None:
            last = torch.nn.functional.one_hot(lengths - 1, tokens.shape[1]).bool() & ~known
            tokens = tokens.masked_fill(last, modality_space.eos_id)
            known |= last
        unknown = valid & ~known
        count = unknown.sum(dim=1)
        log_p = torch.zeros(tokens.shape, device=tokens.device)
        condition = _cached_condition(model)
        for step in range(options.steps):
            if not unknown.any():
                break
            # Re-mask by a multinomial over softmax(-log p): low-confidence tokens are preferred,
            # drawn without replacement by Gumbel-top-k. Iteration 0 masks every unknown token.
            draw = -log_p + gumbel(log_p.shape, generator=generator, device=log_p.device)
            remask = top_per_row(draw, remask_count(count, step=step, steps=options.steps), unknown)
            logits = self._logits(
                model,
                context,
                Segment(modality=part.modality, tokens=tokens, lengths=lengths),
                remask,
                weight=guidance_weight(options.guidance, step=step, steps=options.steps),
                condition=condition,
            )
            sampled, sampled_log_p = sample_tokens(
                logits, temperature=options.temperature, top_k=options.top_k, generator=generator
            )
            tokens = torch.where(remask, sampled, tokens)
            log_p = torch.where(remask, sampled_log_p, log_p)
            if on_step is not None:
                segment = Segment(modality=part.modality, tokens=tokens.clone(), lengths=lengths)
                on_step(step=step + 1, steps=options.steps, segment=segment, masked=torch.zeros_like(unknown))
        return Segment(modality=part.modality, tokens=tokens, lengths=lengths)

    def _predict_lengths(
        self, model: Any, context: list[_Known], part: RequestSegment, *, generator: torch.Generator
    ) -> torch.Tensor:
        """One pass with the target fully masked; the BEGIN token's length head (class k = length k + 1)."""
        options = self.variable
        if not callable(getattr(model, "length_logits", None)):
            raise TypeError(
                f"model {type(model).__name__} has no length head; give the {part.modality!r} target lengths"
            )
        tokens = part.tokens
        full = torch.full((tokens.shape[0],), tokens.shape[1], dtype=torch.long, device=tokens.device)
        target = Part(
            segment=Segment(modality=part.modality, tokens=tokens, lengths=full),
            mask=torch.ones_like(tokens, dtype=torch.bool),
            predict_length=True,
        )
        packed = pack(model.token_space, _items(context, target))
        hidden = model(packed)
        logits = model.length_logits(hidden[:, packed.spans[-1].begin], part.modality).float()
        top = logits.topk(min(options.length_top_k, logits.shape[-1]), dim=-1)
        pick = torch.multinomial(top.values.softmax(-1).to(generator.device), 1, generator=generator).to(tokens.device)
        lengths = top.indices.gather(1, pick).squeeze(1) + 1
        if options.length_jitter:
            offset = torch.randint(
                -options.length_jitter,
                options.length_jitter + 1,
                lengths.shape,
                generator=generator,
                device=generator.device,
            ).to(tokens.device)
            lengths = lengths + offset
        return torch.maximum(lengths, _shortest(part, fix_eos=options.fix_eos)).clamp(max=tokens.shape[1])

    def _logits(
        self,
        model: Any,
        context: list[_Known],
        target: Segment,
        masked: torch.Tensor,
        *,
        weight: float,
        condition: _CachedCondition | None = None,
    ) -> torch.Tensor:
        """Target logits [B, L, V]; guided when `weight` > 0 (unconditional pass: context all MASK)."""
        part = Part(segment=target, mask=masked)
        if weight == 0:
            return _target_logits(model, context, part, encode=None if condition is None else condition.plain)
        dropped = [_Known(segment=c.segment, mask=torch.ones_like(c.mask)) for c in context]  # context all MASK
        if target.tokens.shape[0] > ONE_GUIDED_BATCH_ROWS:
            # The unconditional pass on its own: at batch 32 two passes are faster on a CPU than one
            # of 64 rows (benchmarks/perf_draws.py).
            cond = _target_logits(model, context, part, encode=None if condition is None else condition.plain)
            uncond = _target_logits(model, dropped, part, encode=None if condition is None else condition.unconditional)
            return guide(cond, uncond, weight)
        # Both passes in one batch of 2B rows (one forward instead of two: the same layout, the
        # second half with every context token MASK); equal to two passes up to float rounding.
        both = [_Known(segment=_twice(c.segment), mask=torch.cat([c.mask, torch.ones_like(c.mask)])) for c in context]
        encode = None
        if condition is not None:

            def encode(packed: Any) -> Any:
                return condition.guided(packed, lambda: pack(model.token_space, _items(dropped, part)))

        logits = _target_logits(model, both, Part(segment=_twice(target), mask=masked.repeat(2, 1)), encode=encode)
        cond, uncond = logits.chunk(2)
        return guide(cond, uncond, weight)


class _CachedCondition:
    """One target's context keys and values (a model with `condition_attention: own`), each set encoded once.

    `plain`: the request's rows; `unconditional`: guidance's unconditional rows (context all MASK) on
    their own; `guided`: the request's rows then the unconditional ones, as `_logits` batches them at
    small batch sizes. A guidance schedule may start at weight 0, so `plain` may come first.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self._plain: Any = None
        self._guided: Any = None
        self._unconditional: Any = None

    def unconditional(self, packed: Any) -> Any:
        """Guidance's unconditional rows alone (the two-pass path of a large batch)."""
        if self._unconditional is None:
            self._unconditional = self.model.encode_condition(packed)
        return self._unconditional

    def plain(self, packed: Any) -> Any:
        if self._plain is None:
            rows = packed.batch_size
            self._plain = self._guided.rows(rows) if self._guided is not None else self.model.encode_condition(packed)
        return self._plain

    def guided(self, packed: Any, unconditional: Callable[[], Any]) -> Any:
        """Encoded from `packed` (both halves at once) or, when the plain rows are cached, from the other half."""
        if self._guided is None:
            if self._plain is None:
                self._guided = self.model.encode_condition(packed)
            else:
                self._guided = self._plain.concat(self.model.encode_condition(unconditional()))
        return self._guided


def _cached_condition(model: Any) -> _CachedCondition | None:
    return _CachedCondition(model) if getattr(model, "condition_attention", "full") == "own" else None


def _target_logits(
    model: Any, context: list[_Known], target: Part, *, encode: Callable[[Any], Any] | None = None
) -> torch.Tensor:
    """Logits of the target's slots; with `encode` (packed -> cached condition) only the target part runs."""
    packed = pack(model.token_space, _items(context, target))
    span = packed.spans[-1]
    if encode is None:
        hidden, start = model(packed), 0
    else:
        condition = encode(packed)
        hidden, start = model.forward_target(packed, condition), condition.length
    return model.logits(hidden[:, span.start - start : span.stop - start], target.segment.modality).float()


def _twice(segment: Segment) -> Segment:
    """The rows of `segment` followed by the same rows again."""
    return Segment(modality=segment.modality, tokens=segment.tokens.repeat(2, 1), lengths=segment.lengths.repeat(2))


def _items(context: list[_Known], target: Part) -> list[str | Part]:
    return ["BOC", *(Part(segment=c.segment, mask=c.mask) for c in context), "BOG", target]


def _as_known(part: RequestSegment) -> _Known:
    lengths = _lengths(part)
    segment = Segment(modality=part.modality, tokens=part.tokens, lengths=lengths)
    return _Known(segment=segment, mask=~part.known.bool() & segment.valid())


def _lengths(part: RequestSegment) -> torch.Tensor:
    if part.lengths is not None:
        return part.lengths.to(part.tokens.device)
    return torch.full((part.tokens.shape[0],), part.tokens.shape[1], dtype=torch.long, device=part.tokens.device)


def _valid(tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return torch.arange(tokens.shape[1], device=tokens.device)[None, :] < lengths[:, None]


def _shortest(part: RequestSegment, *, fix_eos: bool) -> torch.Tensor:
    """Per row, the shortest length that keeps every known token, adds one new token and, if fixed, EOS."""
    known = part.known.bool()
    positions = torch.arange(1, known.shape[1] + 1, device=known.device)
    last_known = (known * positions).amax(dim=1)
    return (last_known + 1 + int(fix_eos)).clamp(max=known.shape[1])
