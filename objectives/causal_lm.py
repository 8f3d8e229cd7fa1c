"""L_AR: next-token prediction, how ARGVLT (MAGVLT's autoregressive twin) is trained.

The paper (Kim et al., CVPR 2023) describes ARGVLT only as trained left to right on
both orders; the rest is our reconstruction (docs/method.md, "19. ARGVLT, the autoregressive twin").

The step's task (drawn from p_tau by the train stage, per batch as for MAGVLT;
the default is the authors' 8:1:1 over T2I : I2T : IT2IT, objectives/tasks.py)
gives the order: T2I lays out text then image, I2T image then text, with the
layout MAGVLT trains and samples with (`[BOC] context [BOG] target`, made by
`mmgen.api.pack` through task_layout.py), so special tokens and positions are
the ones the autoregressive sampler builds. Attention is left to right
(plugins/models/causal.py). Token j of a segment is predicted from the slot
before it (the segment's BEGIN for j = 0).

Only the target is trained in T2I and I2T: the loss is then exactly the
conditional likelihood the sampler draws from, and each modality is still
learnt from the start in the other order. A task that masks its context (IT2IT,
where MAGVLT also predicts the context) trains the context too: the joint
likelihood of image and text. Padding after end-of-text is never a target; the
end-of-text is (it is where sampling stops).
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from mmgen.api import JointTokenSpace, ObjectiveOutput, StepInput, Task, pack, probability
from mmgen.plugins.models.causal import causal

from .masked_forward import drop_context
from .masked_loss import masked_cross_entropy
from .task_layout import batch_segments, task_items


def trained_modalities(task: Task) -> tuple[str, ...]:
    """The target, and the context too when the task masks it (IT2IT)."""
    return (*(task.context if task.mask_context else ()), *task.target)


class CausalLM:
    name: ClassVar[str] = "causal_lm"
    attention: ClassVar[str] = "causal"  # for a left-to-right model (argvlt); the train stage checks the pair

    @attrs.frozen(kw_only=True)
    class Config:
        weight: float = 1.0
        # 0.1 as MAGVLT's L_mask (sec. 3.2), so the twins differ only in direction and order.
        label_smoothing: float = attrs.field(default=0.1, validator=probability)

    @classmethod
    def from_config(cls, config: Config, *, token_space: JointTokenSpace, **_deps: Any) -> CausalLM:
        return cls(token_space=token_space, weight=config.weight, label_smoothing=config.label_smoothing)

    def __init__(self, *, token_space: JointTokenSpace, weight: float = 1.0, label_smoothing: float = 0.1) -> None:
        self.token_space = token_space
        self.weight = weight
        self.label_smoothing = label_smoothing

    def __call__(self, model: Any, inputs: StepInput) -> ObjectiveOutput:
        segments = batch_segments(inputs.task, inputs.batch)
        # Condition dropout (the train stage's `condition_dropout`, for the unconditional branch of tasks
        # with a dropped condition) shows a row's whole context as MASK, as for MAGVLT (masked_forward.py).
        dropped = drop_context(inputs)
        packed = causal(pack(self.token_space, task_items(self.token_space, inputs.task, segments, masks=dropped)))
        hidden = model(packed)
        logits, targets = {}, {}
        for m in trained_modalities(inputs.task):
            span, segment = packed.span(m), segments[m]
            valid = segment.valid() & ~dropped[m] if m in dropped else segment.valid()  # a hidden token is no target
            # Slot s predicts the token at s + 1: the BEGIN slot predicts token 0.
            logits[m] = model.logits(hidden[:, span.start - 1 : span.stop - 1][valid], m)
            targets[m] = segment.tokens[valid]
        loss, metrics = masked_cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        return ObjectiveOutput(
            loss=loss, metrics={"accuracy": metrics["accuracy"], "predicted_tokens": metrics["masked_tokens"]}
        )
