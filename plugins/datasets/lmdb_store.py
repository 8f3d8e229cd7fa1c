"""One LMDB store format for records of any modality.

Layout of one environment (a folder):
- `H` -> header JSON: format, schema version, record count, per-modality counts,
  caption count, the aggregate checksum, and the ingest issue counts;
- `r` + index (8 bytes, big-endian) -> one record: MAGIC, the SHA-256 of the
  payload, a 4-byte length, the record's JSON (key, modality, captions, meta and,
  for a record with items of further modalities, `more`: their byte counts in
  order), then its source bytes exactly as given (a PNG or JPEG is never
  re-encoded), the main item's first, then each further item's;
- `k` + key -> index, so a key is stored once (resume, duplicate ids);
- `i` + key -> JSON of an ingest issue (a fixed or skipped item and its reasons).

The aggregate checksum is the sum of the record digests mod 2**256, so appending
updates it without rereading. Every write commits records, key index and header
in one transaction: a killed writer leaves a consistent store. The memory map
doubles whenever it is full.

LMDB allows one open environment per file per process and none across fork, so
environments are cached per process and opened lazily on first access; a store
object pickled into a DataLoader worker opens its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any, Iterator

import attrs
import lmdb

from mmgen.api import ArtefactError, Record

FORMAT = "mmgen.lmdb"
SCHEMA_VERSION = 1
MAGIC = b"MMR1"
HEADER_KEY = b"H"
RECORD_PREFIX = b"r"
KEY_PREFIX = b"k"
ISSUE_PREFIX = b"i"
MAX_KEY_BYTES = 400  # LMDB keys are at most 511 bytes; longer record keys are hashed
INITIAL_MAP_SIZE = 1 << 26
CHECKSUM_MODULUS = 1 << 256


class StoreError(ArtefactError):
    """A store that is missing, of another format, or corrupt."""


def record_slot(index: int) -> bytes:
    return RECORD_PREFIX + index.to_bytes(8, "big")


def key_slot(prefix: bytes, key: str) -> bytes:
    raw = key.encode("utf-8")
    if len(raw) > MAX_KEY_BYTES:
        raw = b"#" + hashlib.sha256(raw).digest()
    return prefix + raw


def encode_record(record: Record) -> tuple[bytes, bytes]:
    """(stored value, its digest)."""
    fields = {"key": record.key, "modality": record.modality, "captions": list(record.captions), "meta": record.meta}
    if record.more:  # absent otherwise: a one-item record is stored (and hashed) as before
        fields["more"] = [[modality, len(data)] for modality, data in record.more.items()]
    info = json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    payload = b"".join([record.data, *record.more.values()])
    digest = hashlib.sha256(info + payload).digest()
    return MAGIC + digest + struct.pack(">I", len(info)) + info + payload, digest


def split_value(value: bytes) -> tuple[bytes, bytes, bytes]:
    """(digest, info JSON, data) of a stored record value."""
    if value[:4] != MAGIC:
        raise StoreError("record does not start with the store's magic bytes")
    (length,) = struct.unpack(">I", value[36:40])
    return value[4:36], value[40 : 40 + length], value[40 + length :]


def decode_record(value: bytes) -> Record:
    _, info, data = split_value(value)
    fields = json.loads(info)
    more, stop = {}, len(data)
    for modality, length in reversed(fields.get("more", [])):
        more[modality], stop = data[stop - length : stop], stop - length
    return Record(
        key=fields["key"],
        modality=fields["modality"],
        data=data[:stop],
        captions=fields["captions"],
        meta=fields["meta"],
        more=dict(reversed(more.items())),
    )


def empty_header() -> dict[str, Any]:
    return {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "count": 0,
        "modalities": {},
        "captions": 0,
        "checksum": "0" * 64,
        "issues": {"fixed": 0, "skipped": 0},
    }


def check_header(header: dict[str, Any], path: Path) -> dict[str, Any]:
    if header.get("format") != FORMAT:
        raise StoreError(f"{path}: not an {FORMAT} store (format {header.get('format')!r})")
    if header.get("schema_version") != SCHEMA_VERSION:
        raise StoreError(f"{path}: schema version {header.get('schema_version')} (this mmgen reads {SCHEMA_VERSION})")
    return header


# One environment per path per process (LMDB forbids opening a file twice in a process).
_ENVIRONMENTS: dict[str, tuple[int, bool, lmdb.Environment]] = {}


def environment(path: Path, *, write: bool, map_size: int = INITIAL_MAP_SIZE) -> lmdb.Environment:
    """This process's environment for `path`, opened on first use (writable when asked)."""
    name = str(Path(path).resolve())
    cached = _ENVIRONMENTS.get(name)
    if cached is not None:
        pid, writable, env = cached
        if pid == os.getpid() and (writable or not write):
            return env
        if pid != os.getpid() and writable:
            # Closing or using it here would disturb the parent's reader table.
            raise StoreError(f"{path}: opened for writing before this process forked; close the writer first")
        # A read-only, lock-free handle holds no shared state: closing it (also in a
        # forked child, where LMDB forbids using it) only unmaps this process's view.
        env.close()
        del _ENVIRONMENTS[name]
    if write:
        Path(path).mkdir(parents=True, exist_ok=True)
        env = lmdb.open(name, map_size=map_size, subdir=True, readahead=False, meminit=False)
    else:
        if not (Path(path) / "data.mdb").is_file():
            raise StoreError(f"{path}: no LMDB store here")
        env = lmdb.open(name, readonly=True, lock=False, subdir=True, readahead=False, max_readers=512)
    _ENVIRONMENTS[name] = (os.getpid(), write, env)
    return env


