"""Validators for attrs config fields, shared by every component.

    steps: int = attrs.field(default=10, validator=positive)

Each raises a `FieldError` (a ValueError) naming the field, which the recipe
loader reports at that field's own YAML path (`stages.train.trainer.steps:
must be > 0, got -1`). `existing_file` and `existing_dir` find a missing input
when the recipe loads: before any stage runs or a tracker run opens.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class FieldError(ValueError):
    """A validator's complaint about one field: the recipe loader reports it at that field's YAML path."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def positive(_instance: Any, attribute: Any, value: float) -> None:
    if value <= 0:
        raise FieldError(attribute.name, f"must be > 0, got {value}")


def non_negative(_instance: Any, attribute: Any, value: float) -> None:
    if value < 0:
        raise FieldError(attribute.name, f"must be >= 0, got {value}")


def probability(_instance: Any, attribute: Any, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise FieldError(attribute.name, f"must be in [0, 1], got {value}")


def positive_or_none(_instance: Any, attribute: Any, value: float | None) -> None:
    if value is not None and value <= 0:
        raise FieldError(attribute.name, f"must be > 0 or null, got {value}")


def positive_values(_instance: Any, attribute: Any, value: Any) -> None:
    """Every value of a mapping (or item of a sequence) > 0."""
    items = value.items() if hasattr(value, "items") else enumerate(value)
    for key, item in items:
        if item <= 0:
            raise FieldError(f"{attribute.name}.{key}", f"must be > 0, got {item}")


def existing_file(_instance: Any, attribute: Any, value: str | None) -> None:
    """A path (or null) naming a file that exists now; read, like the stages read it, from the working directory."""
    _check_path(attribute.name, value, want_dir=False)


def existing_dir(_instance: Any, attribute: Any, value: str | None) -> None:
    """A path (or null) naming a folder that exists now; read, like the stages read it, from the working directory."""
    _check_path(attribute.name, value, want_dir=True)


def _check_path(field: str, value: str | None, *, want_dir: bool) -> None:
    if value is None:
        return
    path = Path(value)
    what = "folder" if want_dir else "file"
    if not path.exists():
        problem = f"no {what} at {str(value)!r}"
    elif path.is_dir() != want_dir:
        problem = f"{str(value)!r} is a {'file' if want_dir else 'folder'}, not a {what}"
    else:
        return
    raise FieldError(field, problem + relative_note(path))


def relative_note(path: Path) -> str:
    """Where a relative path was looked for: the stages open paths as given, from the working directory."""
    return "" if path.is_absolute() else f" (a relative path is read from the working directory, {os.getcwd()})"
