"""L_MS: selective prediction on a mixed context, MixSel (MAGVLT sec. 3.2).

Each sample's context is mixed half and half with another pair's context of the
batch, phi(X1, X2); a BOG_LEFT / BOG_RIGHT / BOG_TOP / BOG_BOTTOM token in place
of BOG says which half was this sample's; the target is this sample's own other
modality, masked as in L_mask (slides: L_MS,I2T = -E sum_{j masked}
log p(y^l_j | Y^l_masked, phi(X1, X2))). T2I mixes the two captions (first
caption = LEFT, second = RIGHT, as in the authors' code); I2T and IT2IT mix the
two images left|right (LEFT / RIGHT) or top/bottom (TOP / BOTTOM), each with
probability 1/2.

Images (`mixing`): "pixels" (default; the paper resizes the two images to
halves) joins the two images' squeezed halves, each the whole image resized to
half width (or height) and encoded by the image tokenizer; the cache stage
encodes them once (plugins/datasets/mixsel_halves.py) and the batch carries
them in `TokenBatch.extras[halves_extra(m)]`. "tokens_resize" and "tokens_crop"
mix the token grids instead (objectives/mixture.py), with no halves needed.

IT2IT (a task with `mask_context`): with `mask_context` (default True) the
mixed image is masked too, with the task's shared r (image ratio cos(pi r / 2)),
but only inside the sample's own, selected half, and those masked image tokens
are predicted like the text. Source: the authors' maskgit.py, `_get_mask` task
"it2it-mask": given `hnh_loc_img` (the half-and-half image positions),
`_get_t2i_mask(loc_mask=hnh_loc_img)` masks floor(ratio * n), at least one, of
those n positions, in the same mask as the text's, and L_mask predicts every
masked position; the released code does not say which half `hnh_loc_img` is,
and the selected one is the half the BOG_* marker asks for. False: the mixed
context is never masked (mmgen before issue 17).

Captions are never cut: a pair whose joined captions (first without its
end-of-text, separator, second) exceed the text length takes, instead of the
drawn partner, the next one by offset that fits (b + k, b + k + 1, ... mod B,
never b); a row that fits with no partner is left out of L_MS (its caption is
trained by L_mask alone). Metrics: `repartnered` and `unmixed` rows.

The partner of sample b is b + k mod B for k uniform in 1..B-1 (never itself
when B > 1), and b's own half is the first or the second with probability 1/2.
`fraction` keeps the first rows of the batch only, to trade this extra
forward-backward for throughput.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import attrs
import torch

from mmgen.api import (
    JointTokenSpace,
    ObjectiveOutput,
    Packed,
    Segment,
    StepInput,
    Task,
    TokenSpace,
    UserError,
    pack,
)

from .masked_forward import span_logits
from .masked_loss import masked_cross_entropy
from .masking import draw_positions, mask_ratio, uniform
from .mixture import join_sequences, joined_lengths, mix_grids
from .task_layout import batch_segments, task_items

SIDE_BY_SIDE = ("BOG_LEFT", "BOG_RIGHT")
STACKED = ("BOG_TOP", "BOG_BOTTOM")
MIXINGS = ("pixels", "tokens_resize", "tokens_crop")


class HalvesError(UserError):
    """An image grid that does not split into two halves of whole codes, or a batch without its halves."""


def halves_extra(modality: str) -> str:
    """The `TokenBatch.extras` name of a modality's squeezed halves [B, 2, H * W / 2]."""
    return f"mixsel_halves/{modality}"