def close_environment(path: Path) -> None:
    cached = _ENVIRONMENTS.pop(str(Path(path).resolve()), None)
    if cached is not None and cached[0] == os.getpid():
        cached[2].close()


@attrs.frozen(kw_only=True)
class Pending:
    """An item waiting for the next commit: a record (value set) and/or an ingest issue."""

    key: str
    value: bytes | None = None
    modalities: tuple[str, ...] = ()
    captions: int = 0
    issue: dict | None = None


class StoreWriter:
    """Appends records (and ingest issues) to a store, skipping keys it already holds.

    Writes are buffered and committed every `commit_every` items; `close()` (or
    leaving the `with` block) commits the rest.
    """

    def __init__(self, path: Path | str, *, commit_every: int = 256, map_size: int = INITIAL_MAP_SIZE) -> None:
        self.path = Path(path)
        self.commit_every = commit_every
        self._env = environment(self.path, write=True, map_size=map_size)
        with self._env.begin() as txn:
            raw = txn.get(HEADER_KEY)
        if raw is None:
            # A store exists from its first open on, even if nothing is ever added.
            raw = json.dumps(empty_header()).encode("utf-8")
            with self._env.begin(write=True) as txn:
                txn.put(HEADER_KEY, raw)
        self.header = check_header(json.loads(raw), self.path)
        self._pending: list[Pending] = []
        self._pending_keys: set[str] = set()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def count(self) -> int:
        return self.header["count"] + sum(1 for item in self._pending if item.value is not None)

    def has(self, key: str) -> bool:
        """Whether `key` is stored or pending, as a record or as an issue."""
        if key in self._pending_keys:
            return True
        with self._env.begin() as txn:
            return txn.get(key_slot(KEY_PREFIX, key)) is not None or txn.get(key_slot(ISSUE_PREFIX, key)) is not None

    def add(self, record: Record, *, issue: dict | None = None) -> bool:
        """Append a record (with the fixes made to it, if any); False if its key is already present."""
        if self.has(record.key):
            return False
        value, _ = encode_record(record)
        self._queue(
            Pending(
                key=record.key, value=value, modalities=record.modalities, captions=len(record.captions), issue=issue
            )
        )
        return True

    def skip(self, key: str, issue: dict) -> bool:
        """Record that item `key` was skipped, and why; False if `key` is already present."""
        if self.has(key):
            return False
        self._queue(Pending(key=key, issue=issue))
        return True

    def _queue(self, item: Pending) -> None:
        self._pending.append(item)
        self._pending_keys.add(item.key)
        if len(self._pending) >= self.commit_every:
            self.commit()

    def commit(self) -> None:
        if not self._pending:
            return
        while True:
            header = json.loads(json.dumps(self.header))
            try:
                with self._env.begin(write=True) as txn:
                    self._write(txn, header)
                break
            except lmdb.MapFullError:
                self._env.set_mapsize(self._env.info()["map_size"] * 2)
        self.header = header
        self._pending.clear()
        self._pending_keys.clear()

    def _write(self, txn: lmdb.Transaction, header: dict[str, Any]) -> None:
        checksum = int(header["checksum"], 16)
        for item in self._pending:
            if item.value is not None:
                index = header["count"]
                txn.put(record_slot(index), item.value)
                txn.put(key_slot(KEY_PREFIX, item.key), index.to_bytes(8, "big"))
                checksum = (checksum + int.from_bytes(item.value[4:36], "big")) % CHECKSUM_MODULUS
                header["count"] = index + 1
                for modality in item.modalities:
                    header["modalities"][modality] = header["modalities"].get(modality, 0) + 1
                header["captions"] += item.captions
            if item.issue is not None:
                issue = {"key": item.key, **item.issue}
                txn.put(key_slot(ISSUE_PREFIX, item.key), json.dumps(issue, ensure_ascii=False).encode("utf-8"))
                header["issues"][issue["status"]] = header["issues"].get(issue["status"], 0) + 1
        header["checksum"] = f"{checksum:064x}"
        txn.put(HEADER_KEY, json.dumps(header).encode("utf-8"))

    def close(self) -> None:
        """Commit what is pending and close the environment, so readers (and forked workers) can open it."""
        self.commit()
        self._env.sync()
        close_environment(self.path)


