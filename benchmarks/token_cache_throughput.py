"""Token-cache read throughput: training batches per second with 0 and 2 DataLoader workers.

Builds a cache shaped like MAGVLT's inputs (16x16 image tokens from a 16,384
codebook, 5 captions of 64 text tokens each) from Shapes records, then times
`mmgen.data_stream.BatchStream` over it. Baseline in the same process: the same
stream over the record store, decoding each PNG to a tensor (what training
would do without the cache). Aim: >= 20,000 samples/s.

    python benchmarks/token_cache_throughput.py --records 4096 --batch-size 256 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mmgen.atomic import atomic_write_text
from mmgen.batch import Segment
from mmgen.data_stream import BatchStream
from mmgen.plugins.datasets.ingest.dataset_source import dataset_candidates
from mmgen.plugins.datasets.ingest.pipeline import ingest
from mmgen.plugins.datasets.lmdb_store import LmdbStore
from mmgen.plugins.datasets.shapes.dataset import ShapesDataset
from mmgen.plugins.datasets.token_cache import TokenCacheDataset, build_token_cache
from mmgen.token_space import TokenSpace


class HashImageTokenizer:
    """Stand-in for the VQ-GAN: 256 codes from a hash of the pixels (encoding cost is not measured)."""

    modality = "image"
    token_space = TokenSpace(name="image", vocab_size=16_384, shape=(16, 16))

    def load_item(self, data: bytes) -> torch.Tensor:
        return torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).copy()).permute(2, 0, 1)

    def encode(self, items: torch.Tensor) -> Segment:
        rows = []
        for image in items:
            seed = int.from_bytes(hashlib.sha256(image.numpy().tobytes()).digest()[:8], "little")
            rows.append(np.random.default_rng(seed).integers(0, 16_384, 256))
        return Segment.full("image", torch.from_numpy(np.stack(rows)))

    def content_hash(self) -> str:
        return "bench-image"


class ByteTextTokenizer:
    """Stand-in for BPE: one token per byte, 64 slots, 0 as end-of-text and padding."""

    modality = "text"
    token_space = TokenSpace(name="text", vocab_size=257, shape=(64,), variable_length=True, pad_id=0, eos_id=0)

    def encode(self, items: list[str]) -> Segment:
        tokens = torch.zeros(len(items), 64, dtype=torch.long)
        lengths = []
        for b, text in enumerate(items):
            row = [c + 1 for c in text.encode()[:63]] + [0]
            tokens[b, : len(row)] = torch.tensor(row)
            lengths.append(len(row))
        return Segment(modality="text", tokens=tokens, lengths=torch.tensor(lengths))

    def content_hash(self) -> str:
        return "bench-text"


class DecodingStore(torch.utils.data.Dataset):
    """Baseline: records read from the store and their PNG decoded to a uint8 tensor."""

    def __init__(self, path: Path) -> None:
        self.store = LmdbStore(path)

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, index: int) -> torch.Tensor:
        data = self.store.record(index).data
        return torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).copy()).permute(2, 0, 1)


def samples_per_second(dataset, collate, *, batch_size: int, batches: int, workers: int) -> float:
    stream = BatchStream(dataset, batch_size=batch_size, collate=collate, seed=0, num_workers=workers)
    next(stream)  # workers started, first batch in
    start = time.perf_counter()
    for _ in range(batches):
        next(stream)
    elapsed = time.perf_counter() - start
    stream.close()
    return batches * batch_size / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=120)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "train.lmdb"
        data = ShapesDataset(size=64, counts={"train": args.records})
        ingest(dataset_candidates(data, "train"), store, total=args.records, progress=False)
        tokenizers = {"image": HashImageTokenizer(), "text": ByteTextTokenizer()}
        cache = TokenCacheDataset(
            build_token_cache(store, Path(tmp) / "cache.lmdb", tokenizers=tokenizers, progress=False)
        )
        rows = []
        baseline = samples_per_second(
            DecodingStore(store), torch.stack, batch_size=args.batch_size, batches=max(4, args.batches // 20), workers=0
        )
        rows.append({"reader": "record store + PNG decode (baseline)", "workers": 0, "samples_per_s": baseline})
        for workers in (0, 2):
            rate = samples_per_second(
                cache, cache.collate, batch_size=args.batch_size, batches=args.batches, workers=workers
            )
            rows.append({"reader": "token cache", "workers": workers, "samples_per_s": rate})
    for row in rows:
        row["batches_per_s"] = row["samples_per_s"] / args.batch_size
        row["vs_baseline"] = row["samples_per_s"] / baseline
        row["meets_20k"] = row["samples_per_s"] >= 20_000
    result = {
        "benchmark": "token_cache_throughput",
        "records": args.records,
        "batch_size": args.batch_size,
        "batches_timed": args.batches,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s)",
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "token_cache_throughput.json", json.dumps(result, indent=2))
    lines = [
        f"Token cache throughput ({args.records} records, batch {args.batch_size}: 256 image + 64 text tokens)",
        "",
        "| reader | workers | samples/s | batches/s | vs baseline | >= 20k/s |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['reader']} | {row['workers']} | {row['samples_per_s']:,.0f} | {row['batches_per_s']:.1f} | "
            f"{row['vs_baseline']:.1f}x | {'yes' if row['meets_20k'] else 'no'} |"
        )
    atomic_write_text(args.out / "token_cache_throughput.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
