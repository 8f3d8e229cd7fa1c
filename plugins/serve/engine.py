"""The model behind `mmgen serve`: a run's stages loaded once, and one generation at a time through the core pipeline.

A request becomes exactly what `mmgen generate` runs: the task built by the registry,
the sampler from the run's settings (with the request's steps and guidance), and
`GenerationPipeline.run` with the request's seed and generate's default batch size,
so the same prompt and seed give the same pictures here and on the command line.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any, Callable

import attrs
import numpy as np

from mmgen.api import (
    GenerationPipeline,
    Prompt,
    StageInputs,
    newest_finished,
    newest_model,
    png_bytes,
    publish,
    structure_spec,
    verify_stage_folder,
)

MODEL_STAGE, TOKENIZERS_STAGE = "train", "tokenizers"
BATCH_SIZE = 16  # `mmgen generate`'s default: rows share a batch exactly as they do there
TASKS = ("t2i", "i2t", "inpaint")  # the page's three; inpaint with a caption runs as it2i
DIM = 0.3  # how much of a not-yet-fixed image token still shows in a step picture


@attrs.frozen(kw_only=True)
class Request:
    """One generation: a registered task, its inputs, and the page's knobs."""

    task: str
    items: dict[str, Any]  # modality -> item (a text, an image tensor as the tokenizer loads it)
    candidates: int = 1  # independent samples of the same prompt, all shown
    seed: int = 0
    steps: int | None = None  # None: the run's sampler setting
    guidance: float | None = None  # None: the run's sampler setting
    region: tuple[float, float, float, float] | None = None


@attrs.frozen(kw_only=True)
class Frame:
    """What one refinement step shows: pictures (PNG bytes) or texts, one per candidate."""

    step: int
    steps: int
    modality: str
    pictures: list[bytes] = attrs.field(factory=list)
    texts: list[str] = attrs.field(factory=list)


@attrs.frozen(kw_only=True)
class Result:
    pictures: list[bytes]
    texts: list[str]


