"""L_MS: selective prediction on a mixed context, MixSel (MAGVLT sec. 3.2).

Each sample's context is mixed half and half with another pair's context of the
batch, phi(X1, X2); a BOG_LEFT / BOG_RIGHT / BOG_TOP / BOG_BOTTOM token in place
of BOG says which half was this sample's; the target is this sample's own other
modality, masked as in L_mask (slides: L_MS,I2T = -E sum_{j masked}
log p(y^l_j | Y^l_masked, phi(X1, X2))). T2I mixes the two captions (first
caption = LEFT, second = RIGHT, as in the authors' code); I2T and IT2IT mix the
two images left|right (LEFT / RIGHT) or top/bottom (TOP / BOTTOM), each with
probability 1/2. The mixed context is never a prediction target, so IT2IT's
`mask_context` does not apply here: MixSel trains reading the context, not
restoring it.

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

from mmgen.api import JointTokenSpace, ObjectiveOutput, Packed, Segment, StepInput, Task, TokenSpace, pack

from .masked_forward import span_logits
from .masked_loss import masked_cross_entropy
from .masking import draw_positions, mask_ratio, uniform
from .mixture import join_sequences, mix_grids
from .task_layout import batch_segments, task_items

SIDE_BY_SIDE = ("BOG_LEFT", "BOG_RIGHT")
STACKED = ("BOG_TOP", "BOG_BOTTOM")


def grid_shape(space: TokenSpace) -> tuple[int, int]:
    """A fixed-length modality's token grid; a 1-D one is a single row."""
    if len(space.shape) == 1:
        return 1, space.shape[0]
    if len(space.shape) == 2:
        return space.shape[0], space.shape[1]
    raise ValueError(f"MixSel mixes 1-D or 2-D token grids; {space.name!r} has shape {space.shape}")


@attrs.frozen(kw_only=True)
class Mixture:
    """Which pairs were mixed: rows b of the batch, as (first, second) halves.

    `own_second[b]`: b's context is the second half (its partner's the first);
    `stacked[b]`: halves are top/bottom rather than left|right.
    """

    partner: torch.Tensor
    own_second: torch.Tensor
    stacked: torch.Tensor

    def halves(self) -> tuple[torch.Tensor, torch.Tensor]:
        own = torch.arange(len(self.partner), device=self.partner.device)
        return torch.where(self.own_second, self.partner, own), torch.where(self.own_second, own, self.partner)


class MixSel:
    name: ClassVar[str] = "mixsel"
    extra_specials: ClassVar[tuple[str, ...]] = (*SIDE_BY_SIDE, *STACKED)

    @attrs.frozen(kw_only=True)
    class Config:
        weight: float = 0.5
        label_smoothing: float = 0.1
        mixing: Literal["resize", "crop"] = "resize"
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
            fraction=config.fraction,
        )

    def __init__(
        self,
        *,
        token_space: JointTokenSpace,
        separators: Mapping[str, Sequence[int]],
        weight: float = 0.5,
        label_smoothing: float = 0.1,
        mixing: str = "resize",
        fraction: float = 1.0,
    ) -> None:
        missing = {s.name for s in token_space.spaces if s.variable_length} - set(separators)
        if missing:
            raise ValueError(f"MixSel needs a separator for variable-length modalities {sorted(missing)}")
        if mixing not in ("resize", "crop"):
            raise ValueError(f"unknown mixing {mixing!r}: use 'resize' or 'crop'")
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        for marker in self.extra_specials:
            token_space.special(marker)  # a clear KeyError when the space lacks MixSel's markers
        self.token_space = token_space
        self.separators = {m: tuple(ids) for m, ids in separators.items()}
        self.weight = weight
        self.label_smoothing = label_smoothing
        self.mixing = mixing
        self.fraction = fraction

    def __call__(self, model: Any, inputs: StepInput) -> ObjectiveOutput:
        task = inputs.task
        if not task.context:  # unconditional generation: nothing to mix or select
            return ObjectiveOutput(loss=torch.zeros(()))
        segments = batch_segments(task, inputs.batch)
        rows = math.ceil(self.fraction * inputs.batch.batch_size)
        mixture = self.draw_mixture(task, batch_size=inputs.batch.batch_size, rows=rows, generator=inputs.generator)
        packed, targets, masks = self.sequence(task, segments, mixture, generator=inputs.generator)
        hidden = model(packed)
        logits = span_logits(model, packed, hidden, masks)
        truth = {m: targets[m].tokens[mask] for m, mask in masks.items()}
        loss, metrics = masked_cross_entropy(logits, truth, label_smoothing=self.label_smoothing)
        return ObjectiveOutput(loss=loss, metrics=metrics)

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

    def sequence(
        self, task: Task, segments: Mapping[str, Segment], mixture: Mixture, *, generator: torch.Generator
    ) -> tuple[Packed, dict[str, Segment], dict[str, torch.Tensor]]:
        """The packed mixed sequence, the targets (first rows) and their masked positions.

        Draw order after the mixture: r [rows], then the positions of each target in order.
        """
        rows = len(mixture.partner)
        device = next(iter(segments.values())).tokens.device
        mixture = Mixture(**{k: v.to(device) for k, v in attrs.asdict(mixture, recurse=False).items()})
        first, second = mixture.halves()
        context = {m: self.mix(segments[m], first, second, mixture.stacked) for m in task.context}
        targets = {m: segments[m].select(slice(0, rows)) for m in task.target}
        r = uniform((rows,), generator=generator, device=device)
        masks = {
            m: draw_positions(targets[m].valid(), mask_ratio(self.token_space.space(m), r), generator=generator)
            for m in task.target
        }
        packed = pack(self.token_space, task_items(self.token_space, task, {**context, **targets}, masks=masks))
        return self.mark_selection(packed, task, mixture), targets, masks

    def mix(self, segment: Segment, first: torch.Tensor, second: torch.Tensor, stacked: torch.Tensor) -> Segment:
        a, b = segment.select(first), segment.select(second)
        space = self.token_space.space(segment.modality)
        if self._is_sequence(segment.modality):
            return join_sequences(a, b, separator=self.separators[space.name], eos_id=space.eos_id, pad_id=space.pad_id)
        tokens = mix_grids(a.tokens, b.tokens, shape=grid_shape(space), vertical=stacked, how=self.mixing)
        return Segment.full(segment.modality, tokens)

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
