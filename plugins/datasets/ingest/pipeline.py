"""The ingest loop: checks every candidate, stores the good, logs the rest, resumes cleanly.

Each item ends in the store as a record (possibly with its fixes logged) or as a
skip with its reasons, both under the item's key and committed together with
the header. A rerun after an interruption passes over every key already there,
so nothing is lost or stored twice, and the final counts equal an
uninterrupted run's.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import attrs

from mmgen.api import Record

from ..lmdb_store import LmdbStore, StoreWriter
from .candidate import Candidate
from .caption_text import repair_encoding
from .image_checks import DEFAULT_MAX_PIXELS, BadItem, check_image


@attrs.frozen(kw_only=True)
class IngestReport:
    """Totals of the whole store (all runs) and of this run."""

    store: Path
    records: int
    fixed: int
    skipped: int
    new: int
    already_present: int
    skip_reasons: dict[str, int]
    fix_reasons: dict[str, int]

    def lines(self) -> list[str]:
        lines = [
            f"{self.store}: {self.records} records ({self.fixed} fixed), {self.skipped} skipped",
            f"this run: {self.new} items handled, {self.already_present} already present",
        ]
        for title, reasons in (("skipped", self.skip_reasons), ("fixed", self.fix_reasons)):
            if reasons:
                lines.append(f"{title}:")
                lines.extend(f"  {count:>6}  {reason}" for reason, count in sorted(reasons.items()))
        return lines


def category(reason: str) -> str:
    """'missing image: a.png' -> 'missing image'."""
    return reason.split(":", 1)[0]


def reason_counts(store: LmdbStore) -> tuple[dict[str, int], dict[str, int]]:
    """Per-category counts of skip reasons and of fixes over the store's issue log."""
    skipped: Counter[str] = Counter()
    fixed: Counter[str] = Counter()
    for _, issue in store.issues():
        target = skipped if issue["status"] == "skipped" else fixed
        target.update({category(reason) for reason in issue["reasons"]})
    return dict(skipped), dict(fixed)


def plain_text(value: Any) -> Any:
    """Strings anywhere in `value` made encodable (bytes that were not UTF-8 re-decoded)."""
    if isinstance(value, str):
        return repair_encoding(value)[0]
    if isinstance(value, dict):
        return {plain_text(k): plain_text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_text(v) for v in value]
    return value


def settle(candidate: Candidate, *, max_pixels: int) -> tuple[Record | None, list[str]]:
    """(record, fixes) for a usable item, or (None, reasons) for one to skip."""
    if candidate.problems:
        return None, list(candidate.problems)
    try:
        data = candidate.data if candidate.data is not None else candidate.path.read_bytes()
    except OSError as exc:
        return None, [f"unreadable file: {exc.strerror or exc}"]
    fixes = list(candidate.fixes)
    items = {}
    for modality, raw in {candidate.modality: data, **candidate.more}.items():
        items[modality], notes = settle_item(modality, raw, max_pixels=max_pixels, main=modality == candidate.modality)
        if items[modality] is None:
            return None, notes
        fixes.extend(notes)
    record = Record(
        key=plain_text(candidate.key),
        modality=candidate.modality,
        data=items.pop(candidate.modality),
        captions=candidate.captions,
        meta=plain_text(candidate.meta),
        more=items,
    )
    return record, fixes


def settle_item(modality: str, data: bytes, *, max_pixels: int, main: bool = True) -> tuple[bytes | None, list[str]]:
    """(bytes to store, fixes) for one item of a candidate, or (None, reasons) when it spoils the candidate."""
    named = "" if main else f"{modality} item: "  # an item in `more` is named, so a reason says which one
    if modality == "image":
        try:
            checked = check_image(data, max_pixels=max_pixels)
        except BadItem as exc:
            return None, [f"{named}{exc}"]
        except Exception as exc:  # a decoder failing in a way it does not document is still one bad file
            return None, [f"{named}corrupt or truncated image: {type(exc).__name__}: {exc}"]
        return checked.data, [f"{named}{fix}" for fix in checked.fixes]
    if not data:
        return None, [f"{named}empty file"]
    return data, []


def progress_bar(total: int | None, description: str, enabled: bool):
    """A bar on a terminal, a periodic log line otherwise (mmgen.api.progress)."""
    from mmgen.api import progress

    return progress(total=total, desc=description, unit="item", enabled=enabled)


def ingest(
    candidates: Iterable[Candidate],
    store: Path | str,
    *,
    total: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
    commit_every: int = 64,
) -> IngestReport:
    """Store every candidate's record or its skip reasons; returns the store's totals."""
    store = Path(store)
    new = already = 0
    with StoreWriter(store, commit_every=commit_every) as writer, progress_bar(total, store.name, progress) as bar:
        for candidate in candidates:
            bar.update(1)
            key = plain_text(candidate.key)
            if writer.has(key):
                already += 1
                continue
            new += 1
            record, notes = settle(candidate, max_pixels=max_pixels)
            source = plain_text(candidate.source)
            if record is None:
                issue = {"status": "skipped", "reasons": notes, "fixes": list(candidate.fixes), "source": source}
                writer.skip(key, plain_text(issue))
            else:
                issue = {"status": "fixed", "reasons": notes, "source": source} if notes else None
                writer.add(record, issue=issue)
            bar.set_postfix(stored=writer.count, refresh=False)
    return report_for(store, new=new, already_present=already)


def report_for(store: Path, *, new: int = 0, already_present: int = 0) -> IngestReport:
    reader = LmdbStore(store)
    header = reader.header
    skipped, fixed = reason_counts(reader)
    return IngestReport(
        store=store,
        records=header["count"],
        fixed=header["issues"].get("fixed", 0),
        skipped=header["issues"].get("skipped", 0),
        new=new,
        already_present=already_present,
        skip_reasons=skipped,
        fix_reasons=fixed,
    )
