"""The token cache: every record encoded once by the recipe's tokenizers, so training reads tokens.

A cache is an LMDB folder. Its header names the tokenizers' content hashes and
the source store's checksum; `build_token_cache` rebuilds when either changes
and `TokenCacheDataset` refuses a cache made by other tokenizers, so a stale
cache is never used. Records hold, per modality in the cache's order, a token
matrix [rows, L] (one row for the item; one per caption for the caption
modality) and each row's length, as raw little-endian integers: reading one is
two slices and no parsing. Keys and meta live apart, for evaluation only.

A train cache built with BPE-dropout (bpe_dropout.py) holds one more block
after the modalities': `variants` dropped-merge rows per caption, caption-major
([captions x variants, L], the caption modality's dtype), and the header's
`bpe_dropout` says how many. Readers that do not look for it see a plain cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import lmdb
import numpy as np

from mmgen.api import ArtefactError

from .bpe_dropout import BpeDropout, VariantCounts, encode_variants, require_dropout
from .lmdb_store import LmdbStore, close_environment, environment

FORMAT = "mmgen.token_cache"
SCHEMA_VERSION = 1
HEADER_KEY = b"H"
TOKENS_PREFIX = b"t"
META_PREFIX = b"m"
ROW_HEADER = struct.Struct("<II")  # rows, row length
MASK64 = (1 << 64) - 1


class StaleCacheError(ArtefactError):
    """The cache was made by other tokenizers (or from another source) than the ones given."""


def slot(prefix: bytes, index: int) -> bytes:
    return prefix + index.to_bytes(8, "big")


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<i4")


def tokenizer_hashes(tokenizers: Mapping[str, Any]) -> dict[str, str]:
    return {modality: tokenizer.content_hash() for modality, tokenizer in tokenizers.items()}


def cache_key(
    hashes: Mapping[str, str], source_checksum: str, caption_modality: str, bpe_dropout: BpeDropout | None = None
) -> str:
    payload = {
        "schema": SCHEMA_VERSION,
        "tokenizers": dict(hashes),
        "source": source_checksum,
        "captions": caption_modality,
    }
    if bpe_dropout is not None and bpe_dropout.enabled:  # absent otherwise: caches made before it keep their key
        payload["bpe_dropout"] = bpe_dropout.describe()
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _splitmix(state: np.ndarray) -> np.ndarray:
    z = state + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def caption_draws(seed: int, epoch: int, indices: np.ndarray) -> np.ndarray:
    """A SplitMix64 hash of (seed, epoch, index) per index: which caption an item shows, stateless."""
    with np.errstate(over="ignore"):
        base = _splitmix(_splitmix(np.array([seed & MASK64], dtype=np.uint64)) ^ np.uint64(epoch & MASK64))
        return _splitmix(base ^ np.asarray(indices, dtype=np.int64).astype(np.uint64))


def mix(seed: int, epoch: int, index: int) -> int:
    return int(caption_draws(seed, epoch, np.array([index]))[0])


def weighted_row(draw: int, weights: Sequence[float], count: int) -> int:
    """The caption row that hash `draw` picks among `count` rows, row i with chance weights[i] / sum.

    Rows past the end of `weights` weigh 1. The top 53 bits of the hash make a
    uniform u in [0, 1); the row is the first whose cumulative share exceeds u.
    """
    shares = np.array([weights[i] if i < len(weights) else 1.0 for i in range(count)], dtype=np.float64)
    if shares.sum() <= 0:
        raise ValueError(f"caption weights {list(weights)} give no chance to any of {count} captions")
    u = (draw >> 11) / 2.0**53
    return min(int(np.searchsorted(np.cumsum(shares) / shares.sum(), u, side="right")), count - 1)


def read_header(path: Path) -> dict[str, Any] | None:
    if not (Path(path) / "data.mdb").is_file():
        return None
    with environment(Path(path), write=False).begin() as txn:
        raw = txn.get(HEADER_KEY)
    return json.loads(raw) if raw else None


# ---- building -----------------------------------------------------------------------------


def batch_items(items: list[Any]) -> Any:
    """Raw items as one batch: tensors of one shape stacked ([B, ...]), anything else as a list."""
    import torch

    if items and all(torch.is_tensor(item) for item in items) and len({tuple(i.shape) for i in items}) == 1:
        return torch.stack(items)
    return items


def encode_rows(segment: Any, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    tokens = segment.tokens.detach().cpu().numpy()
    lengths = segment.lengths.detach().cpu().numpy()
    return tokens.astype(dtype), lengths.astype("<i4")


def pack_value(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> bytes:
    chunks = []
    for tokens, lengths in parts:
        chunks += [ROW_HEADER.pack(*tokens.shape), tokens.tobytes(), lengths.tobytes()]
    return b"".join(chunks)


def encode_batch(
    records: Sequence[Any],
    *,
    modalities: Sequence[str],
    tokenizers: Mapping[str, Any],
    caption_modality: str,
    dtypes: Mapping[str, np.dtype],
) -> list[bytes]:
    """One stored value per record: its items' tokens (each of `modalities` but the captions') and its captions'."""
    per_record: list[dict[str, tuple[np.ndarray, np.ndarray]]] = [{} for _ in records]
    for modality in modalities:
        tokenizer = tokenizers[modality]
        if modality == caption_modality:
            captions = [c for r in records for c in r.captions]
            tokens, lengths = encode_rows(tokenizer.encode(captions), dtypes[modality])
            start = 0
            for slot_, record in zip(per_record, records):
                stop = start + len(record.captions)
                slot_[modality] = (tokens[start:stop], lengths[start:stop])
                start = stop
        else:
            wrong = [r.key for r in records if modality not in r.modalities]
            if wrong:
                raise ValueError(
                    f"record {wrong[0]!r} holds no {modality!r} item; the cache expects {list(modalities)}"
                )
            items = batch_items([tokenizer.load_item(r.item(modality)) for r in records])
            tokens, lengths = encode_rows(tokenizer.encode(items), dtypes[modality])
            for b, slot_ in enumerate(per_record):
                slot_[modality] = (tokens[b : b + 1], lengths[b : b + 1])
    return [pack_value([parts[m] for m in modalities]) for parts in per_record]


