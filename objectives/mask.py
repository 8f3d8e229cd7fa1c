"""L_mask: cross-modal mask prediction (MAGVLT sec. 3.2).

Mask the target (and, for IT2IT, the context with the same r) and predict the
masked tokens from everything else; cross-entropy on masked positions only,
label smoothing 0.1.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from mmgen.api import JointTokenSpace, ObjectiveOutput, StepInput

from .masked_forward import masked_forward
from .masked_loss import masked_cross_entropy


class MaskPrediction:
    name: ClassVar[str] = "mask"

    @attrs.frozen(kw_only=True)
    class Config:
        weight: float = 1.0
        label_smoothing: float = 0.1

    @classmethod
    def from_config(cls, config: Config, *, token_space: JointTokenSpace, **_deps: Any) -> MaskPrediction:
        return cls(
            token_space=token_space,
            weight=config.weight,
            label_smoothing=config.label_smoothing,
        )

    def __init__(
        self,
        *,
        token_space: JointTokenSpace,
        weight: float = 1.0,
        label_smoothing: float = 0.1,
    ) -> None:
        self.token_space = token_space
        self.weight = weight
        self.label_smoothing = label_smoothing

    def __call__(self, model: Any, inputs: StepInput) -> ObjectiveOutput:
        forward = masked_forward(model, inputs, space=self.token_space)
        targets = {m: forward.segments[m].tokens[mask] for m, mask in forward.masks.items()}
        loss, metrics = masked_cross_entropy(forward.logits, targets, label_smoothing=self.label_smoothing)
        return ObjectiveOutput(loss=loss, metrics=metrics)
