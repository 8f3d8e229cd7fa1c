"""Task prompts from dataset records (the held-out test split) and from the command line."""

from __future__ import annotations

from typing import Any, Sequence

from mmgen.batch import Record

from .regions import Box
from .tasks import Prompt, task_spec


def half_words(text: str) -> str:
    """The first half of a caption's words (at least one): IT2T's partial text to complete."""
    words = text.split()
    return " ".join(words[: max(1, len(words) // 2)])


def prompts_from_records(
    task: str, records: Sequence[Record], *, image_tokenizer: Any, region: Box | None = None
) -> list[Prompt]:
    """One prompt per record: its first caption (Shapes: the evaluation template) and its image.

    IT2I edits each image under the next record's caption; IT2T completes the
    first half of the caption's words. The reference is the record's meta (the
    scene, for Shapes), which metrics compare against.
    """
    spec = task_spec(task)
    prompts = []
    for index, record in enumerate(records):
        text = record.captions[0] if record.captions else None
        if task == "it2i":
            text = records[(index + 1) % len(records)].captions[0]
        elif task == "it2t" and text is not None:
            text = half_words(text)
        image = image_tokenizer.load_item(record.data) if "image" in spec.needs else None
        prompts.append(
            Prompt(
                key=record.key,
                text=text if "text" in spec.needs else None,
                image=image,
                region=region,
                reference=dict(record.meta),
            )
        )
    return prompts


def command_line_prompts(
    task: str, *, texts: Sequence[str], images: Sequence[Any], count: int | None = None, region: Box | None = None
) -> list[Prompt]:
    """Prompts from given texts and images; a single text or image is paired with every one of the other."""
    spec = task_spec(task)
    texts = list(texts) if "text" in spec.needs else []
    images = list(images) if "image" in spec.needs else []
    for role, given in (("text", texts), ("image", images)):
        if role in spec.needs and not given:
            raise ValueError(f"task {task!r} needs at least one {role} (--{'prompt' if role == 'text' else 'image'})")
    sizes = {len(texts), len(images)} - {0, 1}
    if len(sizes) > 1:
        raise ValueError(f"got {len(texts)} texts and {len(images)} images; give equal numbers, or one of either")
    n = max(len(texts), len(images), 1) if spec.needs else (count or 1)
    return [
        Prompt(
            key=f"{task}-{i:04d}",
            text=texts[i % len(texts)] if texts else None,
            image=images[i % len(images)] if images else None,
            region=region,
        )
        for i in range(n)
    ]
