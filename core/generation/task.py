"""Generation tasks: each task is one object that turns prompts into a generation request.

A task names the modalities a prompt gives (`needs`) and those it generates
(`makes`), and builds the request: which segments are context (after BOC),
which are targets (after BOG), and which target tokens are known. A task may
make several requests in turn (`follow_up`: T2IT captions the image it made),
and offer several ways to its outputs (`routes`), of which the pipeline runs
the first whose layouts the model trained (mmgen.generation.layouts). Tasks are
plugins (`register_tasks`); the built-in ones are in mmgen.plugins.tasks. The
helpers here build the usual request segments.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Mapping, Protocol, Sequence, runtime_checkable

import attrs
import torch

from ..batch import Segment
from ..protocols import GenerationRequest, RequestSegment
from ..token_space import JointTokenSpace, TokenSpace


@attrs.frozen(kw_only=True)
class Prompt:
    """One task input: raw items by modality (as a tokenizer's `load_item` gives them), and what metrics compare to."""

    key: str
    items: Mapping[str, Any] = attrs.field(factory=dict)
    reference: Mapping[str, Any] = attrs.field(factory=dict)


@runtime_checkable
class GenerationTask(Protocol):
    """What a task is: its modalities, its prompts from held-out examples, and its request."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for `mmgen plugins` and the docs
    needs: tuple[str, ...]  # modalities every prompt gives
    makes: tuple[str, ...]  # modalities generated, in request order

    def prompts(self, examples: Sequence[Prompt]) -> list[Prompt]:
        """This task's prompts from held-out examples (each holding every modality of a record)."""

    def request(
        self, inputs: Mapping[str, Segment], *, batch: int, space: JointTokenSpace, device: torch.device
    ) -> GenerationRequest:
        """The request for `batch` encoded prompts (`inputs[m]`: their tokens of modality m, for each m in needs)."""

    def describe(self) -> dict[str, Any]:
        """What each Generation records about the task beside its given items (e.g. an inpainting region)."""

    def finish(self, modality: str, items: list[Any]) -> list[Any]:
        """Generated items of `modality` after decoding, post-processed (e.g. captions cleaned up)."""


class TaskBase:
    """Defaults for a task: prompts keep the modalities the task needs; nothing to describe or finish.

    Two optional members the pipeline reads when a task has them: `follow_up`
    (one request by default) and `routes` (the task itself by default);
    `instead` names tasks a refusal suggests.
    """

    needs: tuple[str, ...] = ()
    makes: tuple[str, ...] = ()
    instead: tuple[str, ...] = ()  # tasks to suggest when the model never trained this one's layouts

    def prompts(self, examples: Sequence[Prompt]) -> list[Prompt]:
        return [attrs.evolve(e, items={m: given(e, m, task=self.name) for m in self.needs}) for e in examples]

    def describe(self) -> dict[str, Any]:
        return {}

    def finish(self, modality: str, items: list[Any]) -> list[Any]:
        return items

    def follow_up(
        self,
        inputs: Mapping[str, Segment],
        made: Mapping[str, Segment],
        *,
        batch: int,
        space: JointTokenSpace,
        device: Any,
    ) -> GenerationRequest | None:
        """The next request, given the segments generated so far (`made`, by modality); None: done."""
        return None

    def routes(self) -> list[Any]:
        """Ways to this task's outputs, preferred first (each a task with this name); the pipeline runs the
        first whose every request's layout the model trained."""
        return [self]


def given(example: Prompt, modality: str, *, task: str) -> Any:
    """The example's item of `modality`, or an error that names the task and the example."""
    if example.items.get(modality) is None:
        raise ValueError(f"task {task!r} needs a {modality!r} item; example {example.key!r} has none")
    return example.items[modality]


def known(segment: Segment) -> RequestSegment:
    """A context segment shown in full."""
    return RequestSegment(
        modality=segment.modality, tokens=segment.tokens, known=segment.valid(), lengths=segment.lengths
    )


def blank(space: TokenSpace, batch: int, *, target: bool, device: torch.device | str = "cpu") -> RequestSegment:
    """All tokens unknown: a target to generate, or a dropped (all MASK) condition."""
    tokens = torch.zeros(batch, space.length, dtype=torch.long, device=device)
    # A dropped variable-length condition shows every slot as MASK; a generated one predicts its length.
    lengths = None if target and space.variable_length else torch.full((batch,), space.length, device=device)
    return RequestSegment(
        modality=space.name,
        tokens=tokens,
        known=torch.zeros_like(tokens, dtype=torch.bool),
        lengths=lengths,
        target=target,
    )


def region_target(segment: Segment, inside: torch.Tensor, *, keep_inside: bool, target: bool = True) -> RequestSegment:
    """A grid target whose tokens inside the region ([L] bool) are regenerated, or kept (`keep_inside`).

    With `target` False, a context segment whose region tokens show as MASK (IT2IT's partly masked image).
    """
    region = inside.to(segment.tokens.device)[None, :].expand_as(segment.tokens)
    known_tokens = region if keep_inside else ~region
    return RequestSegment(
        modality=segment.modality,
        tokens=segment.tokens,
        known=known_tokens.clone(),
        lengths=segment.lengths,
        target=target,
    )


def partial_text(
    segment: Segment, space: TokenSpace, *, span: Callable[[int], tuple[int, int]], lengths_known: bool
) -> RequestSegment:
    """A variable-length target: tokens outside `span(content length)` known; EOS counts out of the content.

    With `lengths_known` False the model predicts where the text ends.
    """
    eos = space.eos_id
    known_tokens = segment.valid().clone()
    for row, length in enumerate(segment.lengths.tolist()):
        ends = eos is not None and length > 0 and segment.tokens[row, length - 1].item() == eos
        content = length - int(ends)
        start, stop = span(content)
        known_tokens[row, start:stop] = False
        if not lengths_known:
            known_tokens[row, content:] = False
    return RequestSegment(
        modality=segment.modality,
        tokens=segment.tokens,
        known=known_tokens,
        lengths=segment.lengths if lengths_known else None,
        target=True,
    )
