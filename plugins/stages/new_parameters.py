"""Parameters a fine-tuning adds to a pretrained model: only the segment-index table (in-context pairs).

A pretrained model saved without a segment-index embedding (`max_segments: 0`)
gets one when the finetune stage asks for `max_segments`: the model is rebuilt
with the larger option and takes every pretrained tensor unchanged; the one
tensor it lacks, `segments.weight`, starts at zero (rows it had are kept), so
the grown model computes exactly what the pretrained one did until trained.
Any other difference between the two state dicts is an error: this is no
blanket `strict=False`.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch

from mmgen.api import Spec, UserError

SEGMENT_TABLE = "segments.weight"  # the one parameter a grown model may lack (token_transformer.py)


def with_segments(spec: Spec, model: Any, max_segments: int | None, *, registry: Any) -> tuple[Spec, Any]:
    """(spec, model) with a segment table of `max_segments` rows; unchanged for None or the model's own size."""
    if max_segments is None:
        return spec, model
    fields = attrs.fields_dict(type(spec.config))
    if "max_segments" not in fields:
        raise UserError(f"finetune: max_segments: the pretrained {spec.use!r} model has no segment-index embedding")
    current = spec.config.max_segments
    if max_segments == current:
        return spec, model
    if max_segments < current:
        raise UserError(f"finetune: max_segments {max_segments} is below the pretrained model's {current}")
    grown_spec = attrs.evolve(spec, config=attrs.evolve(spec.config, max_segments=max_segments))
    grown = registry.build(grown_spec, token_space=model.token_space, tokenizers=None)
    load_with_segments(grown, model.state_dict())
    return grown_spec, grown.train(model.training)


def load_with_segments(model: Any, pretrained: dict[str, torch.Tensor]) -> None:
    """Load `pretrained` into `model`, which may have a larger (or a new) segment table: new rows start at zero."""
    own = model.state_dict()
    added = sorted(set(own) - set(pretrained) - {SEGMENT_TABLE})
    dropped = sorted(set(pretrained) - set(own))
    if added or dropped:
        raise ValueError(f"pretrained weights differ beyond {SEGMENT_TABLE}: missing {added}, unexpected {dropped}")
    table = torch.zeros_like(own[SEGMENT_TABLE])
    if SEGMENT_TABLE in pretrained:
        old = pretrained[SEGMENT_TABLE]
        table[: old.shape[0]] = old
    model.load_state_dict({**pretrained, SEGMENT_TABLE: table})
