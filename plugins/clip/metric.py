"""CLIP score of generations, from the clip stage's model (torchmetrics' definition: 100 max(cos, 0))."""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Iterable, Mapping

import attrs
import numpy as np
import torch

from mmgen.api import Generation, upstream

from .model import ClipModel
from .reranker import ClipReranker


class ClipScore:
    """Mean 100 * max(cos, 0) between each generation's image and text, per task and overall.

    A generation's pair is its generated image or text where it made one, else
    the given one (T2I: generated image vs prompt; I2T: input image vs caption).
    Images are scored through their VQ tokens (re-encoded from pixels).
    """

    name: ClassVar[str] = "clip_score"

    @attrs.frozen(kw_only=True)
    class Config:
        clip_stage: str = upstream("clip")
        tokenizers_stage: str = upstream("tokenizers")
        image_modality: str = "image"
        text_modality: str = "text"
        batch_size: int = 64

    def __init__(
        self,
        *,
        model: ClipModel | None = None,
        tokenizers: Mapping[str, Any] | None = None,
        loader: Callable[[], tuple[ClipModel, Mapping[str, Any]]] | None = None,
        image_modality: str = "image",
        text_modality: str = "text",
        batch_size: int = 64,
    ) -> None:
        """Give `model` and `tokenizers`, or a `loader` that returns them on first use."""
        self.model, self.tokenizers, self.loader = model, tokenizers, loader
        self.image_modality, self.text_modality = image_modality, text_modality
        self.batch_size = batch_size

    @classmethod
    def from_config(cls, config: Config, *, inputs: Any, **_deps: Any) -> ClipScore:
        """Loads the clip and tokenizers stages' outputs lazily, on the first `compute`."""

        def load() -> tuple[ClipModel, Mapping[str, Any]]:
            return inputs.load(config.clip_stage), inputs.load(config.tokenizers_stage)

        return cls(
            loader=load,
            image_modality=config.image_modality,
            text_modality=config.text_modality,
            batch_size=config.batch_size,
        )

    def _ready(self) -> ClipReranker:
        if self.model is None:
            if self.loader is None:
                raise ValueError("clip_score has neither a model nor a loader")
            self.model, self.tokenizers = self.loader()
        return ClipReranker(self.model, image_modality=self.image_modality, text_modality=self.text_modality)

    def compute(self, generations: Iterable[Generation]) -> dict[str, float]:
        by_task: dict[str, list] = {}
        for generation in generations:
            pair = self.pair(generation)
            if pair is not None:
                by_task.setdefault(generation.task, []).append(pair)
        if not by_task:
            return {}
        reranker = self._ready()  # the CLIP model loads only when there is something to score
        results, everything = {}, []
        for task, pairs in sorted(by_task.items()):
            scores = torch.cat(
                [
                    self._scores(reranker, [picture_tensor(image) for image, _ in chunk], [text for _, text in chunk])
                    for chunk in (pairs[i : i + self.batch_size] for i in range(0, len(pairs), self.batch_size))
                ]
            )
            results[task] = scores.mean().item()
            everything.append(scores)
        if everything:
            results["all"] = torch.cat(everything).mean().item()
        return results

    def pair(self, generation: Generation) -> tuple[np.ndarray, str] | None:
        """The image and text a generation pairs (generated if made, else given); None if it lacks one."""
        image = generation.outputs.get(self.image_modality, generation.inputs.get(self.image_modality))
        text = generation.outputs.get(self.text_modality, generation.inputs.get(self.text_modality))
        return None if image is None or text is None else (image, text)

    def _scores(self, reranker: ClipReranker, images: list[torch.Tensor], texts: list[str]) -> torch.Tensor:
        """100 max(cos, 0) per (image, text) pair."""
        image = self.tokenizers[self.image_modality].encode(torch.stack(images))
        text = self.tokenizers[self.text_modality].encode(texts)
        return 100 * reranker.pair_scores(image, text).clamp(min=0).cpu()


def picture_tensor(picture: np.ndarray) -> torch.Tensor:
    """numpy uint8 [H, W, 3] -> uint8 [3, H, W] tensor (a copy: arrays read from PNGs are read-only)."""
    return torch.from_numpy(np.array(picture, dtype=np.uint8)).permute(2, 0, 1).contiguous()
