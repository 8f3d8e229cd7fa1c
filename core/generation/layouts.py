"""Which sequence layouts a model was trained on, and whether a generation request uses one of them.

A training task `[BOC] context... [BOG] target...` (mmgen.task.Task) shows the
model its context segments in one of three states: `given` (every token shown),
`partial` (some tokens MASK: a task with `mask_context`, MAGVLT's IT2IT) or
`masked` (every token MASK: condition dropout, or IT2IT when its r hides the
whole context). The train stage records in model.json what it trained
(`TrainedLayouts`); the generation pipeline describes each request the same way
(`request_layout`) and refuses one the model never saw, in one line that names
the missing training and the remedy.

IT2IT masks context and target with one r per row, the image cos(pi r / 2) of
its tokens and the text r (MAGVLT sec. 3.2; the official
magvlt/models/maskgit/maskgit.py `_mask_schedule`, task "it2it-mask"), so the two
ratios move in opposite directions: a wholly MASK context comes with a nearly
known target and a wholly MASK target with a nearly known context. It never shows
both wholly MASK; only condition dropout (a dropped context beside a target
masked at any ratio) does.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import attrs
import torch

from ..batch import Segment
from ..protocols import GenerationRequest, RequestSegment
from ..task import Task
from ..token_space import JointTokenSpace

GIVEN, PARTIAL, MASKED = "given", "partial", "masked"
RECORD_KEY = "trained_layouts"  # the key of the record in a saved model's model.json
IT2IT_EXAMPLE = "`it2it: {context: [image], target: [text], mask_context: true}`"


@attrs.frozen(kw_only=True)
class Layout:
    """One request's sequence: context segments (modality, state), then target segments (modality, state).

    A target is `masked` when every token is generated, `partial` when some are given.
    """

    context: tuple[tuple[str, str], ...]
    target: tuple[tuple[str, str], ...]

    @property
    def context_modalities(self) -> tuple[str, ...]:
        return tuple(m for m, _ in self.context)

    @property
    def target_modalities(self) -> tuple[str, ...]:
        return tuple(m for m, _ in self.target)

    def __str__(self) -> str:
        context = {GIVEN: "{}", PARTIAL: "{}(partly MASK)", MASKED: "MASK({})"}
        target = {MASKED: "{}", PARTIAL: "{}(partly given)"}
        return " ".join(
            [
                "[BOC]",
                *(context[s].format(m) for m, s in self.context),
                "[BOG]",
                *(target[s].format(m) for m, s in self.target),
            ]
        )


def segment_state(segment: RequestSegment) -> str:
    """`given`, `partial` or `masked`: how many of the segment's valid positions are known (over every row)."""
    known = segment.known.bool()
    if segment.lengths is not None:
        valid = torch.arange(known.shape[1], device=known.device)[None, :] < segment.lengths.to(known.device)[:, None]
        known, unknown = known & valid, ~known & valid
    else:
        unknown = ~known
    if not bool(unknown.any()):
        return GIVEN
    return PARTIAL if bool(known.any()) else MASKED


def request_layout(request: GenerationRequest) -> Layout:
    return Layout(
        context=tuple((s.modality, segment_state(s)) for s in request.segments if not s.target),
        target=tuple((s.modality, segment_state(s)) for s in request.segments if s.target),
    )


def next_request(
    task: Any, inputs: Mapping[str, Segment], made: Mapping[str, Segment], *, batch: int, space: Any, device: Any
) -> GenerationRequest | None:
    """The task's request after `made`; None when it is done (a task without `follow_up` makes one request)."""
    follow_up = getattr(task, "follow_up", None)
    return None if follow_up is None else follow_up(inputs, made, batch=batch, space=space, device=device)