def half_grids(shape: Sequence[int], *, modality: str = "image") -> tuple[tuple[int, int], tuple[int, int]]:
    """(half-width grid, half-height grid) of an H x W token grid; both sides must be even."""
    if len(shape) != 2:
        raise HalvesError(f"MixSel pixel mixing needs a 2-D token grid; {modality!r} has shape {tuple(shape)}")
    height, width = shape
    if height % 2 or width % 2:
        raise HalvesError(
            f"MixSel pixel mixing: the {modality!r} grid {height}x{width} does not split into two halves of whole"
            " codes (each side must be even); use mixing: tokens_resize"
        )
    return (height, width // 2), (height // 2, width)


def grid_shape(space: TokenSpace) -> tuple[int, int]:
    """A fixed-length modality's token grid; a 1-D one is a single row."""
    if len(space.shape) == 1:
        return 1, space.shape[0]
    if len(space.shape) == 2:
        return space.shape[0], space.shape[1]
    raise ValueError(f"MixSel mixes 1-D or 2-D token grids; {space.name!r} has shape {space.shape}")


def join_halves(
    halves: torch.Tensor, first: torch.Tensor, second: torch.Tensor, *, shape: tuple[int, int], stacked: torch.Tensor
) -> torch.Tensor:
    """Mixed grids [R, H*W] from squeezed halves [B, 2, H*W/2]: first's half-width grid beside second's,
    or (where `stacked`) first's half-height grid above second's."""
    height, width = shape
    (_, half_width), (half_height, _) = half_grids(shape)
    a, b = halves[first], halves[second]
    side = torch.cat([a[:, 0].reshape(-1, height, half_width), b[:, 0].reshape(-1, height, half_width)], dim=2)
    top = torch.cat([a[:, 1].reshape(-1, half_height, width), b[:, 1].reshape(-1, half_height, width)], dim=1)
    return torch.where(stacked[:, None, None], top, side).reshape(len(first), height * width)


def own_half(mixture: Mixture, shape: tuple[int, int]) -> torch.Tensor:
    """[R, H*W] True on the positions of each row's own half of its mixed grid."""
    height, width = shape
    rows = torch.arange(height, device=mixture.partner.device)[None, :, None]
    cols = torch.arange(width, device=mixture.partner.device)[None, None, :]
    second = mixture.own_second[:, None, None]
    by_col = (cols >= width // 2) == second
    by_row = (rows >= height // 2) == second
    return torch.where(mixture.stacked[:, None, None], by_row, by_col).reshape(len(mixture.partner), -1)


@attrs.frozen(kw_only=True)
class Mixture:
    """Which pairs were mixed: rows `own[b]` of the batch (default 0..R-1), as (first, second) halves.

    `own_second[b]`: b's context is the second half (its partner's the first);
    `stacked[b]`: halves are top/bottom rather than left|right.
    """

    partner: torch.Tensor
    own_second: torch.Tensor
    stacked: torch.Tensor
    own: torch.Tensor | None = None

    def rows(self) -> torch.Tensor:
        return torch.arange(len(self.partner), device=self.partner.device) if self.own is None else self.own

    def halves(self) -> tuple[torch.Tensor, torch.Tensor]:
        own = self.rows()
        return torch.where(self.own_second, self.partner, own), torch.where(self.own_second, own, self.partner)

    def select(self, keep: torch.Tensor) -> Mixture:
        return Mixture(
            partner=self.partner[keep],
            own_second=self.own_second[keep],
            stacked=self.stacked[keep],
            own=self.rows()[keep],
        )

    def to(self, device: torch.device | str) -> Mixture:
        return Mixture(
            partner=self.partner.to(device),
            own_second=self.own_second.to(device),
            stacked=self.stacked.to(device),
            own=None if self.own is None else self.own.to(device),
        )


class MixSel:
    name: ClassVar[str] = "mixsel"
    extra_specials: ClassVar[tuple[str, ...]] = (*SIDE_BY_SIDE, *STACKED)

    @attrs.frozen(kw_only=True)
    class Config:
        weight: float = 0.5
        label_smoothing: float = 0.1
        # pixels: the paper's resized images (halves from the cache stage); tokens_*: mixed token grids.
        mixing: Literal["pixels", "tokens_resize", "tokens_crop"] = "pixels"
        # IT2IT also masks (and predicts) its own half of the mixed image, as the authors' it2it-mask.
        mask_context: bool = True
        separator: str = "|"  # joins two captions (the authors' choice), encoded by the text tokenizer
        separator_ids: tuple[int, ...] | None = None  # or give the local ids directly
        fraction: float = 1.0

    @classmethod
    def from_config(
        cls, config: Config, *, token_space: JointTokenSpace, tokenizers: Any = None, **_deps: Any
    ) -> MixSel:
        separators = {}
        for space in token_space.spaces:
            if space.variable_length:
                ids = config.separator_ids
                if ids is None:
                    ids = encode_separator(config.separator, space, tokenizers)
                separators[space.name] = tuple(ids)
        return cls(
            token_space=token_space,
            separators=separators,
            weight=config.weight,
            label_smoothing=config.label_smoothing,
            mixing=config.mixing,
            mask_context=config.mask_context,
            fraction=config.fraction,
        )

    def __init__(
        self,
        *,
        token_space: JointTokenSpace,
        separators: Mapping[str, Sequence[int]],
        weight: float = 0.5,
        label_smoothing: float = 0.1,
        mixing: str = "pixels",
        mask_context: bool = True,
        fraction: float = 1.0,
    ) -> None:
        missing = {s.name for s in token_space.spaces if s.variable_length} - set(separators)
        if missing:
            raise ValueError(f"MixSel needs a separator for variable-length modalities {sorted(missing)}")
        if mixing not in MIXINGS:
            raise ValueError(f"unknown mixing {mixing!r}: use {', '.join(repr(m) for m in MIXINGS)}")
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        for marker in self.extra_specials:
            token_space.special(marker)  # a clear KeyError when the space lacks MixSel's markers
        if mixing == "pixels":
            for space in token_space.spaces:
                if not space.variable_length:
                    half_grids(space.shape, modality=space.name)  # one clear error before any training
        self.token_space = token_space
        self.separators = {m: tuple(ids) for m, ids in separators.items()}
        self.weight = weight
        self.label_smoothing = label_smoothing
        self.mixing = mixing
        self.mask_context = mask_context
        self.fraction = fraction

    def __call__(self, model: Any, inputs: StepInput) -> ObjectiveOutput:
        task = inputs.task
        if not task.context:  # unconditional generation: nothing to mix or select
            return ObjectiveOutput(loss=torch.zeros(()))
        batch = inputs.batch
        segments = batch_segments(task, batch)
        rows = math.ceil(self.fraction * batch.batch_size)
        drawn = self.draw_mixture(task, batch_size=batch.batch_size, rows=rows, generator=inputs.generator)
        mixture, fitting = self.fit_captions(task, segments, drawn)
        metrics = {"repartnered": float(fitting["repartnered"]), "unmixed": float(fitting["unmixed"])}
        if len(mixture.partner) == 0:  # no caption fits with any other: a zero that reaches every parameter
            return ObjectiveOutput(loss=sum(0.0 * p.sum() for p in model.parameters()), metrics=metrics)
        halves = self.batch_halves(task, batch)
        packed, targets, masks = self.sequence(task, segments, mixture, generator=inputs.generator, halves=halves)
        hidden = model(packed)
        logits = span_logits(model, packed, hidden, masks)
        truth = {m: targets[m].tokens[mask] for m, mask in masks.items()}
        loss, loss_metrics = masked_cross_entropy(logits, truth, label_smoothing=self.label_smoothing)
        return ObjectiveOutput(loss=loss, metrics={**loss_metrics, **metrics})

    def batch_halves(self, task: Task, batch: Any) -> dict[str, torch.Tensor]:
        """Each mixed image modality's squeezed halves from the batch (pixel mixing only)."""
        if self.mixing != "pixels":
            return {}
        found = {}
        for m in task.context:
            if self._is_sequence(m):
                continue
            extra = batch.extras.get(halves_extra(m))
            if extra is None:
                raise HalvesError(
                    f"MixSel pixel mixing: the batch has no squeezed {m!r} halves; build the token cache with"
                    " cache.mixsel_halves: true (the default), or use mixing: tokens_resize"
                )
            found[m] = extra
        return found

    def draw_mixture(self, task: Task, *, batch_size: int, rows: int, generator: torch.Generator) -> Mixture:
        """Draw order: partner offset, own half, orientation, each [rows]."""
        device = "cpu"
        offset = 1 + (uniform((rows,), generator=generator, device=device) * (batch_size - 1)).long()
        partner = (torch.arange(rows) + offset) % batch_size
        own_second = uniform((rows,), generator=generator, device=device) < 0.5
        stacked = uniform((rows,), generator=generator, device=device) < 0.5
        if not any(grid_shape(self.token_space.space(m))[0] > 1 for m in task.context if not self._is_sequence(m)):
            stacked = torch.zeros_like(stacked)
        return Mixture(partner=partner, own_second=own_second, stacked=stacked)

    def fit_captions(
        self, task: Task, segments: Mapping[str, Segment], mixture: Mixture
    ) -> tuple[Mixture, dict[str, int]]:
        """Partners whose joined captions fit the text length; draws nothing, so the step stays deterministic.

        Row b keeps its drawn offset k when the pair fits; otherwise it takes the
        first fitting offset of k + 1, k + 2, ... (cycling through 1..B-1), and
        a row that fits with none is dropped.
        """
        own = mixture.rows()
        batch_size = next(iter(segments.values())).batch_size
        fits = torch.ones(len(own), batch_size, dtype=torch.bool)
        for m in task.context:
            if self._is_sequence(m):
                space = self.token_space.space(m)
                joined = joined_lengths(
                    segments[m], own, mixture.own_second, separator=self.separators[m], eos_id=space.eos_id
                )
                fits &= joined.cpu() <= space.length
        fits[torch.arange(len(own)), own.cpu()] = False
        if batch_size < 2 or bool(fits[torch.arange(len(own)), mixture.partner.cpu()].all()):
            return mixture, {"repartnered": 0, "unmixed": 0}
        drawn = (mixture.partner.cpu() - own.cpu()) % batch_size  # k in 1..B-1
        steps = torch.arange(batch_size - 1)
        offsets = (drawn[:, None] - 1 + steps[None, :]) % (batch_size - 1) + 1  # k, k+1, ... in 1..B-1
        candidates = (own.cpu()[:, None] + offsets) % batch_size
        ok = fits.gather(1, candidates)
        found = ok.any(dim=1)
        chosen = candidates[torch.arange(len(own)), ok.float().argmax(dim=1)]
        repartnered = int((found & (chosen != mixture.partner.cpu())).sum())
        device = mixture.partner.device
        moved = attrs.evolve(mixture, partner=torch.where(found, chosen, mixture.partner.cpu()).to(device))
        return moved.select(found.to(device)), {"repartnered": repartnered, "unmixed": int((~found).sum())}

    def sequence(
        self,
        task: Task,
        segments: Mapping[str, Segment],
        mixture: Mixture,
        *,
        generator: torch.Generator,
        halves: Mapping[str, torch.Tensor] | None = None,
    ) -> tuple[Packed, dict[str, Segment], dict[str, torch.Tensor]]:
        """The packed mixed sequence, the masked modalities' truth (the targets' and, in IT2IT, the mixed
        context's) and their masked positions.

        Draw order after the mixture: r [rows], then the positions of each masked modality in sequence
        order (IT2IT: the mixed image's own half, then the text), as `masked_forward.draw_task_masks`.
        """
        device = next(iter(segments.values())).tokens.device
        mixture = mixture.to(device)
        rows = len(mixture.partner)
        first, second = mixture.halves()
        context = {m: self.mix(segments[m], first, second, mixture, halves=halves) for m in task.context}
        targets = {m: segments[m].select(mixture.rows()) for m in task.target}
        r = uniform((rows,), generator=generator, device=device)
        masks = {}
        if task.mask_context and self.mask_context:
            for m in task.context:
                allowed = own_half(mixture, grid_shape(self.token_space.space(m))) & context[m].valid()
                masks[m] = draw_floor_positions(allowed, mask_ratio(self.token_space.space(m), r), generator=generator)
        for m in task.target:
            masks[m] = draw_positions(targets[m].valid(), mask_ratio(self.token_space.space(m), r), generator=generator)
        packed = pack(self.token_space, task_items(self.token_space, task, {**context, **targets}, masks=masks))
        truth = {**{m: context[m] for m in masks if m in context}, **targets}
        return self.mark_selection(packed, task, mixture), truth, masks

    def mix(
        self,
        segment: Segment,
        first: torch.Tensor,
        second: torch.Tensor,
        mixture: Mixture,
        *,
        halves: Mapping[str, torch.Tensor] | None = None,
    ) -> Segment:
        space = self.token_space.space(segment.modality)
        if self._is_sequence(segment.modality):
            a, b = segment.select(first), segment.select(second)
            return join_sequences(a, b, separator=self.separators[space.name], eos_id=space.eos_id, pad_id=space.pad_id)
        shape = grid_shape(space)
        if self.mixing == "pixels":
            if halves is None or segment.modality not in halves:
                raise HalvesError(f"MixSel pixel mixing: no squeezed {segment.modality!r} halves given")
            grids = halves[segment.modality].to(segment.tokens.device, segment.tokens.dtype)
            mixed = join_halves(grids, first, second, shape=shape, stacked=mixture.stacked)
            return Segment.full(segment.modality, mixed)
        how = self.mixing.removeprefix("tokens_")
        a, b = segment.select(first), segment.select(second)
        mixed = mix_grids(a.tokens, b.tokens, shape=shape, vertical=mixture.stacked, how=how)
        return Segment.full(segment.modality, mixed)

    def mark_selection(self, packed: Packed, task: Task, mixture: Mixture) -> Packed:
        """Put each row's BOG_* marker where the layout has BOG (just before the first target's BEGIN)."""
        ids = {name: self.token_space.special(name) for name in self.extra_specials}
        device = packed.tokens.device

        def pick(names: tuple[str, str]) -> torch.Tensor:
            first, second = (torch.tensor(ids[n], device=device) for n in names)
            return torch.where(mixture.own_second, second, first)

        markers = torch.where(mixture.stacked, pick(STACKED), pick(SIDE_BY_SIDE))
        tokens = packed.tokens.clone()
        tokens[:, packed.span(task.target[0]).begin - 1] = markers
        return attrs.evolve(packed, tokens=tokens)

    def _is_sequence(self, modality: str) -> bool:
        return self.token_space.space(modality).variable_length


def draw_floor_positions(allowed: torch.Tensor, ratio: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
    """[R, L] bool: clamp(floor(ratio * n), 1, n) of each row's n allowed positions, uniformly at random.

    The authors' count for a half-and-half image mask (maskgit.py `_get_t2i_mask` with `loc_mask`), which
    rounds down where L_mask's `mask_count` rounds up. One U(0, 1) score per position, the lowest masked.
    """
    scores = uniform(tuple(allowed.shape), generator=generator, device=allowed.device)
    scores = scores.masked_fill(~allowed, 2.0)
    rank = scores.argsort(dim=1).argsort(dim=1)
    available = allowed.sum(dim=1)
    count = torch.minimum(torch.floor(ratio * available).long().clamp(min=1), available)
    return rank < count[:, None]


def encode_separator(text: str, space: TokenSpace, tokenizers: Any) -> tuple[int, ...]:
    """The separator's local ids from the modality's tokenizer, without end-of-text."""
    tokenizer = _tokenizer_for(space.name, tokenizers)
    encoded = tokenizer.encode([text])
    ids = encoded.tokens[0, : int(encoded.lengths[0])].tolist()
    if space.eos_id is not None and ids and ids[-1] == space.eos_id:
        ids = ids[:-1]
    if not ids:
        raise ValueError(f"MixSel separator {text!r} encodes to no {space.name!r} tokens")
    return tuple(ids)


def _tokenizer_for(modality: str, tokenizers: Any) -> Any:
    if tokenizers is None:
        raise ValueError(f"MixSel needs the {modality!r} tokenizer to encode its separator (or set `separator_ids`)")
    candidates = tokenizers.values() if isinstance(tokenizers, Mapping) else tokenizers
    for tokenizer in candidates:
        if getattr(tokenizer, "modality", None) == modality:
            return tokenizer
    raise ValueError(f"MixSel: no tokenizer for modality {modality!r} to encode its separator")
