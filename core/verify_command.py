"""`mmgen verify RUN_DIR`: check every artefact of a run against the content hashes recorded with it.

A finished stage folder is checked file by file against its DONE record; an
unfinished one (a stage that was interrupted) has its checkpoints checked
against the `.sha256` beside each, since a resume would read them.
"""

from __future__ import annotations

from pathlib import Path

import click

from . import stage_folder
from .errors import ArtefactError, UserError
from .integrity import SIDECAR_SUFFIX, check_sidecar


def stage_folders(path: Path) -> list[Path]:
    """The stage folders at `path`: a run's workdir, its artefacts/ folder, or one stage folder."""
    if (path / stage_folder.DONE_FILE).is_file():
        return [path]
    root = path / stage_folder.ARTEFACTS if (path / stage_folder.ARTEFACTS).is_dir() else path
    found = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise UserError(
            f"{path}: no stage folders here (give a run's workdir, its artefacts/ folder or a stage folder)"
        )
    return found


def check_folder(folder: Path) -> tuple[str, str]:
    """(state, detail) of one stage folder: state is ok, unfinished, corrupt or unverifiable."""
    if not stage_folder.is_done(folder):
        return check_unfinished(folder)
    try:
        done = stage_folder.verify(folder)
    except ArtefactError as exc:
        state = "unverifiable" if "without content hashes" in str(exc) else "corrupt"
        return state, str(exc)
    extra = stage_folder.unrecorded_files(folder, done)
    detail = f"{len(done['files'])} files match"
    if extra:
        detail += f"; {len(extra)} added after it finished, not checked: {', '.join(extra[:3])}"
    return "ok", detail


def check_unfinished(folder: Path) -> tuple[str, str]:
    hashed = sorted(p.with_name(p.name.removesuffix(SIDECAR_SUFFIX)) for p in folder.rglob(f"*{SIDECAR_SUFFIX}"))
    hashed = [p for p in hashed if p.is_file()]
    for path in hashed:
        try:
            check_sidecar(path, remedy="delete it; a resumed run starts from the checkpoint before it")
        except ArtefactError as exc:
            return "corrupt", str(exc)
    return "unfinished", f"not marked done; {len(hashed)} hashed files (checkpoints) match"


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--record",
    is_flag=True,
    help="Record content hashes in finished folders that have none (made before mmgen 0.3); only if you trust them.",
)
def verify(run_dir: Path, record: bool) -> None:
    """Check every artefact under RUN_DIR (a workdir, or one stage folder) against its recorded hashes.

    Exit status 0 when everything matches, 1 when a file is corrupt, missing or unverifiable.
    """
    bad = 0
    for folder in stage_folders(run_dir):
        state, detail = check_folder(folder)
        if state == "unverifiable" and record:
            done = stage_folder.record_hashes(folder)
            state, detail = "recorded", f"hashes of {len(done['files'])} files recorded"
        bad += state in ("corrupt", "unverifiable")
        click.echo(f"{state:<12} {folder.name}  {detail}")
    if bad:
        click.echo(f"{bad} stage folder(s) failed verification", err=True)
        raise SystemExit(1)
