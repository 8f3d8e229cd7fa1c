"""Training and generation tasks: which modalities are context and which are generated."""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class Task:
    """A layout `[BOC] context... [BOG] target...`; the order says the task (no task token).

    MAGVLT: T2I = context (text,), target (image,); I2T = (image,) -> (text,);
    IT2IT = (image,) -> (text,) with `mask_context`, so both modalities are masked.
    `full_length` (training only): variable-length segments count their padding
    as tokens to predict, so generation may give a text more slots than it needs
    and read it up to its first end-of-text (VQA: the answer after a known question).
    """

    name: str
    context: tuple[str, ...] = attrs.field(converter=tuple, default=())
    target: tuple[str, ...] = attrs.field(converter=tuple)
    mask_context: bool = False
    full_length: bool = False

    def __attrs_post_init__(self) -> None:
        if not self.target:
            raise ValueError(f"task {self.name!r}: needs at least one target modality")

    @property
    def modalities(self) -> tuple[str, ...]:
        return (*self.context, *self.target)
