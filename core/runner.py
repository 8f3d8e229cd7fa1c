"""Runs a recipe's stages in order, skipping those whose artefacts are already done.

A stage's folder is `<workdir>/artefacts/<stage>-<hash>` (stage_folder.py), the
hash covering the stage's resolved config, the hashes of every earlier stage
and the version of the package that provides the stage, so a change anywhere
upstream (or an upgrade whose presets or defaults differ) gives a new folder
and a stale artefact is never read. The folder counts as finished only once
it is marked done (atomically); an unfinished folder is reused, so a stage
with checkpoints resumes. Each stage sees only the earlier stages it declares
(`upstream` config fields), as `ctx.inputs`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

import attrs
import yaml

from . import stage_folder
from .config import declared_inputs, to_data
from .recipe import Recipe, RecipeError
from .stage import StageContext, StageInputs
from .stage_tracker import StageTracker

log = logging.getLogger(__name__)

HASH_FORMAT = 1  # bump when the meaning of a stage folder changes


@attrs.frozen(kw_only=True)
class StageResult:
    key: str
    use: str
    out_dir: Path
    cached: bool
    seconds: float
    reused: bool = False


def stage_hash(use: str, config_data: Any, upstream: str, *, version: str = "") -> str:
    payload = {"format": HASH_FORMAT, "use": use, "config": config_data, "upstream": upstream, "version": version}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def provider_version(registry: Any, spec: Any) -> str:
    """"<package> <version>" of the plugin that provides a stage ("" for a registry without providers)."""
    entry = getattr(registry, "entry", None)
    if entry is None:
        return ""
    provider = entry(spec.kind, spec.use).provider
    return f"{provider.package} {provider.version}"


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested recipe data -> {"stages.train.trainer.steps": "100", ...} for tracker params."""
    if isinstance(data, dict):
        items: dict[str, str] = {}
        for key, value in data.items():
            items.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return items
    return {prefix: json.dumps(data) if isinstance(data, list) else str(data)}


def check_reuse(recipe: Recipe, reuse: Mapping[str, Path]) -> None:
    """Each reused folder is a finished folder of the same stage plugin as the recipe's stage of that key."""
    uses = {entry.key: entry.spec.use for entry in recipe.stages}
    for key, folder in reuse.items():
        if key not in uses:
            raise RecipeError(f"--reuse {key}={folder}: the recipe has no stage {key!r} (stages: {', '.join(uses)})")
        try:
            done = stage_folder.read_done(folder)
        except FileNotFoundError as exc:
            raise RecipeError(f"--reuse {key}={folder}: {exc}") from None
        if done["use"] != uses[key]:
            raise RecipeError(f"--reuse {key}={folder}: made by stage {done['use']!r}, the recipe's {key!r} is {uses[key]!r}")


def run_recipe(
    recipe: Recipe,
    *,
    registry: Any,
    force: bool = False,
    tracker: Any = None,
    reuse: Mapping[str, Path] | None = None,
) -> list[StageResult]:
    """Run every stage; returns what each did. The tracker run spans the whole recipe.

    `reuse` maps stage keys to finished folders made elsewhere (shipped
    checkpoints, another workdir): those stages do not run, their folders are
    their outputs, and their own hashes key everything downstream.
    """
    reuse = {key: Path(folder) for key, folder in (reuse or {}).items()}
    check_reuse(recipe, reuse)
    tracker = tracker or registry.build(recipe.header.tracker)
    resolved = recipe.to_data()
    tracker.start(run_name=recipe.name, tags={"mmgen.recipe": recipe.name})
    status = "FAILED"
    try:
        tracker.log_params(flatten({k: v for k, v in resolved.items() if k != "tracker"}))
        tracker.log_text(yaml.safe_dump(resolved, sort_keys=False), file_name="recipe.yaml")
        results = _run_stages(recipe, registry=registry, tracker=tracker, force=force, reuse=reuse)
        status = "FINISHED"
        return results
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.end(status=status)


def _run_stages(
    recipe: Recipe, *, registry: Any, tracker: Any, force: bool, reuse: Mapping[str, Path]
) -> list[StageResult]:
    device = resolve_device(recipe.header.device)
    artefacts: dict[str, Path] = {}
    uses: dict[str, str] = {}
    results = []
    upstream = ""
    for entry in recipe.stages:
        digest = stage_hash(
            entry.spec.use, to_data(entry.spec.config), upstream, version=provider_version(registry, entry.spec)
        )
        out_dir = stage_folder.folder(recipe.header.workdir, entry.key, digest)
        if entry.key in reuse:
            out_dir = reuse[entry.key]
            digest = stage_folder.read_done(out_dir)["hash"]
            log.info("stage %s: reusing %s", entry.key, out_dir)
        upstream = digest
        if force and out_dir.exists() and entry.key not in reuse:
            shutil.rmtree(out_dir)
        start = time.perf_counter()
        cached = stage_folder.is_done(out_dir)
        if cached:
            log.info("stage %s: already done in %s", entry.key, out_dir)
        else:
            log.info("stage %s: running in %s", entry.key, out_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            stage = registry.build(entry.spec)
            # Only what the stage declared (checked when the recipe loaded): nothing else is reachable.
            declared = {key for _, key in declared_inputs(entry.spec.config)}
            inputs = StageInputs(
                {key: artefacts[key] for key in declared},
                uses={key: uses[key] for key in declared},
                registry=registry,
                device=device,
                reader=f"stage {entry.key!r}",
            )
            # Everything the stage logs is named under its key (`train/loss`), as is its time.
            stage_tracker = StageTracker(tracker, key=entry.key)
            context = StageContext(
                out_dir=out_dir,
                inputs=inputs,
                registry=registry,
                tracker=stage_tracker,
                seed=recipe.header.seed,
                device=device,
            )
            stage.run(context)
            seconds = time.perf_counter() - start
            stage_folder.mark_done(out_dir, key=entry.key, use=entry.spec.use, digest=digest, seconds=seconds)
            stage_tracker.log_metrics({"seconds": seconds})
        # Later stages find this one by its key and by its plugin name.
        for name in (entry.key, entry.spec.use):
            if name not in artefacts or name == entry.key:
                artefacts[name], uses[name] = out_dir, entry.spec.use
        results.append(
            StageResult(
                key=entry.key,
                use=entry.spec.use,
                out_dir=out_dir,
                cached=cached,
                seconds=time.perf_counter() - start,
                reused=entry.key in reuse,
            )
        )
    return results
