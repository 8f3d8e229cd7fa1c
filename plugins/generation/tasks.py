"""Every task one IT2IT model covers (MAGVLT slides), through one API: `TaskRunner.run`.

Each task is a generation request: which segments are context (after BOC),
which are targets (after BOG) and which of their tokens are known. Layouts
follow MAGVLT: T2I `[BOC][BOT] text [BOG][BOI] image`, I2T `[BOC][BOI] image
[BOG][BOT] text`. Tasks without a natural condition hide it: a context segment
with no known token is all MASK, exactly the unconditional branch that
condition dropout trains (see guidance.py). So inpainting is T2I with a dropped
caption and a partly known image, and text infilling is I2T with a dropped
image and a partly known caption.

Generations use role keys: `inputs` / `outputs` hold "image" (numpy uint8
[H, W, 3]) and "text" (str); inpainting inputs also hold "region" (the box).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import attrs
import numpy as np
import torch

from mmgen.batch import Generation, Segment
from mmgen.protocols import GenerationRequest, RequestSegment

from .regions import CENTRE, Box, box_mask, check_box
from .text_cleanup import clean_caption


@attrs.frozen(kw_only=True)
class TaskSpec:
    """What a task reads from a prompt and what it generates (role names "image" / "text")."""

    name: str
    needs: tuple[str, ...]
    makes: tuple[str, ...]
    summary: str


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(name="t2i", needs=("text",), makes=("image",), summary="text-guided image generation"),
        TaskSpec(name="i2t", needs=("image",), makes=("text",), summary="image captioning"),
        TaskSpec(name="inpaint", needs=("image",), makes=("image",), summary="regenerate the region of an image"),
        TaskSpec(
            name="outpaint", needs=("image",), makes=("image",), summary="regenerate all but the region of an image"
        ),
        TaskSpec(
            name="t2t", needs=("text",), makes=("text",), summary="text infilling: the middle half of the caption"
        ),
        TaskSpec(name="it2i", needs=("image", "text"), makes=("image",), summary="text-guided editing of the region"),
        TaskSpec(
            name="it2t", needs=("image", "text"), makes=("text",), summary="complete a partial text about an image"
        ),
        TaskSpec(
            name="t2it", needs=("text",), makes=("image", "text"), summary="an image and its caption from a prompt"
        ),
        TaskSpec(name="unconditional", needs=(), makes=("image", "text"), summary="an image-text pair from nothing"),
    )
}


@attrs.frozen(kw_only=True)
class Prompt:
    """One task input. `image` is uint8 [3, H, W]; `region` a box in image fractions (None: the task's default)."""

    key: str
    text: str | None = None
    image: torch.Tensor | None = None
    region: Box | None = None
    reference: dict[str, Any] = attrs.field(factory=dict)


def image_text_pair(generation: Generation) -> tuple[np.ndarray, str] | None:
    """The image and text a generation pairs (generated if made, else given); None if it lacks one.

    The same rule picks what a reranker scores and what `clip_score` measures.
    """
    image = generation.outputs.get("image", generation.inputs.get("image"))
    text = generation.outputs.get("text", generation.inputs.get("text"))
    return None if image is None or text is None else (image, text)


def task_spec(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"no generation task {name!r}; tasks: {', '.join(TASKS)}") from None


def infill_span(content_length: int) -> tuple[int, int]:
    """[start, stop) of the middle half of `content_length` caption tokens (T2T infilling)."""
    start = content_length // 4
    return start, start + (content_length + 1) // 2


def rerank_pair(makes: Sequence[str], needs: Sequence[str]) -> tuple[str, str] | None:
    """Where the (image, text) pair a reranker scores comes from: "outputs" or "inputs"; None if none."""
    sources = []
    for role in ("image", "text"):
        if role in makes:
            sources.append("outputs")
        elif role in needs:
            sources.append("inputs")
        else:
            return None
    return sources[0], sources[1]


REFINE_ROWS = 256  # captions refined per call: rows share forward passes, memory stays bounded


@attrs.define
class _Chosen:
    """One sampled batch after reranking: its prompts, the chosen outputs and their encoded inputs, by role."""

    prompts: Sequence[Prompt]
    outputs: dict[str, Segment]
    inputs: dict[str, Segment]


def _concat(segments: Sequence[Segment]) -> Segment:
    return Segment(
        modality=segments[0].modality,
        tokens=torch.cat([s.tokens for s in segments]),
        lengths=torch.cat([s.lengths for s in segments]),
    )


class TaskRunner:
    """Runs generation tasks with one model, its tokenizers, a sampler and an optional reranker.

    `candidates` > 1 generates that many rows per prompt and keeps the one the
    reranker scores best (MAGVLT: 32 for T2I, 64 for I2T, CLIP-reranked). A
    reranker has `best(image: Segment, text: Segment, *, candidates) -> row
    indices`, one per consecutive group of `candidates` rows; `rerankers` names
    one per task in place of `reranker` (e.g. {"i2t": CycleReranker(model)}).
    `refiners` maps "i2t" to a CaptionRefiner, run once on the chosen captions
    of all prompts (its forward passes batch across prompts, not candidates).
    """

    def __init__(
        self,
        *,
        model: Any,
        tokenizers: Mapping[str, Any],
        sampler: Any,
        reranker: Any = None,
        rerankers: Mapping[str, Any] | None = None,
        refiners: Mapping[str, Any] | None = None,
        image_modality: str = "image",
        text_modality: str = "text",
        device: str | torch.device = "cpu",
    ) -> None:
        self.model = model
        self.tokenizers = tokenizers
        self.sampler = sampler
        self.reranker = reranker
        self.rerankers = dict(rerankers or {})
        self.refiners = dict(refiners or {})
        for task in self.refiners:
            if task != "i2t":
                raise ValueError(f"caption refinement runs on i2t only (a caption of a given image), not {task!r}")
        self.modality = {"image": image_modality, "text": text_modality}
        self.device = torch.device(device)
        if hasattr(model, "eval"):
            model.eval()

    def run(
        self, task: str, prompts: Sequence[Prompt], *, candidates: int = 1, seed: int = 0, batch_size: int = 16
    ) -> list[Generation]:
        """One Generation per prompt; the same seed, prompts and batch size give the same outputs."""
        spec = task_spec(task)
        self._check_prompts(spec, prompts)
        if candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {candidates}")
        if candidates > 1 and rerank_pair(spec.makes, spec.needs) is None:
            candidates = 1  # nothing to score an image-only or text-only result against
        if candidates > 1 and self._reranker(task) is None:
            raise ValueError(f"{candidates} candidates per prompt need a reranker (a trained clip stage)")
        generator = torch.Generator(device=self.device).manual_seed(seed)
        per_batch = max(1, batch_size // candidates)
        batches = [
            self._run_batch(spec, prompts[start : start + per_batch], candidates=candidates, generator=generator)
            for start in range(0, len(prompts), per_batch)
        ]
        if spec.name in self.refiners:
            self._refine(self.refiners[spec.name], batches)
        return [generation for batch in batches for generation in self._generations(spec, batch)]

    def _check_prompts(self, spec: TaskSpec, prompts: Sequence[Prompt]) -> None:
        for prompt in prompts:
            for role in spec.needs:
                if getattr(prompt, role) is None:
                    raise ValueError(
                        f"task {spec.name!r} needs a {role} in every prompt; prompt {prompt.key!r} has none"
                    )
            if prompt.region is not None:
                check_box(prompt.region)

    def _run_batch(
        self, spec: TaskSpec, prompts: Sequence[Prompt], *, candidates: int, generator: torch.Generator
    ) -> _Chosen:
        rows = [p for p in prompts for _ in range(candidates)]
        inputs = self._encode(spec, rows)
        request = REQUESTS[spec.name](self, inputs, rows)
        result = self.sampler.generate(self.model, request, generator=generator)
        outputs = {self._role(s.modality): s for s in result.segments}
        keep = self._best_rows(spec, inputs, outputs, candidates)
        chosen = {role: segment.select(keep) for role, segment in outputs.items()}
        return _Chosen(prompts=prompts, outputs=chosen, inputs={role: s.select(keep) for role, s in inputs.items()})

    def _refine(self, refiner: Any, batches: list[_Chosen]) -> None:
        """Refine the batches' captions together, REFINE_ROWS at a time: the refiner's passes batch across prompts."""
        images = _concat([b.inputs["image"] for b in batches])
        texts = _concat([b.outputs["text"] for b in batches])
        parts = [
            refiner.refine(images.select(slice(at, at + REFINE_ROWS)), texts.select(slice(at, at + REFINE_ROWS)))
            for at in range(0, texts.batch_size, REFINE_ROWS)
        ]
        refined = _concat(parts)
        start = 0
        for batch in batches:
            size = len(batch.prompts)
            batch.outputs["text"] = refined.select(slice(start, start + size))
            start += size

    def _generations(self, spec: TaskSpec, batch: _Chosen) -> list[Generation]:
        decoded = {role: self._decode(role, segment) for role, segment in batch.outputs.items()}
        return [
            Generation(
                task=spec.name,
                key=prompt.key,
                inputs=self._input_record(spec, prompt),
                outputs={role: values[i] for role, values in decoded.items()},
                reference=dict(prompt.reference),
            )
            for i, prompt in enumerate(batch.prompts)
        ]

    def _reranker(self, task: str) -> Any:
        return self.rerankers.get(task, self.reranker)

    # ---- encoding and decoding ------------------------------------------------

    def _role(self, modality: str) -> str:
        return "image" if modality == self.modality["image"] else "text"

    def _space(self, role: str) -> Any:
        return self.model.token_space.space(self.modality[role])

    def _encode(self, spec: TaskSpec, rows: Sequence[Prompt]) -> dict[str, Segment]:
        encoded = {}
        if "text" in spec.needs:
            encoded["text"] = self.tokenizers[self.modality["text"]].encode([p.text for p in rows]).to(self.device)
        if "image" in spec.needs:
            images = torch.stack([p.image for p in rows])
            encoded["image"] = self.tokenizers[self.modality["image"]].encode(images).to(self.device)
        return encoded

    def _decode(self, role: str, segment: Segment) -> list[Any]:
        items = self.tokenizers[self.modality[role]].decode(segment.to("cpu"))
        if role == "image":
            return [image_to_numpy(item) for item in items]
        return [clean_caption(text) for text in items]

    def _input_record(self, spec: TaskSpec, prompt: Prompt) -> dict[str, Any]:
        record: dict[str, Any] = {}
        if prompt.text is not None and "text" in spec.needs:
            record["text"] = prompt.text
        if prompt.image is not None and "image" in spec.needs:
            record["image"] = image_to_numpy(prompt.image)
        if spec.name in REGION_TASKS:
            record["region"] = list(region_of(prompt))
        return record

    # ---- segments of a request -------------------------------------------------

    def _known(self, segment: Segment) -> RequestSegment:
        """A context segment shown in full."""
        return RequestSegment(modality=segment.modality, tokens=segment.tokens, known=segment.valid(), lengths=segment.lengths)

    def _blank(self, role: str, batch: int, *, target: bool) -> RequestSegment:
        """All tokens unknown: a target to generate, or a dropped (all MASK) condition."""
        space = self._space(role)
        tokens = torch.zeros(batch, space.length, dtype=torch.long, device=self.device)
        # A dropped variable-length condition shows every slot as MASK; a generated one predicts its length.
        lengths = None if target and space.variable_length else torch.full((batch,), space.length, device=self.device)
        return RequestSegment(
            modality=space.name,
            tokens=tokens,
            known=torch.zeros_like(tokens, dtype=torch.bool),
            lengths=lengths,
            target=target,
        )

    def _region_target(self, image: Segment, rows: Sequence[Prompt], *, keep_inside: bool) -> RequestSegment:
        grid = tuple(self._space("image").shape)
        inside = torch.stack([box_mask(region_of(p), grid) for p in rows]).to(self.device)
        known = inside if keep_inside else ~inside
        return RequestSegment(
            modality=image.modality, tokens=image.tokens, known=known, lengths=image.lengths, target=True
        )

    def _partial_text(
        self, text: Segment, *, span: Callable[[int], tuple[int, int]], lengths_known: bool
    ) -> RequestSegment:
        """Known caption tokens outside `span(content length)`; EOS counted out of the content."""
        eos = self._space("text").eos_id
        known = text.valid().clone()
        for row, length in enumerate(text.lengths.tolist()):
            content = length - int(eos is not None and length > 0 and text.tokens[row, length - 1].item() == eos)
            start, stop = span(content)
            known[row, start:stop] = False
            if not lengths_known:
                known[row, content:] = False  # the model predicts where the text ends
        return RequestSegment(
            modality=text.modality,
            tokens=text.tokens,
            known=known,
            lengths=text.lengths if lengths_known else None,
            target=True,
        )

    def _best_rows(
        self, spec: TaskSpec, inputs: dict[str, Segment], outputs: dict[str, Segment], candidates: int
    ) -> torch.Tensor:
        if candidates == 1:
            return torch.arange(next(iter(outputs.values())).batch_size, device=self.device)
        image_source, text_source = rerank_pair(spec.makes, spec.needs)
        pools = {"inputs": inputs, "outputs": outputs}
        reranker = self._reranker(spec.name)
        best = reranker.best(pools[image_source]["image"], pools[text_source]["text"], candidates=candidates)
        return best.to(self.device)


def region_of(prompt: Prompt) -> Box:
    """The prompt's box, or the centre (the MAGVLT demo's 8x8 of 16x16)."""
    return prompt.region if prompt.region is not None else CENTRE


def image_to_numpy(image: torch.Tensor) -> np.ndarray:
    """uint8 [3, H, W] tensor -> numpy uint8 [H, W, 3]."""
    return image.detach().to("cpu", torch.uint8).permute(1, 2, 0).contiguous().numpy()


def numpy_to_image(array: np.ndarray) -> torch.Tensor:
    """numpy uint8 [H, W, 3] -> uint8 [3, H, W] tensor."""
    return torch.from_numpy(np.array(array, dtype=np.uint8)).permute(2, 0, 1).contiguous()  # a copy: PNG arrays are read-only


REGION_TASKS = ("inpaint", "outpaint", "it2i")


def _t2i(runner: TaskRunner, inputs: dict[str, Segment], rows: Sequence[Prompt]) -> GenerationRequest:
    return GenerationRequest(segments=[runner._known(inputs["text"]), runner._blank("image", len(rows), target=True)])


def _i2t(runner: TaskRunner, inputs: dict[str, Segment], rows: Sequence[Prompt]) -> GenerationRequest:
    return GenerationRequest(segments=[runner._known(inputs["image"]), runner._blank("text", len(rows), target=True)])


def _inpaint(runner: TaskRunner, inputs: dict[str, Segment], rows: Sequence[Prompt]) -> GenerationRequest:
    image = runner._region_target(inputs["image"], rows, keep_inside=False)
    return GenerationRequest(segments=[runner._blank("text", len(rows), target=False), image])


def _outpaint(runner: TaskRunner, inputs: dict[str, Segment], rows: Sequence[Prompt]) -> GenerationRequest:
    image = runner._region_target(inputs["image"], rows, keep_inside=True)
    return GenerationRequest(segments=[runner._blank("text", len(rows), target=False), image])


def _t2t(runner: TaskRunner, inputs: dict[str, Segment], rows: Sequence[Prompt]) -> GenerationRequest:
    text = runner._partial_text(inputs["text"], span=infill_span, lengths_known=True)
    return GenerationRequest(segments=[runner._blank("image", len(rows), target=False), text])


def _it2i(runner: TaskRunner, inputs: dict[str, Segment], rows: Sequence[Prompt]) -> GenerationRequest:
    image = runner._region_target(inputs["image"], rows, keep_inside=False)
    return GenerationRequest(segments=[runner._known(inputs["text"]), image])


def _it2t(runner: TaskRunner, inputs: dict[str, Segment], rows: Sequence[Prompt]) -> GenerationRequest:
    # The given text is a known prefix; the model completes it and predicts where it ends.
    text = runner._partial_text(inputs["text"], span=lambda n: (n, n), lengths_known=False)
    return GenerationRequest(segments=[runner._known(inputs["image"]), text])


def _t2it(runner: TaskRunner, inputs: dict[str, Segment], rows: Sequence[Prompt]) -> GenerationRequest:
    # The caption is generated after the image, conditioned on the prompt and that image.
    return GenerationRequest(
        segments=[
            runner._known(inputs["text"]),
            runner._blank("image", len(rows), target=True),
            runner._blank("text", len(rows), target=True),
        ]
    )


def _unconditional(runner: TaskRunner, inputs: dict[str, Segment], rows: Sequence[Prompt]) -> GenerationRequest:
    # The image from a dropped caption (the unconditional branch), then its caption.
    return GenerationRequest(
        segments=[
            runner._blank("text", len(rows), target=False),
            runner._blank("image", len(rows), target=True),
            runner._blank("text", len(rows), target=True),
        ]
    )


REQUESTS: dict[str, Callable[[TaskRunner, dict[str, Segment], Sequence[Prompt]], GenerationRequest]] = {
    "t2i": _t2i,
    "i2t": _i2t,
    "inpaint": _inpaint,
    "outpaint": _outpaint,
    "t2t": _t2t,
    "it2i": _it2i,
    "it2t": _it2t,
    "t2it": _t2it,
    "unconditional": _unconditional,
}
