"""A stage's cache key: the content hash that names its folder.

It covers the stage's resolved config, the key of the stage before it (so a
change upstream reaches everything after), and the name and version of the
package behind every component the stage builds: the stage plugin itself, and
each model, sampler, metric... named in its config, plus mmgen. An upgraded
plugin therefore redoes the stages that use it and nothing else.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import attrs

from .config import Spec, to_data
from .version import __version__

HASH_FORMAT = 2  # bump when the meaning of a stage folder changes (2: every component's package in the key)


def stage_hash(spec: Spec, upstream: str, *, registry: Any) -> str:
    payload = {
        "format": HASH_FORMAT,
        "use": spec.use,
        "config": to_data(spec.config),
        "upstream": upstream,
        "packages": component_packages(spec, registry=registry),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def component_packages(spec: Spec, *, registry: Any) -> list[str]:
    """Sorted "<package> <version>" of mmgen and of the plugin behind `spec` and every component inside it."""
    entry = getattr(registry, "entry", None)
    found = {f"mmgen {__version__}"}
    if entry is not None:  # a bare test registry knows no providers
        for inner in specs_in(spec):
            provider = entry(inner.kind, inner.use).provider
            found.add(f"{provider.package} {provider.version}")
    return sorted(found)


def specs_in(value: Any) -> list[Spec]:
    """`value` (a Spec, structured config or container) and every Spec nested in it, outermost first."""
    if isinstance(value, Spec):
        return [value, *specs_in(value.config)]
    if attrs.has(type(value)):
        return [s for field in attrs.fields(type(value)) for s in specs_in(getattr(value, field.name))]
    if isinstance(value, (list, tuple)):
        return [s for item in value for s in specs_in(item)]
    if isinstance(value, Mapping):
        return [s for item in value.values() for s in specs_in(item)]
    return []
