"""Runs a recipe's stages in order, skipping those whose artefacts are already done.

A stage's folder is `<workdir>/artefacts/<stage>-<hash>` (stage_folder.py), the
hash (stage_key.py) covering the stage's resolved config, the hashes of every
earlier stage and the package version of every component the stage builds, so
a change anywhere upstream (or an upgraded plugin) gives a new folder and a
stale artefact is never read. The folder counts as finished only once it is
marked done (atomically, with the sha256 of every file); an unfinished folder is
reused, so a stage with checkpoints resumes. One process at a time writes a
folder (an advisory lock). Each stage sees only the earlier stages it declares
(`upstream` config fields), as `ctx.inputs`, verified before they are read.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import attrs
import yaml

from . import stage_folder
from .config import declared_inputs
from .errors import UserError
from .recipe import Recipe, RecipeError
from .stage import StageContext, StageInputs
from .stage_key import stage_hash
from .stage_tracker import StageTracker

log = logging.getLogger(__name__)

NEARLY_FULL_BYTES = 1 << 20  # a write that fails with less free than this failed for want of space


@attrs.frozen(kw_only=True)
class StageResult:
    key: str
    use: str
    out_dir: Path
    cached: bool
    seconds: float
    reused: bool = False


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
        except UserError as exc:
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
    tracker.start(run_name=recipe.name, tags={"mmgen.recipe": recipe.name})
    status = "FAILED"
    try:
        results = run_tracked(recipe, registry=registry, tracker=tracker, force=force, reuse=reuse)
        status = "FINISHED"
        return results
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.end(status=status)


def run_tracked(
    recipe: Recipe,
    *,
    registry: Any,
    tracker: Any,
    force: bool = False,
    reuse: Mapping[str, Path] | None = None,
    wait_for_writers: bool = False,
) -> list[StageResult]:
    """The recipe's params and resolved YAML to the started `tracker` run, then its stages. With
    `wait_for_writers` a stage folder another process is writing is waited for (a sweep's variants
    that share it), not an error."""
    resolved = recipe.to_data()
    tracker.log_params(flatten({k: v for k, v in resolved.items() if k != "tracker"}))
    tracker.log_text(yaml.safe_dump(resolved, sort_keys=False), file_name="recipe.yaml")
    reuse = {key: Path(folder) for key, folder in (reuse or {}).items()}
    return _run_stages(recipe, registry=registry, tracker=tracker, force=force, reuse=reuse, wait=wait_for_writers)


def stage_folders(recipe: Recipe, *, registry: Any) -> dict[str, Path]:
    """Each stage's folder as the runner would name it (no reuse): which folders a sweep's variants share."""
    folders, upstream = {}, reused_upstream(recipe)
    for entry in recipe.stages:
        upstream = stage_hash(entry.spec, upstream, registry=registry)
        folders[entry.key] = stage_folder.folder(recipe.header.workdir, entry.key, upstream)
    return folders


def reused_upstream(recipe: Recipe) -> str:
    """What the first stage run is keyed on after the recipe's `reuse:` folders: their hashes, in order."""
    if not recipe.reused:
        return ""
    joined = " ".join(f"{r.key}={r.digest}" for r in recipe.reused)
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


