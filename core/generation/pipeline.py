"""The generation pipeline: one loop over any model, sampler, reranker and refiner.

    prompts -> encode -> task.request -> sampler.generate (-> task.follow_up -> sampler.generate ...)
            -> (reranker: best of N) -> (refiner) -> decode

Nothing here knows a model or a modality: the task builds the requests, the
sampler fills them, rerankers and refiners are plugins of their own kinds, and
tokenizers encode prompts and decode results. MAGVLT's protocol (sec. 4.2) is
N candidates per prompt reranked by CLIP; one candidate is the model alone.

A model that records the layouts it trained (`trained_layouts`, from model.json)
gets only requests of those layouts: of a task's routes the first it trained
runs, and a task with none is refused in one line (mmgen.generation.layouts).
A model without the record (saved before mmgen wrote it) runs every task's
first route, as before.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import torch

from ..batch import Generation, Segment
from ..errors import UserError
from ..progress import progress
from .layouts import next_request, planned_requests, refusal, request_layout
from .task import GenerationTask, Prompt

log = logging.getLogger(__name__)
REFINE_ROWS = 256  # rows refined per call: they share forward passes, and memory stays bounded


class GenerationPipeline:
    """Runs generation tasks with one model (put in eval mode), its tokenizers (by modality) and a sampler."""

    def __init__(
        self,
        *,
        model: Any,
        tokenizers: Mapping[str, Any],
        sampler: Any,
        device: str | torch.device = "cpu",
        show_progress: bool = True,
    ) -> None:
        self.model = model
        self.tokenizers = tokenizers
        self.sampler = sampler
        self.device = torch.device(device)
        self.show_progress = show_progress
        # The layouts the model trained (a TrainedLayouts), or None: unknown, every layout allowed.
        self.trained = getattr(model, "trained_layouts", None)
        if hasattr(model, "trained_layouts") and self.trained is None:  # loaded, but saved without the record
            log.info("the model records no trained layouts (saved before mmgen wrote them): every layout is allowed")
        if hasattr(model, "eval"):
            model.eval()

    def run(
        self,
        task: GenerationTask,
        prompts: Sequence[Prompt],
        *,
        candidates: int = 1,
        reranker: Any = None,
        refiner: Any = None,
        seed: int = 0,
        batch_size: int = 16,
    ) -> list[Generation]:
        """One Generation per prompt; the same seed, prompts and batch size give the same outputs."""
        self.check(task, prompts, candidates=candidates, reranker=reranker, refiner=refiner)
        task = self.route(task)
        self.warn_untrained_branches(task)
        if not prompts:
            return []
        generator = torch.Generator(device=self.device).manual_seed(seed)
        per_batch = max(1, batch_size // candidates)
        chosen = []
        with progress(
            total=len(prompts), desc=f"generate {task.name}", unit="prompt", enabled=self.show_progress
        ) as bar:
            for start in range(0, len(prompts), per_batch):
                batch = prompts[start : start + per_batch]
                chosen.append(self._sample(task, batch, candidates, reranker, generator=generator))
                bar.update(len(batch))
        inputs, outputs, known = (_concat([c[part] for c in chosen]) for part in range(3))
        if refiner is not None:
            refined = self._refine(refiner, inputs, outputs)
            # A refiner improves what was generated: tokens the task gave (a prefix to complete) stay as given.
            outputs = {m: _keep_known(outputs[m], refined[m], known[m]) for m in refined}
        return self._generations(task, prompts, outputs)

    def check(
        self, task: GenerationTask, prompts: Sequence[Prompt], *, candidates: int, reranker: Any, refiner: Any = None
    ) -> None:
        """Errors a run would meet, found before any sampling."""
        if candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {candidates}")
        if candidates > 1 and reranker is None:
            raise ValueError(f"task {task.name!r}: {candidates} candidates per prompt need a reranker")
        if reranker is not None:
            missing = set(reranker.modalities) - {*task.needs, *task.makes}
            if missing:
                raise ValueError(
                    f"task {task.name!r} has no {sorted(missing)} for the {reranker.name!r} reranker to score"
                    f" (it gives {list(task.needs)} and makes {list(task.makes)})"
                )
        if refiner is not None:
            unmade = set(refiner.refines) - set(task.makes)
            missing = set(refiner.modalities) - {*task.needs, *task.makes}
            if unmade or missing:
                raise ValueError(
                    f"task {task.name!r} cannot feed the {refiner.name!r} refiner: it refines {list(refiner.refines)}"
                    f" and reads {list(refiner.modalities)}; the task gives {list(task.needs)} and makes {list(task.makes)}"
                )
        for modality in (*task.needs, *task.makes):
            if modality not in self.tokenizers:
                raise ValueError(f"task {task.name!r} uses modality {modality!r}, which has no tokenizer here")
        for prompt in prompts:
            absent = [m for m in task.needs if prompt.items.get(m) is None]
            if absent:
                raise ValueError(f"task {task.name!r} needs {absent} in every prompt; prompt {prompt.key!r} has none")
        self.route(task)

    def route(self, task: GenerationTask) -> GenerationTask:
        """The first of the task's routes that the sampler can run and whose every layout the model trained.

        A model that records no layouts gets the first route. Raises UserError with the first route's problem
        (the missing training and the remedy, or what the sampler cannot do) when no route qualifies.
        """
        routes = task.routes() if hasattr(task, "routes") else [task]
        if self.trained is None:
            return routes[0]
        first_problem = None
        for route in routes:
            requests = planned_requests(route, self.model.token_space)
            problem = next(filter(None, (self._problem(task, request) for request in requests)), None)
            if problem is None:
                if first_problem is not None:
                    steps = " then ".join(f"`{request_layout(request)}`" for request in requests)
                    log.info("task %r runs as %s, as its first route cannot: %s", task.name, steps, first_problem)
                return route
            first_problem = first_problem or problem
        raise UserError(first_problem)

    def warn_untrained_branches(self, task: GenerationTask) -> None:
        """One warning per task when the sampler's extra passes (guidance's unconditional pass) show the model a
        layout it never trained: the samples still come, but lean on an untrained branch."""
        branches = getattr(self.sampler, "branch_requests", None)
        if self.trained is None or branches is None:
            return
        space = self.model.token_space
        for request in planned_requests(task, space):
            for branch in branches(request, space=space):
                layout = request_layout(branch)
                missing = self.trained.missing(layout)
                if missing is not None:
                    log.warning(
                        "task %r: guidance's unconditional pass shows the model `%s`, which it never trained: %s;"
                        " remedy: %s, or guidance scale 0",
                        task.name,
                        layout,
                        missing.what,
                        missing.remedy,
                    )
                    return

    def _problem(self, task: GenerationTask, request: Any) -> str | None:
        """Why `request` cannot run: the sampler refuses it (a sampler's optional `check`), or the model never
        trained its layout; None when it can."""
        check = getattr(self.sampler, "check", None)
        if check is not None:
            try:
                check(request)
            except UserError as exc:
                return f"task {task.name!r}: {exc}"
        if self.trained is None:
            return None
        layout = request_layout(request)
        missing = self.trained.missing(layout)
        return None if missing is None else refusal(task.name, layout, missing, instead=getattr(task, "instead", ()))

    def _sample(
        self,
        task: GenerationTask,
        prompts: Sequence[Prompt],
        candidates: int,
        reranker: Any,
        *,
        generator: torch.Generator,
    ) -> tuple[dict[str, Segment], dict[str, Segment], dict[str, Segment]]:
        """One batch: every prompt `candidates` times, sampled, then each prompt's best row kept.

        Returns the encoded inputs, the outputs, and per output the tokens the request gave (as 0/1 segments).
        """
        rows = [p for p in prompts for _ in range(candidates)]
        inputs = self._encode(task, rows)
        space, batch = self.model.token_space, len(rows)
        made: dict[str, Segment] = {}
        known: dict[str, Segment] = {}
        request = task.request(inputs, batch=batch, space=space, device=self.device)
        while request is not None:
            if self.trained is not None and (problem := self._problem(task, request)):
                raise UserError(problem)
            try:
                result = self.sampler.generate(self.model, request, generator=generator)
            except UserError as exc:  # a request this sampler refuses: the sampler cannot know which task made it
                raise UserError(f"task {task.name!r}: {exc}") from None
            targets = [part for part in request.segments if part.target]
            for segment, part in zip(result.segments, targets):
                made[segment.modality] = segment
                known[segment.modality] = Segment(
                    modality=segment.modality, tokens=part.known.long(), lengths=segment.lengths
                )
            # A later request may read what this one made (T2IT captions its own image).
            request = next_request(task, inputs, made, batch=batch, space=space, device=self.device)
        # What a route makes on the way (an inpainting's caption) is not an output.
        outputs = {m: s for m, s in made.items() if m in task.makes}
        known = {m: known[m] for m in outputs}
        if candidates == 1:
            return inputs, outputs, known
        # MAGVLT sec. 4.2: the best of N by the reranker's score of each (given or generated) pair.
        scores = reranker.scores({**inputs, **outputs})
        keep = best_in_groups(scores, candidates=candidates).to(self.device)
        return _select(inputs, keep), _select(outputs, keep), _select(known, keep)

    def _refine(self, refiner: Any, inputs: dict[str, Segment], outputs: dict[str, Segment]) -> dict[str, Segment]:
        """Every prompt's chosen outputs, REFINE_ROWS at a time: the refiner's passes batch across prompts."""
        rows = next(iter(outputs.values())).batch_size
        parts = []
        with progress(total=rows, desc=f"refine ({refiner.name})", unit="row", enabled=self.show_progress) as bar:
            for start in range(0, rows, REFINE_ROWS):
                window = slice(start, start + REFINE_ROWS)
                parts.append(refiner.refine(_select(inputs, window), _select(outputs, window)))
                bar.update(min(REFINE_ROWS, rows - start))
        return _concat(parts)

    def _encode(self, task: GenerationTask, rows: Sequence[Prompt]) -> dict[str, Segment]:
        encoded = {}
        for modality in task.needs:
            items = [p.items[modality] for p in rows]
            if torch.is_tensor(items[0]):
                items = torch.stack(items)
            encoded[modality] = self.tokenizers[modality].encode(items).to(self.device)
        return encoded

    def _generations(
        self, task: GenerationTask, prompts: Sequence[Prompt], outputs: dict[str, Segment]
    ) -> list[Generation]:
        made = {m: task.finish(m, self._present(m, self.tokenizers[m].decode(s.to("cpu")))) for m, s in outputs.items()}
        extra = task.describe()
        return [
            Generation(
                task=task.name,
                key=prompt.key,
                inputs={**{m: self._present(m, [prompt.items[m]])[0] for m in task.needs}, **extra},
                outputs={m: items[i] for m, items in made.items()},
                reference=dict(prompt.reference),
            )
            for i, prompt in enumerate(prompts)
        ]

    def _present(self, modality: str, items: list[Any]) -> list[Any]:
        """Items as a Generation holds them: the tokenizer's `present` (pictures as numpy [H, W, 3]), if it has one."""
        present = getattr(self.tokenizers[modality], "present", None)
        return [present(item) for item in items] if present is not None else list(items)


def best_in_groups(scores: torch.Tensor, *, candidates: int) -> torch.Tensor:
    """Row index of the highest score in each consecutive group of `candidates` rows (the first on ties)."""
    if scores.shape[0] % candidates:
        raise ValueError(f"{scores.shape[0]} rows do not split into groups of {candidates} candidates")
    starts = torch.arange(0, scores.shape[0], candidates, device=scores.device)
    return scores.view(-1, candidates).argmax(dim=1) + starts


def _keep_known(sampled: Segment, refined: Segment, known: Segment) -> Segment:
    """The refined segment with the request's known tokens put back."""
    tokens = torch.where(known.tokens.bool(), sampled.tokens, refined.tokens)
    return Segment(modality=refined.modality, tokens=tokens, lengths=refined.lengths)


def _select(segments: Mapping[str, Segment], index: torch.Tensor | slice) -> dict[str, Segment]:
    return {m: s.select(index) for m, s in segments.items()}


def _concat(batches: Sequence[Mapping[str, Segment]]) -> dict[str, Segment]:
    """Batches of segments (the same modalities each) joined row-wise."""
    return {
        m: Segment(
            modality=m,
            tokens=torch.cat([b[m].tokens for b in batches]),
            lengths=torch.cat([b[m].lengths for b in batches]),
        )
        for m in batches[0]
    }