def build_token_cache(
    source: Path | str,
    out: Path | str,
    *,
    tokenizers: Mapping[str, Any],
    caption_modality: str = "text",
    batch_size: int = 64,
    progress: bool = True,
    bpe_dropout: BpeDropout | None = None,
) -> Path:
    """Encode every record of the store at `source` into a token cache at `out`.

    A finished cache for the same tokenizers, source and BPE-dropout options
    is kept as it is; any other cache at `out` is replaced. The cache appears
    atomically (built in a temporary folder, then renamed). With `bpe_dropout`
    enabled each record also gets its captions' dropped-merge variants.
    """
    from .ingest.pipeline import progress_bar

    store = LmdbStore(source)
    out = Path(out)
    hashes = tokenizer_hashes(tokenizers)
    dropout = bpe_dropout if bpe_dropout is not None and bpe_dropout.enabled else None
    key = cache_key(hashes, store.header["checksum"], caption_modality, dropout)
    existing = read_header(out)
    if existing is not None and existing.get("cache_key") == key:
        return out
    if caption_modality not in tokenizers:
        raise ValueError(f"no tokenizer for the caption modality {caption_modality!r} (have {sorted(tokenizers)})")
    stored = set(store.header["modalities"])
    modalities = [m for m in tokenizers if m in stored or m == caption_modality]
    missing = stored - set(tokenizers)
    if missing:
        raise ValueError(f"store {source} holds {sorted(missing)} records but no tokenizer encodes them")
    dtypes = {m: token_dtype(tokenizers[m].token_space.vocab_size) for m in modalities}
    if dropout is not None:
        require_dropout(tokenizers[caption_modality], caption_modality)
    counts = VariantCounts()

    building = out.with_name(f".{out.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.parent.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(building), map_size=1 << 26, subdir=True, meminit=False)
    try:
        with progress_bar(len(store), f"cache {out.name}", progress) as bar:
            for start in range(0, len(store), batch_size):
                records = [store.record(i) for i in range(start, min(start + batch_size, len(store)))]
                values = encode_batch(
                    records,
                    modalities=modalities,
                    tokenizers=tokenizers,
                    caption_modality=caption_modality,
                    dtypes=dtypes,
                )
                if dropout is not None:
                    variants = encode_variants(
                        records,
                        start,
                        tokenizer=tokenizers[caption_modality],
                        options=dropout,
                        dtype=dtypes[caption_modality],
                        counts=counts,
                    )
                    values = [value + pack_value([block]) for value, block in zip(values, variants)]
                _put_batch(env, start, records, values)
                bar.update(len(records))
        header = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "cache_key": key,
            "count": len(store),
            "modalities": modalities,
            "caption_modality": caption_modality,
            "tokenizers": {m: hashes[m] for m in modalities},
            "dtypes": {m: dtypes[m].str for m in modalities},
            "source": {"path": str(source), "checksum": store.header["checksum"], "count": len(store)},
        }
        if dropout is not None:
            header["bpe_dropout"] = {**dropout.describe(), **counts.as_dict()}
        _put(env, {HEADER_KEY: json.dumps(header).encode()})
        env.sync()
    finally:
        env.close()
    close_environment(out)
    if out.exists():
        shutil.rmtree(out)
    os.replace(building, out)
    return out


