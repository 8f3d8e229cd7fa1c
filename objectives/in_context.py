"""L_mask and L_TL over sequences of several pairs: in-context generation (docs/in_context.md).

A task's context and target name modalities in sequence order, any modality
any number of times: in-context T2I with two context pairs is context
`[image, text, image, text, text]`, target `[image]`. The batch holds an
episode's segments (plugins/datasets/episodes.py: pair 0's image and text,
then pair 1's, ...); the n-th mention of a modality in the task takes the
batch's n-th segment of it, so the target is the pair after the k context
pairs. Pairs of an episode follow one rule and are drawn alike, so any of
them may be the query.

The target is masked as in MAGVLT's mask prediction (one r ~ U(0, 1) per row:
cos(pi r / 2) of a fixed-length target, r of a variable-length one) and
predicted from everything else, label-smoothed cross-entropy on the masked
positions; a variable-length target's length is predicted from its BEGIN state
(L_TL, with `length_weight`), its BEGIN query seeing only what precedes it.
With condition dropout a share of rows shows its whole context as MASK.
The layout code knows no modality: pairs of audio and text work the same way.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar

import attrs
import torch.nn.functional as F

from mmgen.api import JointTokenSpace, ObjectiveOutput, Part, Segment, StepInput, TokenBatch, pack

from .masked_forward import CONDITION_DROPOUT_KEY
from .masked_loss import masked_cross_entropy
from .masking import draw_positions, mask_ratio, uniform


def occurrence_segments(modalities: tuple[str, ...], batch: TokenBatch) -> list[Segment]:
    """The batch segment of each mention: the n-th mention of a modality is its n-th segment."""
    seen: Counter[str] = Counter()
    found = []
    for m in modalities:
        found.append(batch.modality(m, seen[m]))
        seen[m] += 1
    return found


class InContextMask:
    name: ClassVar[str] = "in_context_mask"

    @attrs.frozen(kw_only=True)
    class Config:
        weight: float = 1.0
        label_smoothing: float = 0.1
        length_weight: float = 0.01  # L_TL's weight in MAGVLT (target_length.py)

    @classmethod
    def from_config(cls, config: Config, *, token_space: JointTokenSpace, **_deps: Any) -> InContextMask:
        return cls(
            token_space=token_space,
            weight=config.weight,
            label_smoothing=config.label_smoothing,
            length_weight=config.length_weight,
        )

    def __init__(
        self,
        *,
        token_space: JointTokenSpace,
        weight: float = 1.0,
        label_smoothing: float = 0.1,
        length_weight: float = 0.01,
    ) -> None:
        self.token_space = token_space
        self.weight = weight
        self.label_smoothing = label_smoothing
        self.length_weight = length_weight

    def __call__(self, model: Any, inputs: StepInput) -> ObjectiveOutput:
        task = inputs.task
        segments = occurrence_segments((*task.context, *task.target), inputs.batch)
        context, targets = segments[: len(task.context)], segments[len(task.context) :]
        r = uniform((targets[0].batch_size,), generator=inputs.generator, device=targets[0].tokens.device)
        masks = [
            draw_positions(s.valid(), mask_ratio(self.token_space.space(s.modality), r), generator=inputs.generator)
            for s in targets
        ]
        # Condition dropout (the stage's `condition_dropout`): a row's whole context shown as MASK, so that
        # guidance's unconditional pass is a trained layout; drawn after the masks.
        p = float(inputs.shared.get(CONDITION_DROPOUT_KEY, 0.0))
        dropped = None
        if p > 0 and context:
            dropped = uniform((r.shape[0],), generator=inputs.generator, device=r.device) < p
        items: list[str | Part] = ["BOC"]
        items += [Part(segment=s, mask=None if dropped is None else dropped[:, None] & s.valid()) for s in context]
        items.append("BOG")
        items += [
            Part(segment=s, mask=mask, predict_length=self.token_space.space(s.modality).variable_length)
            for s, mask in zip(targets, masks)
        ]
        packed = pack(self.token_space, items)
        hidden = model(packed)
        spans = packed.spans[len(context) :]
        logits = {
            i: model.logits(hidden[:, span.start : span.stop][mask], s.modality)
            for i, (span, s, mask) in enumerate(zip(spans, targets, masks))
        }
        wanted = {i: s.tokens[mask] for i, (s, mask) in enumerate(zip(targets, masks))}
        loss, metrics = masked_cross_entropy(logits, wanted, label_smoothing=self.label_smoothing)
        for span, s in zip(spans, targets):
            if self.token_space.space(s.modality).variable_length and self.length_weight > 0:
                length_logits = model.length_logits(hidden[:, span.begin], s.modality)
                classes = (s.lengths - 1).clamp(0, length_logits.shape[-1] - 1)
                length_loss = F.cross_entropy(length_logits, classes)
                loss = loss + self.length_weight * length_loss
                metrics[f"length/{s.modality}"] = float(length_loss.detach())
        metrics["context_pairs"] = float(len(context))
        return ObjectiveOutput(loss=loss, metrics=metrics)


def in_context_tasks(*, pairs: int, image: str = "image", text: str = "text") -> dict[str, dict[str, Any]]:
    """The recipe tasks of in-context T2I and I2T with 0 .. pairs - 1 context pairs (names `ic_t2i_k<k>`, ...)."""
    tasks = {}
    for k in range(pairs):
        shown = [image, text] * k
        tasks[f"ic_t2i_k{k}"] = {"context": [*shown, text], "target": [image]}
        tasks[f"ic_i2t_k{k}"] = {"context": [*shown, image], "target": [text]}
    return tasks