class LmdbStore:
    """Read access to a store: by index (map-style), by key, or in a seeded order.

    Nothing is opened until the first read, in whichever process makes it.
    """

    def __init__(self, path: Path | str) -> None:
        path = Path(path)
        suffixed = path.with_name(path.name + ".lmdb")
        if not (path / "data.mdb").is_file() and (suffixed / "data.mdb").is_file():
            path = suffixed  # a data artefact's split asked for by its bare name ("train")
        self.path = path
        if not (self.path / "data.mdb").is_file():
            raise StoreError(f"{self.path}: no LMDB store here")
        self._header: dict[str, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_header": self._header}

    def _env(self) -> lmdb.Environment:
        return environment(self.path, write=False)

    @property
    def header(self) -> dict[str, Any]:
        if self._header is None:
            with self._env().begin() as txn:
                raw = txn.get(HEADER_KEY)
            if raw is None:
                raise StoreError(f"{self.path}: store has no header")
            self._header = check_header(json.loads(raw), self.path)
        return self._header

    def __len__(self) -> int:
        return self.header["count"]

    def value(self, index: int) -> bytes:
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} outside store of {len(self)}")
        with self._env().begin(buffers=False) as txn:
            value = txn.get(record_slot(index))
        if value is None:
            raise StoreError(f"{self.path}: record {index} is missing")
        return value

    def record(self, index: int) -> Record:
        return decode_record(self.value(index))

    __getitem__ = record

    def get(self, key: str) -> Record | None:
        with self._env().begin() as txn:
            slot = txn.get(key_slot(KEY_PREFIX, key))
        return None if slot is None else self.record(int.from_bytes(slot, "big"))

    def issues(self) -> Iterator[tuple[str, dict]]:
        """(key, issue) for every fixed or skipped ingest item."""
        with self._env().begin() as txn:
            cursor = txn.cursor()
            if not cursor.set_range(ISSUE_PREFIX):
                return
            for slot, raw in cursor:
                if not slot.startswith(ISSUE_PREFIX):
                    break
                issue = json.loads(raw)
                yield issue.get("key", slot[1:].decode("utf-8", "replace")), issue

    def order(self, *, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> list[int]:
        """This rank's share of epoch `epoch`'s permutation (the training stream's own order)."""
        from mmgen.api import epoch_permutation, rank_share

        permutation = epoch_permutation(len(self), seed=seed, epoch=epoch)
        return rank_share(permutation, rank=rank, world_size=world_size, drop_last=False).tolist()

    def records(
        self, *, seed: int | None = None, epoch: int = 0, rank: int = 0, world_size: int = 1
    ) -> Iterator[Record]:
        """Every record in stored order, or with `seed` this rank's share of the epoch's shuffle."""
        if seed is None:
            indices = list(range(rank, len(self), world_size))
        else:
            indices = self.order(seed=seed, epoch=epoch, rank=rank, world_size=world_size)
        for index in indices:
            yield self.record(index)