def _put(env: lmdb.Environment, items: Mapping[bytes, bytes]) -> None:
    while True:
        try:
            with env.begin(write=True) as txn:
                for k, v in items.items():
                    txn.put(k, v)
            return
        except lmdb.MapFullError:
            env.set_mapsize(env.info()["map_size"] * 2)


def _put_batch(env: lmdb.Environment, start: int, records: Sequence[Any], values: Sequence[bytes]) -> None:
    items: dict[bytes, bytes] = {}
    for offset, (record, value) in enumerate(zip(records, values)):
        items[slot(TOKENS_PREFIX, start + offset)] = value
        items[slot(META_PREFIX, start + offset)] = json.dumps({"key": record.key, "meta": record.meta}).encode()
    _put(env, items)


# ---- reading ------------------------------------------------------------------------------


def block_row(value: bytes, offset: int, row: int, itemsize: int) -> tuple[bytes, int, int]:
    """Row `row` of the block at `offset` of a stored value: its raw tokens, its length, where the next block starts."""
    count, width = ROW_HEADER.unpack_from(value, offset)
    offset += 8  # ROW_HEADER.size
    size = width * itemsize
    start = offset + row * size
    tokens = value[start : start + size]
    offset += count * size
    length = int.from_bytes(value[offset + 4 * row : offset + 4 * row + 4], "little", signed=True)
    return tokens, length, offset + 4 * count


def variant_draws(draws: np.ndarray) -> np.ndarray:
    """The hash that picks a caption's BPE-dropout variant: one SplitMix64 step past the caption draw."""
    with np.errstate(over="ignore"):
        return _splitmix(np.asarray(draws, dtype=np.uint64))


class TokenItem(NamedTuple):
    """One training example: per modality (in `layout`'s order) its token row as raw bytes and its length."""

    index: int
    rows: tuple[bytes, ...]
    row_lengths: tuple[int, ...]
    layout: tuple[tuple[str, np.dtype], ...]

    @property
    def tokens(self) -> dict[str, np.ndarray]:
        return {m: np.frombuffer(row, dtype=dtype) for (m, dtype), row in zip(self.layout, self.rows)}

    @property
    def lengths(self) -> dict[str, int]:
        return {m: n for (m, _), n in zip(self.layout, self.row_lengths)}


