"""The records generations were prompted from (by key), read from the data stage a metric declares."""

from __future__ import annotations

import io
from typing import Any, Iterable

import numpy as np
from PIL import Image

from mmgen.api import UserError


def records_by_key(
    inputs: Any, *, stage: str | None, split: str, keys: Iterable[str], metric: str, instead: str
) -> dict[str, Any]:
    """Each key's Record from the data stage `stage`'s `split`; a clear error when there is none to read.

    `instead`: the option that gives references without a data stage, named in that error.
    """
    keys = list(dict.fromkeys(keys))
    if inputs is None or stage is None or stage not in inputs:
        raise UserError(
            f"{metric}: no references: give {metric}.{instead}, or the data stage the prompts came from "
            f"(in a recipe: {metric}.data_stage; with mmgen eval: --stage {stage or 'data'}=DIR)"
        )
    records = inputs.load(stage).records(split)
    get = getattr(records, "get", None)
    found = {key: get(key) for key in keys} if get is not None else {r.key: r for r in records if r.key in keys}
    missing = [key for key in keys if found.get(key) is None]
    if missing:
        raise UserError(
            f"{metric}: {len(missing)} generation(s) have no record in the {stage!r} stage's {split!r} split "
            f"(first: {missing[0]!r}); was it the split they were prompted from? (option {metric}.split)"
        )
    return found


def record_picture(record: Any) -> np.ndarray:
    """A record's stored image as uint8 [H, W, 3]."""
    with Image.open(io.BytesIO(record.data)) as picture:
        return np.asarray(picture.convert("RGB"))
