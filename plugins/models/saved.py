"""A trained model on disk: `weights.pt` (a plain state_dict) and `model.json` (its Spec and token space).

`load_trained_model(directory, registry)` rebuilds it with no other artefact:
the token space travels with the weights, so ids always mean what they meant
in training.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import torch

from mmgen.api import JointTokenSpace, Spec, TokenSpace, atomic_write_bytes, atomic_write_text, structure_spec, to_data

WEIGHTS_FILE = "weights.pt"
DESCRIPTION_FILE = "model.json"
FORMAT = 1

# Model options added after models were first saved, each with the value that keeps an older
# model.json (one without it) meaning what it was trained with; a newer file always names it.
OLD_FILE_DEFAULTS: dict[str, Any] = {
    "mask_positions": "modality",  # before it, a MASK got its modality's position only
}


def space_to_data(space: JointTokenSpace) -> dict[str, Any]:
    return to_data(space)


def space_from_data(data: Mapping[str, Any]) -> JointTokenSpace:
    return JointTokenSpace(
        spaces=[TokenSpace(**{**s, "shape": tuple(s["shape"])}) for s in data["spaces"]],
        extra_specials=tuple(data["extra_specials"]),
    )


def save_trained_model(
    directory: Path, *, state_dict: Mapping[str, torch.Tensor], spec: Spec, token_space: JointTokenSpace
) -> None:
    """Write the weights, then the description (each atomically)."""
    directory = Path(directory)
    buffer = io.BytesIO()
    torch.save({name: tensor.detach().cpu() for name, tensor in state_dict.items()}, buffer)
    atomic_write_bytes(directory / WEIGHTS_FILE, buffer.getvalue())
    description = {"format": FORMAT, "model": to_data(spec), "token_space": space_to_data(token_space)}
    atomic_write_text(directory / DESCRIPTION_FILE, json.dumps(description, indent=2))


def with_old_file_defaults(data: Any, registry: Any) -> Any:
    """`data` (a saved model's spec) with the OLD_FILE_DEFAULTS its model's Config has and `data` lacks."""
    if not isinstance(data, Mapping) or not isinstance(data.get("use"), str):
        return data  # structure_spec says what is wrong
    try:
        config = registry.get("models", data["use"]).Config
    except KeyError:
        return data  # not registered: structure_spec says so
    fields = attrs.fields_dict(config) if attrs.has(config) else {}
    return {**{k: v for k, v in OLD_FILE_DEFAULTS.items() if k in fields}, **data}


def saved_spec(directory: Path, registry: Any) -> tuple[Spec, JointTokenSpace]:
    """The Spec and token space a saved model was built with (its model.json)."""
    description_path = Path(directory) / DESCRIPTION_FILE
    if not description_path.is_file():
        raise FileNotFoundError(f"no trained model in {directory}: {DESCRIPTION_FILE} is missing")
    description = json.loads(description_path.read_text(encoding="utf-8"))
    if description.get("format") != FORMAT:
        raise ValueError(f"{description_path}: unknown format {description.get('format')!r} (expected {FORMAT})")
    space = space_from_data(description["token_space"])
    spec = structure_spec(
        "models", with_old_file_defaults(description["model"], registry), path="model", registry=registry
    )
    return spec, space


def load_trained_model(directory: Path, registry: Any, *, device: str | torch.device = "cpu") -> Any:
    """The model saved in `directory`, on `device`, in eval mode."""
    directory = Path(directory)
    spec, space = saved_spec(directory, registry)
    model = registry.build(spec, token_space=space, tokenizers=None)  # rebuilt for its saved weights
    state = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval()