class Engine:
    """A run's model and tokenizers, loaded once; `generate` is called by one worker thread at a time."""

    def __init__(self, run_dir: Path, *, registry: Any, sampler: dict[str, Any] | None = None, device: str = "cpu"):
        # The run's newest model: a fine-tuned one (finetune stage) where the run made one.
        folders = {
            MODEL_STAGE: newest_model(run_dir, registry=registry),
            TOKENIZERS_STAGE: newest_finished(run_dir, TOKENIZERS_STAGE),
        }
        uses = {key: verify_stage_folder(folder)["use"] for key, folder in folders.items()}
        inputs = StageInputs(folders, uses=uses, registry=registry, device=device, reader="mmgen serve")
        self.registry, self.device = registry, device
        self.model = inputs.load(MODEL_STAGE)
        self.tokenizers = inputs.load(TOKENIZERS_STAGE)
        self.sampler_data = dict(sampler or {"use": getattr(self.model, "default_sampler", "maskgit")})
        self.defaults = self._defaults()

    def _defaults(self) -> dict[str, Any]:
        """The knobs' values when a request leaves them out: the run's sampler settings."""
        config = self._sampler_spec(self.sampler_data).config
        fixed, variable = getattr(config, "fixed", None), getattr(config, "variable", None)
        return {
            "sampler": self.sampler_data["use"],
            "image_steps": getattr(fixed, "steps", None),
            "text_steps": getattr(variable, "steps", None),
            "guidance": getattr(getattr(fixed, "guidance", None), "scale", None),
        }

    def _sampler_spec(self, data: dict[str, Any]) -> Any:
        return structure_spec("samplers", data, path="sampler", registry=self.registry)

    def task_name(self, request: Request) -> str:
        """Inpainting with a caption is text-guided editing (it2i); without one, plain inpainting."""
        return "it2i" if request.task == "inpaint" and "text" in request.items else request.task

    def build_task(self, request: Request) -> Any:
        data: dict[str, Any] = {"use": self.task_name(request)}
        if request.region is not None:
            data["region"] = list(request.region)
        return self.registry.build(structure_spec("tasks", data, path="task", registry=self.registry))

    def sampler_for(self, request: Request) -> Any:
        """The run's sampler with the request's steps (of the kind of target the task makes) and guidance."""
        data = {key: (dict(value) if isinstance(value, dict) else value) for key, value in self.sampler_data.items()}
        kind = "variable" if request.task == "i2t" else "fixed"
        if request.steps is not None and self.defaults[f"{'text' if kind == 'variable' else 'image'}_steps"]:
            data.setdefault(kind, {})["steps"] = request.steps
        if request.guidance is not None and self.defaults["guidance"] is not None and kind == "fixed":
            fixed = data.setdefault("fixed", {})
            fixed["guidance"] = {**fixed.get("guidance", {}), "scale": request.guidance}
        return self.registry.build(self._sampler_spec(data))

    def prompts(self, request: Request) -> list[Prompt]:
        name = self.task_name(request)
        return [Prompt(key=f"{name}-{i:04d}", items=dict(request.items)) for i in range(request.candidates)]

    def check(self, request: Request) -> None:
        """What `mmgen generate` checks before sampling (the task's modalities, the model's trained layouts)."""
        pipeline = self._pipeline(self.sampler_for(request))
        pipeline.check(self.build_task(request), self.prompts(request), candidates=1, reranker=None)

    def generate(self, request: Request, *, out_dir: Path, on_frame: Callable[[Frame], None]) -> Result:
        """Run the request; every refinement step goes to `on_frame`; the outputs are published under `out_dir`."""
        sampler = StepReporter(self.sampler_for(request), lambda **step: on_frame(self.frame(**step)))
        task = self.build_task(request)
        generations = self._pipeline(sampler).run(
            task, self.prompts(request), seed=request.seed, batch_size=max(BATCH_SIZE, request.candidates)
        )
        pictures = [png_bytes(g.outputs["image"]) for g in generations if "image" in g.outputs]
        texts = [g.outputs["text"] for g in generations if "text" in g.outputs]
        publish(generations, out_dir, tokenizers=self.tokenizers)  # what `mmgen generate` writes
        return Result(pictures=pictures, texts=texts)

    def _pipeline(self, sampler: Any) -> GenerationPipeline:
        return GenerationPipeline(
            model=self.model, tokenizers=self.tokenizers, sampler=sampler, device=self.device, show_progress=False
        )

    def frame(self, *, step: int, steps: int, segment: Any, masked: Any) -> Frame:
        """A step as the page shows it: pictures with their unfixed tokens dimmed, or the texts as they stand."""
        tokenizer = self.tokenizers[segment.modality]
        items = tokenizer.decode(segment.to("cpu"))
        if not tokenizer.token_space.variable_length:
            present = getattr(tokenizer, "present", lambda item: item)
            grid = tuple(tokenizer.token_space.shape)
            pictures = [png_bytes(dimmed(present(item), masked[i].cpu().numpy(), grid)) for i, item in enumerate(items)]
            return Frame(step=step, steps=steps, modality=segment.modality, pictures=pictures)
        return Frame(step=step, steps=steps, modality=segment.modality, texts=[str(item) for item in items])


def dimmed(picture: np.ndarray, masked: np.ndarray, grid: tuple[int, ...]) -> np.ndarray:
    """[H, W, 3] uint8 with each still-masked token's cell faded towards grey."""
    rows, cols = grid if len(grid) == 2 else (1, math.prod(grid))
    cells = masked.reshape(rows, cols)
    height, width = picture.shape[:2]
    per_pixel = cells[np.arange(height) * rows // height][:, np.arange(width) * cols // width]
    faded = (picture * DIM + 128 * (1 - DIM)).astype(np.uint8)
    return np.where(per_pixel[..., None], faded, picture)


class StepReporter:
    """A sampler that passes `on_step` to the wrapped one's `generate`; everything else is the wrapped sampler's.

    A sampler without the hook (the autoregressive one) runs as it is: the page then shows no steps.
    """

    def __init__(self, sampler: Any, on_step: Callable[..., None]) -> None:
        self.sampler = sampler
        accepts = "on_step" in inspect.signature(sampler.generate).parameters
        self.extra = {"on_step": on_step} if accepts else {}

    def generate(self, model: Any, request: Any, *, generator: Any) -> Any:
        return self.sampler.generate(model, request, generator=generator, **self.extra)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sampler, name)
