"""The `fid` metric: the Frechet distance between generated and reference pictures' features, per task.

Each image-making task (T2I, ...) is compared with its references: the pictures of the records its
prompts came from (read from the data stage), or every picture in `reference_dir`. The features come
from the extractor the config names; results are `<task>/fid_<extractor>` and `<task>/n`, so a number is
only ever compared with numbers from the same network. FID from a few hundred pictures is biased upwards
(Chong & Forsyth 2020); compare runs at equal sizes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Sequence

import attrs
import numpy as np
from PIL import Image

from mmgen.api import FieldError, Generation, UserError, existing_dir, existing_file, is_picture, positive, upstream

from .frechet import frechet_distance_of
from .references import record_picture, records_by_key

EXTRACTORS = ("inception", "pixels")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def known_extractor(_instance: Any, attribute: Any, value: str) -> None:
    if value not in EXTRACTORS:
        raise FieldError(attribute.name, f"unknown extractor {value!r}; choose one of {', '.join(EXTRACTORS)}")


class Fid:
    name: ClassVar[str] = "fid"

    @attrs.frozen(kw_only=True)
    class Config:
        # inception: the standard FID network (pip install 'mmgen[fid]', or inception_path); pixels: raw pixels
        extractor: str = attrs.field(default="inception", validator=known_extractor)
        inception_path: str | None = attrs.field(default=None, validator=existing_file)  # a TorchScript file
        pixels_size: int = attrs.field(default=8, validator=positive)
        reference_dir: str | None = attrs.field(default=None, validator=existing_dir)  # else the data stage
        data_stage: str | None = upstream("data")
        split: str = "test"  # the data stage's split the prompts came from (the generate stage's `split`)
        image_modality: str = "image"
        batch_size: int = attrs.field(default=32, validator=positive)

    def __init__(
        self,
        *,
        extractor: Callable[[], Any],
        references: Callable[[Sequence[Generation]], dict[str, list[np.ndarray]]],
        image_modality: str = "image",
    ) -> None:
        """`extractor` makes the feature extractor on first use; `references` gives each task's reference pictures."""
        self.make_extractor, self.references, self.image_modality = extractor, references, image_modality
        self._extractor: Any = None

    @classmethod
    def from_config(cls, config: Config, *, inputs: Any = None, device: str = "cpu", **_deps: Any) -> Fid:
        def extractor() -> Any:
            from .extractors import InceptionExtractor, PixelExtractor

            if config.extractor == "pixels":
                return PixelExtractor(size=config.pixels_size)
            return InceptionExtractor.from_file(config.inception_path, device=device, batch_size=config.batch_size)

        def references(generations: Sequence[Generation]) -> dict[str, list[np.ndarray]]:
            if config.reference_dir is not None:
                pictures = folder_pictures(Path(config.reference_dir))
                return {g.task: pictures for g in generations}
            records = records_by_key(
                inputs,
                stage=config.data_stage,
                split=config.split,
                keys=[g.key for g in generations],
                metric="fid",
                instead="reference_dir",
            )
            found: dict[str, list[np.ndarray]] = {}
            for generation in generations:
                found.setdefault(generation.task, []).append(record_picture(records[generation.key]))
            return found

        return cls(extractor=extractor, references=references, image_modality=config.image_modality)

    def compute(self, generations: Iterable[Generation]) -> dict[str, float]:
        made = [g for g in generations if is_picture(g.outputs.get(self.image_modality))]
        if not made:
            return {}
        by_task: dict[str, list[np.ndarray]] = {}
        for generation in made:
            by_task.setdefault(generation.task, []).append(generation.outputs[self.image_modality])
        for task, pictures in by_task.items():
            if len(pictures) < 2:
                raise UserError(f"fid: task {task} made {len(pictures)} picture; the Frechet distance needs at least 2")
        references = self.references(made)
        if self._extractor is None:
            self._extractor = self.make_extractor()
        extractor = self._extractor
        results: dict[str, float] = {}
        for task, pictures in sorted(by_task.items()):
            if len(references[task]) < 2:
                raise UserError(f"fid: {len(references[task])} reference picture(s) for {task}; needs at least 2")
            try:
                distance = frechet_distance_of(extractor.features(pictures), extractor.features(references[task]))
            except ValueError as exc:
                raise UserError(f"fid: {task}: {exc}") from None
            results[f"{task}/fid_{extractor.label}"] = distance
            results[f"{task}/n"] = float(len(pictures))
        return results


def folder_pictures(folder: Path) -> list[np.ndarray]:
    """Every picture directly in `folder`, by name, as uint8 [H, W, 3]."""
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in PICTURE_SUFFIXES)
    pictures = []
    for path in paths:
        with Image.open(path) as picture:
            pictures.append(np.asarray(picture.convert("RGB")))
    return pictures