def planned_requests(task: Any, space: JointTokenSpace) -> list[GenerationRequest]:
    """Every request `task` makes, in order, for one placeholder prompt (token 0 throughout), on the CPU."""

    def placeholder(modality: str) -> Segment:
        return Segment.full(modality, torch.zeros(1, space.space(modality).length, dtype=torch.long))

    inputs = {m: placeholder(m) for m in task.needs}
    made: dict[str, Segment] = {}
    requests = []
    request = task.request(inputs, batch=1, space=space, device=torch.device("cpu"))
    while request is not None:
        requests.append(request)
        made.update({s.modality: placeholder(s.modality) for s in request.segments if s.target})
        request = next_request(task, inputs, made, batch=1, space=space, device=torch.device("cpu"))
    return requests


def planned_layouts(task: Any, space: JointTokenSpace) -> list[Layout]:
    """The layouts of every request `task` makes, in order."""
    return [request_layout(request) for request in planned_requests(task, space)]


@attrs.frozen(kw_only=True)
class Missing:
    """What training a layout lacks, and how to get it."""

    what: str
    remedy: str


@attrs.frozen(kw_only=True)
class TrainedLayouts:
    """The layouts a train stage trained: its tasks and its condition dropout rate.

    In model.json (under RECORD_KEY): each task's context, target and
    mask_context by name, the rate, and `dropped_context` (rate > 0: layouts
    with a wholly MASK context were trained).
    """

    tasks: tuple[Task, ...] = attrs.field(converter=tuple)
    condition_dropout: float = 0.0

    def to_data(self) -> dict[str, Any]:
        return {
            "tasks": {
                t.name: {"context": list(t.context), "target": list(t.target), "mask_context": t.mask_context}
                for t in self.tasks
            },
            "condition_dropout": self.condition_dropout,
            "dropped_context": self.condition_dropout > 0,
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> TrainedLayouts:
        tasks = [
            Task(name=name, context=t["context"], target=t["target"], mask_context=bool(t.get("mask_context")))
            for name, t in data["tasks"].items()
        ]
        return cls(tasks=tasks, condition_dropout=float(data.get("condition_dropout", 0.0)))

    def missing(self, layout: Layout) -> Missing | None:
        """None when training showed `layout`; else what it lacks."""
        order = [
            t
            for t in self.tasks
            if t.context == layout.context_modalities and t.target == layout.target_modalities
        ]
        if not order:
            context, target = list(layout.context_modalities), list(layout.target_modalities)
            return Missing(
                what=f"no training task had context {context} and target {target}",
                remedy=f"a task `{{context: {context}, target: {target}}}` in the train stage's tasks",
            )
        states = {state for _, state in layout.context}
        if states <= {GIVEN}:
            return None
        all_target_masked = all(state == MASKED for _, state in layout.target)
        dropped = states == {MASKED}
        if dropped and self.condition_dropout > 0:
            return None
        if any(t.mask_context for t in order) and not (dropped and all_target_masked):
            return None
        context = "+".join(layout.context_modalities)
        dropout = f"`condition_dropout: 0.1` in the train stage (it had {self.condition_dropout:g})"
        if dropped and all_target_masked and any(t.mask_context for t in order):
            return Missing(
                what=(
                    f"a wholly MASK {context} context beside a wholly MASK target, which IT2IT's one r never shows"
                    " (it masks context and target at opposite ratios) and only condition dropout trains"
                ),
                remedy=dropout,
            )
        if dropped:
            return Missing(what=f"a wholly MASK {context} context, which only condition dropout trains", remedy=dropout)
        return Missing(
            what=f"a partly MASK {context} context, which only a task with `mask_context: true` (IT2IT) trains",
            remedy=f"a task like {IT2IT_EXAMPLE} in the train stage's tasks",
        )


def refusal(task: str, layout: Layout, missing: Missing, *, instead: Sequence[str] = ()) -> str:
    """The one line that refuses `task` on a model that never trained `layout`."""
    others = "".join(f", or the task {name!r}" for name in instead)
    return (
        f"task {task!r} needs the layout `{layout}`, which this model never trained: {missing.what};"
        f" remedy: {missing.remedy}{others}"
    )
