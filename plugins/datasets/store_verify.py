"""Checking a store against its own checksums (`mmgen data verify`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import attrs

from .lmdb_store import CHECKSUM_MODULUS, KEY_PREFIX, RECORD_PREFIX, LmdbStore, StoreError, split_value


@attrs.frozen(kw_only=True)
class VerifyReport:
    """What `verify_store` found; `problems` is empty for a sound store."""

    path: Path
    records: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_store(path: Path | str) -> VerifyReport:
    """Re-hash every record; compare digests, counts and the aggregate checksum with the header."""
    store = LmdbStore(path)
    header = store.header
    problems: list[str] = []
    checksum = 0
    seen = 0
    modalities: dict[str, int] = {}
    captions = 0
    with store._env().begin() as txn:
        cursor = txn.cursor()
        found = cursor.set_range(RECORD_PREFIX)
        while found and cursor.key().startswith(RECORD_PREFIX):
            index = int.from_bytes(cursor.key()[1:], "big")
            try:
                digest, info, data = split_value(cursor.value())
                fields = json.loads(info)
            except (StoreError, ValueError) as exc:
                problems.append(f"record {index}: unreadable ({exc})")
                found = cursor.next()
                continue
            if hashlib.sha256(info + data).digest() != digest:
                problems.append(f"record {index} ({fields.get('key')!r}): checksum mismatch")
            if index != seen:
                problems.append(f"record {index}: expected index {seen}")
            checksum = (checksum + int.from_bytes(digest, "big")) % CHECKSUM_MODULUS
            modalities[fields["modality"]] = modalities.get(fields["modality"], 0) + 1
            captions += len(fields["captions"])
            seen += 1
            found = cursor.next()
        keys = sum(1 for _ in _prefixed(txn, KEY_PREFIX))
    if seen != header["count"]:
        problems.append(f"header counts {header['count']} records, found {seen}")
    if keys != seen:
        problems.append(f"{keys} keys indexed for {seen} records")
    if modalities != header["modalities"]:
        problems.append(f"header modality counts {header['modalities']}, found {modalities}")
    if captions != header["captions"]:
        problems.append(f"header counts {header['captions']} captions, found {captions}")
    if f"{checksum:064x}" != header["checksum"]:
        problems.append(f"aggregate checksum {checksum:064x} differs from the header's {header['checksum']}")
    return VerifyReport(path=Path(path), records=seen, problems=tuple(problems))


def _prefixed(txn, prefix: bytes):
    cursor = txn.cursor()
    if not cursor.set_range(prefix):
        return
    for key in cursor.iternext(keys=True, values=False):
        if not key.startswith(prefix):
            return
        yield key