def _run_stages(
    recipe: Recipe, *, registry: Any, tracker: Any, force: bool, reuse: Mapping[str, Path], wait: bool = False
) -> list[StageResult]:
    device = resolve_device(recipe.header.device)
    artefacts: dict[str, Path] = {}
    uses: dict[str, str] = {}
    results = []
    for reused in recipe.reused:
        stage_folder.verify(reused.folder)  # checked like any other folder before a stage reads it
        log.info("stage %s: reusing %s (recipe `reuse:`)", reused.key, reused.folder)
        for name in (reused.key, reused.use):
            artefacts[name], uses[name] = reused.folder, reused.use
        results.append(
            StageResult(key=reused.key, use=reused.use, out_dir=reused.folder, cached=True, seconds=0.0, reused=True)
        )
    upstream = reused_upstream(recipe)
    for entry in recipe.stages:
        start = time.perf_counter()
        if entry.key in reuse:
            out_dir = reuse[entry.key]
            digest = stage_folder.verify(out_dir)["hash"]  # a shipped folder is checked like any other
            cached = True
            log.info("stage %s: reusing %s", entry.key, out_dir)
        else:
            digest = stage_hash(entry.spec, upstream, registry=registry)
            out_dir = stage_folder.folder(recipe.header.workdir, entry.key, digest)
            with stage_folder.writer_lock(out_dir, wait=wait):
                if force and out_dir.exists():
                    shutil.rmtree(out_dir)
                cached = stage_folder.is_done(out_dir)  # read under the lock: another process may just have finished
                if cached:
                    stage_folder.read_done(out_dir)  # an unreadable record is an error, not a finished stage
                    log.info("stage %s: already done in %s", entry.key, out_dir)
                    _replay(entry, out_dir, registry=registry, tracker=tracker)
                else:
                    # Only what the stage declared (checked when the recipe loaded): nothing else is reachable.
                    declared = {key for _, key in declared_inputs(entry.spec.config)}
                    for key in declared:  # every input checked against its recorded hashes before it is read
                        stage_folder.verify(artefacts[key])
                    inputs = StageInputs(
                        {key: artefacts[key] for key in declared},
                        uses={key: uses[key] for key in declared},
                        registry=registry,
                        device=device,
                        reader=f"stage {entry.key!r}",
                    )
                    with disk_full_is_a_user_error(entry.key, out_dir):
                        _run_stage(entry, out_dir, inputs=inputs, recipe=recipe, registry=registry, tracker=tracker)
                        seconds = time.perf_counter() - start
                        stage_folder.mark_done(
                            out_dir, key=entry.key, use=entry.spec.use, digest=digest, seconds=seconds
                        )
                    StageTracker(tracker, key=entry.key).log_metrics({"seconds": seconds})
        upstream = digest
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


def _replay(entry: Any, out_dir: Path, *, registry: Any, tracker: Any) -> None:
    """A done stage whose plugin can `replay` its results logs them to this run too, so every run (a sweep's
    variant whose stages an earlier run finished) carries its metrics."""
    replay = getattr(registry.get("stages", entry.spec.use), "replay", None)
    if replay is not None:
        stage_folder.verify(out_dir)
        replay(out_dir, tracker=StageTracker(tracker, key=entry.key))


@contextlib.contextmanager
def disk_full_is_a_user_error(key: str, out_dir: Path) -> Iterator[None]:
    """A full disk is one clear line, not a traceback: nothing is lost, the stage resumes once there is room.

    Most writers raise OSError(ENOSPC); some (torch.save) wrap it in their own error, so a failure
    on a filesystem with (almost) no space left is taken to be that too.
    """
    try:
        yield
    except Exception as exc:
        if isinstance(exc, UserError):
            raise
        full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
        if not (full or _nearly_full(out_dir)):
            raise
        where = getattr(exc, "filename", None) or out_dir
        raise UserError(
            f"stage {key!r}: no space left on the device writing {where}; free some space and run the same "
            "command again (finished stages are kept, this one resumes)"
        ) from None


def _nearly_full(path: Path) -> bool:
    try:
        return shutil.disk_usage(path).free < NEARLY_FULL_BYTES
    except OSError:
        return False


def _run_stage(entry: Any, out_dir: Path, *, inputs: StageInputs, recipe: Recipe, registry: Any, tracker: Any) -> None:
    """Build the stage plugin and run it in `out_dir`, which it may find half-written by a killed run."""
    log.info("stage %s: running in %s", entry.key, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = registry.build(entry.spec)
    context = StageContext(
        out_dir=out_dir,
        inputs=inputs,
        registry=registry,
        tracker=StageTracker(tracker, key=entry.key),  # everything the stage logs is named under its key
        seed=recipe.header.seed,
        device=resolve_device(recipe.header.device),
    )
    stage.run(context)