def collate(items: Sequence[TokenItem]) -> Any:
    """A TokenBatch with one Segment per modality, in the cache's order.

    All tensors are views of one buffer, so a DataLoader worker hands the
    batch over in one shared-memory block.
    """
    import torch

    from mmgen.api import Segment, TokenBatch

    count = len(items)
    layout = items[0].layout
    widths = [len(row) // dtype.itemsize for (_, dtype), row in zip(layout, items[0].rows)]
    buffer = np.empty(count * (sum(widths) + len(widths)), dtype=np.int64)
    parts = []
    offset = 0
    for m, ((_, dtype), width) in enumerate(zip(layout, widths)):
        tokens = buffer[offset : offset + count * width].reshape(count, width)
        tokens[:] = np.frombuffer(b"".join(item.rows[m] for item in items), dtype=dtype).reshape(count, width)
        offset += count * width
        lengths = buffer[offset : offset + count]
        lengths[:] = [item.row_lengths[m] for item in items]
        offset += count
        parts.append((tokens, lengths))
    shared = torch.from_numpy(buffer)
    segments = []
    offset = 0
    for (modality, _), width in zip(layout, widths):
        tokens = shared[offset : offset + count * width].view(count, width)
        offset += count * width
        segments.append(Segment(modality=modality, tokens=tokens, lengths=shared[offset : offset + count]))
        offset += count
    return TokenBatch(segments=segments)


class TokenCacheDataset:
    """A map-style dataset over a token cache.

    Item `i` of epoch `e` takes caption row mix(seed, e, i) % captions, so 0 and
    N DataLoader workers, and a resumed run, read the same samples. With
    `caption_weights` the same hash picks row r with chance weights[r] / sum
    (`weighted_row`): to show one caption style more often, such as the Shapes
    `full` template (row 0) that evaluation prompts use. In a cache with
    BPE-dropout variants the caption is then shown as variant
    splitmix(hash) % variants of that row: one of the stored dropped-merge
    encodings, never the canonical row as such (it comes up only as often as a
    dropout draw leaves every merge in place, or as a too-long variant's
    stand-in), as the paper's on-the-fly BPE-dropout would. The LMDB
    environment opens lazily in whichever process reads first.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        seed: int = 0,
        tokenizers: Mapping[str, Any] | None = None,
        caption_weights: Sequence[float] | None = None,
    ) -> None:
        self.path = Path(path)
        self.seed = seed
        self.epoch = 0
        if caption_weights is not None and (not caption_weights or min(caption_weights) < 0):
            raise ValueError(
                f"{self.path}: caption_weights must be a non-empty list of weights >= 0, got {caption_weights}"
            )
        self.caption_weights = None if caption_weights is None else tuple(float(w) for w in caption_weights)
        header = read_header(self.path)
        if header is None or header.get("format") != FORMAT:
            raise StaleCacheError(f"{self.path}: no token cache here")
        if header.get("schema_version") != SCHEMA_VERSION:
            raise StaleCacheError(
                f"{self.path}: cache schema {header.get('schema_version')}, this mmgen reads {SCHEMA_VERSION}"
            )
        self.header = header
        self.modalities: tuple[str, ...] = tuple(header["modalities"])
        self.caption_modality: str = header["caption_modality"]
        self._layout = tuple((m, np.dtype(header["dtypes"][m])) for m in self.modalities)
        self._itemsizes = tuple(dtype.itemsize for _, dtype in self._layout)
        self.variants: int = int(header.get("bpe_dropout", {}).get("variants", 0))
        self._caption_slot = self.modalities.index(self.caption_modality)
        if tokenizers is not None:
            self.check_tokenizers(tokenizers)

    def check_tokenizers(self, tokenizers: Mapping[str, Any]) -> None:
        """Raise StaleCacheError unless these tokenizers made the cache."""
        for modality in self.modalities:
            made_by = self.header["tokenizers"][modality]
            if modality not in tokenizers:
                raise StaleCacheError(f"{self.path}: no tokenizer given for cached modality {modality!r}")
            now = tokenizers[modality].content_hash()
            if now != made_by:
                raise StaleCacheError(
                    f"{self.path}: {modality!r} tokens were made by tokenizer {made_by}, not by the given {now}; rebuild the cache"
                )

    def _txn(self) -> lmdb.Transaction:
        # The per-process environment cache opens lazily and reopens after fork.
        return environment(self.path, write=False).begin()

    def __len__(self) -> int:
        return self.header["count"]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _item(self, index: int, draw: int, variant_draw: int, value: bytes) -> TokenItem:
        rows: list[bytes] = []
        lengths: list[int] = []
        picked: list[int] = []
        offset = 0
        for itemsize in self._itemsizes:
            count, _ = ROW_HEADER.unpack_from(value, offset)
            picked.append(0 if count == 1 else self._row(draw, count))
            tokens, length, offset = block_row(value, offset, picked[-1], itemsize)
            rows.append(tokens)
            lengths.append(length)
        if self.variants:
            # The variant block follows the modalities; caption row c's variants are its rows cK .. cK + K - 1.
            c = self._caption_slot
            row = picked[c] * self.variants + variant_draw % self.variants
            rows[c], lengths[c], _ = block_row(value, offset, row, self._itemsizes[c])
        return TokenItem(index, tuple(rows), tuple(lengths), self._layout)

    def _row(self, draw: int, count: int) -> int:
        if self.caption_weights is None:
            return draw % count
        return weighted_row(draw, self.caption_weights, count)

    def __getitem__(self, index: int) -> TokenItem:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[TokenItem]:
        """A whole batch in one read transaction (DataLoader calls this when it exists)."""
        wanted = np.asarray(indices, dtype=np.int64)
        outside = wanted[(wanted < 0) | (wanted >= len(self))]
        if outside.size:
            raise IndexError(f"item {int(outside[0])} outside token cache of {len(self)}")
        draws = caption_draws(self.seed, self.epoch, wanted)
        variants = variant_draws(draws).tolist() if self.variants else [0] * len(wanted)
        with self._txn() as txn:
            return [
                self._item(index, draw, variant, txn.get(slot(TOKENS_PREFIX, index)))
                for index, draw, variant in zip(wanted.tolist(), draws.tolist(), variants)
            ]

    def collate(self, items: Sequence[TokenItem]) -> Any:
        return collate(items)

    def record_info(self, index: int) -> tuple[str, dict[str, Any]]:
        """(key, meta) of record `index`: for evaluation (shapes: the scene JSON)."""
        with self._txn() as txn:
            info = json.loads(txn.get(slot(META_PREFIX, index)))
        return info["key"], info["meta"]

    def meta(self, index: int) -> dict[str, Any]:
        return self.record_info(index)[1]

    def key(self, index: int) -> str:
        return self.record_info(index)[0]

    def captions(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Every canonical caption row of record `index` (tokens [rows, L], lengths [rows])."""
        return self._blocks(index)[self._caption_slot]

    def dropout_variants(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Record `index`'s BPE-dropout variants: tokens [captions, variants, L], lengths [captions, variants]."""
        if not self.variants:
            raise KeyError(f"{self.path}: this cache holds no BPE-dropout variants")
        tokens, lengths = self._blocks(index)[-1]
        return tokens.reshape(-1, self.variants, tokens.shape[-1]), lengths.reshape(-1, self.variants)

    def _blocks(self, index: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every block of record `index`'s stored value: one per modality, then the variants' if any."""
        with self._txn() as txn:
            value = txn.get(slot(TOKENS_PREFIX, index))
        dtypes = [dtype for _, dtype in self._layout]
        if self.variants:
            dtypes.append(dtypes[self._caption_slot])
        blocks = []
        offset = 0
        for dtype in dtypes:
            rows, width = ROW_HEADER.unpack_from(value, offset)
            offset += ROW_HEADER.size
            tokens = np.frombuffer(value, dtype=dtype, count=rows * width, offset=offset).reshape(rows, width)
            offset += rows * width * dtype.itemsize
            blocks.append((tokens, np.frombuffer(value, dtype="<i4", count=rows, offset=offset)))
            offset += 4 * rows
        return blocks
