"""Training data path on CPU: samples/s of token-cache reads and batch assembly, as the train stage reads them.

A token cache shaped like each preset's inputs (shapes: 8x8 image tokens of 512 codes, captions of
24 tokens of 128; base: 16x16 of 16,384, 64 of 49,408) is built from Shapes records with stand-in
tokenizers (a hash for the VQ-GAN, bytes for BPE: encoding cost is not what is measured), then read
exactly as `mmgen run` trains from it: `TokenCache.split("train")` (with MixSel's halves when
present) through `Trainer.make_stream` (a BatchStream: shuffling, caption draws, collate into a
TokenBatch) and the trainer's `move_to`, at the preset's training batch, with 0 and 2 DataLoader
workers. Compare with perf_train.py's tokens/s: the data path should be far ahead of the model.

    python benchmarks/perf_data.py            # 4,096 records, 200 batches per reader
    python benchmarks/perf_data.py --quick    # 256 records, 20 batches: checks the script
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from perf_common import (
    add_common_options,
    machine,
    machine_line,
    markdown_table,
    peak_rss_growth,
    result_stem,
    threads,
    write_results,
)
from perf_models import SIZES, Sizes
from token_cache_throughput import ByteTextTokenizer, HashImageTokenizer

from mmgen.plugins.datasets.cache_stage import TokenCache
from mmgen.plugins.datasets.ingest.dataset_source import dataset_candidates
from mmgen.plugins.datasets.ingest.pipeline import ingest
from mmgen.plugins.datasets.shapes.dataset import ShapesDataset
from mmgen.plugins.datasets.token_cache import build_token_cache
from mmgen.token_space import TokenSpace
from mmgen.trainer import Trainer, TrainerConfig, move_to


class ImageCodes(HashImageTokenizer):
    def __init__(self, sizes: Sizes) -> None:
        self.token_space = TokenSpace(name="image", vocab_size=sizes.image_vocab, shape=(sizes.image_side,) * 2)
        self.count = sizes.image_tokens

    def encode(self, items: torch.Tensor) -> Any:
        segment = super().encode(items)  # 256 hashed codes per image: keep the first, within the vocabulary
        tokens = segment.tokens[:, : self.count] % self.token_space.vocab_size
        return type(segment).full("image", tokens)


class CaptionBytes(ByteTextTokenizer):
    def __init__(self, sizes: Sizes) -> None:
        self.length = sizes.text_length
        self.token_space = TokenSpace(
            name="text",
            vocab_size=max(sizes.text_vocab, 257),
            shape=(sizes.text_length,),
            variable_length=True,
            pad_id=0,
            eos_id=0,
        )

    def encode(self, items: list[str]) -> Any:
        segment = super().encode(items)  # 64 slots of bytes: cut to the preset's length, end-of-text last
        tokens, lengths = segment.tokens[:, : self.length].clone(), segment.lengths.clamp(max=self.length)
        tokens[torch.arange(len(items)), lengths - 1] = 0
        return type(segment)(modality="text", tokens=tokens, lengths=lengths)


def build_cache(folder: Path, sizes: Sizes, *, records: int) -> TokenCache:
    store = folder / "records.lmdb"
    ingest(
        dataset_candidates(ShapesDataset(size=64, counts={"train": records}), "train"),
        store,
        total=records,
        progress=False,
    )
    tokenizers = {"image": ImageCodes(sizes), "text": CaptionBytes(sizes)}
    build_token_cache(store, folder / "cache" / "train.lmdb", tokenizers=tokenizers, progress=False)
    return TokenCache(folder / "cache")


def read_rate(cache: TokenCache, sizes: Sizes, *, workers: int, batches: int, out_dir: Path) -> float:
    """Samples/s of `batches` training batches after the first (workers started)."""
    config = TrainerConfig(steps=batches + 1, batch_size=sizes.train_batch, warmup_steps=0, num_workers=workers)
    dataset = cache.split("train", seed=0)
    stream = Trainer(config, out_dir=out_dir, quiet=True).make_stream(dataset, collate=dataset.collate)
    device = torch.device("cpu")
    move_to(next(stream), device)
    start = time.perf_counter()
    for _ in range(batches):
        move_to(next(stream), device)
    elapsed = time.perf_counter() - start
    stream.close()
    return batches * sizes.train_batch / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_options(parser, stem="perf_data")
    parser.add_argument("--presets", nargs="+", default=["shapes", "base"], choices=["shapes", "base"])
    parser.add_argument("--records", type=int, default=None, help="records in the cache (default 4096; 256 quick)")
    parser.add_argument("--batches", type=int, default=None, help="timed batches per reader (default 200; 20 quick)")
    args = parser.parse_args()
    torch.set_num_threads(threads(args))
    records = args.records or (256 if args.quick else 4096)
    batches = args.batches or (20 if args.quick else 200)
    described = machine()
    presets = {"quick": SIZES["quick"]} if args.quick else {p: SIZES[p] for p in args.presets}
    rows = []
    for preset, sizes in presets.items():
        with tempfile.TemporaryDirectory() as tmp:
            print(f"{preset}: building a cache of {records} records...", flush=True)
            cache = build_cache(Path(tmp), sizes, records=records)
            for workers in (0, 2):
                rate: list[float] = []
                memory = peak_rss_growth(
                    lambda: rate.append(read_rate(cache, sizes, workers=workers, batches=batches, out_dir=Path(tmp)))
                )
                rows.append(
                    {
                        "preset": preset,
                        "batch": sizes.train_batch,
                        "workers": workers,
                        "samples_per_s": rate[0],
                        "batches_per_s": rate[0] / sizes.train_batch,
                        "tokens_per_sample": sizes.image_tokens + sizes.text_length,
                        "peak_rss_growth_mib": memory,
                    }
                )
    result = {
        "benchmark": "perf_data",
        "quick": args.quick,
        "machine": described,
        "records": records,
        "batches_timed": batches,
        "rows": rows,
    }
    header = ["preset", "batch", "workers", "samples/s", "batches/s", "token slots/sample", "peak RSS growth (MiB)"]
    table = [
        [
            r["preset"],
            r["batch"],
            r["workers"],
            r["samples_per_s"],
            r["batches_per_s"],
            r["tokens_per_sample"],
            "n/a" if r["peak_rss_growth_mib"] is None else r["peak_rss_growth_mib"],
        ]
        for r in rows
    ]
    lines = [
        "# Training data path (token cache -> TokenBatch, as the train stage reads it)",
        "",
        f"`python benchmarks/perf_data.py{' --quick' if args.quick else ''}`: {machine_line(described)};"
        f" {records} records, {batches} batches timed per reader after the first.",
        "",
        *markdown_table(header, table),
        "",
        "Peak RSS growth: of this process during the reads (DataLoader workers are separate processes, not counted).",
    ]
    write_results(args.out, result_stem(args, "perf_data"), result, lines)


if __name__ == "__main__":
    main()
