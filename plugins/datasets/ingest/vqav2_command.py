"""`mmgen data ingest vqav2`: a VQAv2 questions file, its annotations and the image folder into a store.

Prints one line per skipped item (`skipped <file> <index>[, question_id <id>]: <reason>`, over every run into
the store, so a resumed ingest shows them all), then the ingest summary with counts per reason.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..cli import max_pixels_option

FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def skip_lines(store: Path) -> list[str]:
    """One line per skipped item of the store: where it came from and why."""
    from ..lmdb_store import LmdbStore

    return [
        f"skipped {issue.get('source') or key}: {reason}"
        for key, issue in LmdbStore(store).issues()
        if issue["status"] == "skipped"
        for reason in issue["reasons"]
    ]


@click.command("vqav2")
@click.option("--questions", required=True, type=FILE, help="v2_OpenEnded_mscoco_<subtype>_questions.json")
@click.option("--annotations", required=True, type=FILE, help="v2_mscoco_<subtype>_annotations.json")
@click.option("--images", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The store to write (a folder).")
@click.option("--subtype", help="Names images COCO_<subtype>_<12-digit id>.jpg [default: the questions' data_subtype]")
@click.option("--image-map", type=FILE, help="A JSON {image_id: file name} to use instead of COCO file names.")
@max_pixels_option
def ingest_vqav2(
    questions: Path,
    annotations: Path,
    images: Path,
    out: Path,
    subtype: str | None,
    image_map: Path | None,
    max_pixels: int,
) -> None:
    """VQAv2: questions, annotations (ten answers each) and the COCO images; one record per question."""
    import os

    from .pipeline import ingest
    from .vqav2 import VqaFileError, vqav2_candidates

    try:
        candidates = vqav2_candidates(questions, annotations, images, subtype=subtype, image_map=image_map)
    except VqaFileError as exc:
        raise click.ClickException(str(exc)) from None
    report = ingest(
        candidates, out, total=len(candidates), max_pixels=max_pixels, progress=not os.environ.get("MMGEN_NO_PROGRESS")
    )
    for line in skip_lines(out) + report.lines():
        click.echo(line)
