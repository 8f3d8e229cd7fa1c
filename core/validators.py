"""Validators for attrs config fields, shared by every component.

    steps: int = attrs.field(default=10, validator=positive)

Each raises ValueError naming the field; the recipe loader turns it into an
error with the YAML path.
"""

from __future__ import annotations

from typing import Any


def positive(_instance: Any, attribute: Any, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value}")


def non_negative(_instance: Any, attribute: Any, value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value}")


def probability(_instance: Any, attribute: Any, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be in [0, 1], got {value}")


def positive_or_none(_instance: Any, attribute: Any, value: float | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be > 0 or null, got {value}")


def positive_values(_instance: Any, attribute: Any, value: Any) -> None:
    """Every value of a mapping (or item of a sequence) > 0."""
    items = value.items() if hasattr(value, "items") else enumerate(value)
    for key, item in items:
        if item <= 0:
            raise ValueError(f"{attribute.name}.{key} must be > 0, got {item}")
