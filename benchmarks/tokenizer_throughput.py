"""Tokenizer throughput on this machine: images/s encoded and decoded by `vqgan`, captions/s by `sentencepiece_bpe`.

Baselines in the same process: decoding the stored PNG bytes to a tensor
(`load_item`, the work every image needs anyway) for the image rows, and the raw
sentencepiece processor for the text rows. Weights are random: throughput does
not depend on them. Rounds interleave the rows and medians are reported,
because the machine is shared; the load average is recorded.

    python benchmarks/tokenizer_throughput.py --threads 2 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from mmgen.atomic import atomic_write_text
from mmgen.tokenizers.sentencepiece_bpe import SentencePieceBPE
from mmgen.tokenizers.vqgan.tokenizer import VQGANTokenizer


def shapes_images(count: int, size: int) -> list[np.ndarray]:
    from mmgen.plugins.datasets.shapes.render import render, sample_scene

    rng = np.random.default_rng(0)
    return [render(sample_scene(rng, size=size, max_objects=2)) for _ in range(count)]


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class Row:
    def __init__(self, label: str, unit: str, items: int, run: Callable[[], object], baseline: str) -> None:
        self.label, self.unit, self.items, self.run, self.baseline = label, unit, items, run, baseline
        self.seconds: list[float] = []

    def time(self) -> None:
        start = time.perf_counter()
        self.run()
        self.seconds.append(time.perf_counter() - start)

    @property
    def rate(self) -> float:
        return self.items / statistics.median(self.seconds)


def image_rows(preset: str, batch: int, *, baseline_label: str) -> list[Row]:
    tokenizer = VQGANTokenizer.from_config(VQGANTokenizer.Config(preset=preset))
    size = tokenizer.architecture.resolution
    canvas = size if size in (32, 64, 128) else 128  # Shapes canvases; load_item resizes the rest
    stored = [png(p) for p in shapes_images(batch, canvas)]
    images = torch.stack([tokenizer.load_item(data) for data in stored])
    tokens = tokenizer.encode(images)
    name = f"vqgan {preset} ({size}px -> {tokenizer.token_space.shape[0]}x{tokenizer.token_space.shape[1]})"
    return [
        Row(baseline_label, "images/s", batch, lambda: [tokenizer.load_item(d) for d in stored], baseline_label),
        Row(f"{name} encode", "images/s", batch, lambda: tokenizer.encode(images), baseline_label),
        Row(f"{name} decode", "images/s", batch, lambda: tokenizer.decode(tokens), baseline_label),
    ]


def text_rows(count: int) -> list[Row]:
    from mmgen.plugins.datasets.shapes.dataset import ShapesDataset

    shapes = ShapesDataset(counts={"train": max(count // 5, 1)})
    captions = [c for r in shapes.records("train") for c in r.captions][:count]
    bpe = SentencePieceBPE(vocab_size=49408, max_length=64)
    bpe.train(captions)
    segment = bpe.encode(captions)
    lowered = [c.lower() for c in captions]
    base = "raw sentencepiece encode (baseline)"
    return [
        Row(base, "captions/s", count, lambda: bpe._require().encode(lowered), base),
        Row("sentencepiece_bpe encode", "captions/s", count, lambda: bpe.encode(captions), base),
        Row("sentencepiece_bpe encode, BPE-dropout 0.1", "captions/s", count, lambda: bpe.encode(captions, training=True, seed=0), base),
        Row("sentencepiece_bpe decode", "captions/s", count, lambda: bpe.decode(segment), base),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64, help="images per call for the shapes preset")
    parser.add_argument("--paper-batch-size", type=int, default=2, help="images per call for f16_16384 (0: skip it)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = image_rows("shapes", args.batch_size, baseline_label="load_item: PNG -> uint8 tensor (64px)")
    if args.paper_batch_size:
        rows += image_rows("f16_16384", args.paper_batch_size, baseline_label="load_item: 128px PNG -> 256px uint8 tensor")
    rows += text_rows(2000)
    with torch.no_grad():
        for row in rows:  # warm-up: allocator, kernels
            row.time()
        for row in rows:
            row.seconds.clear()
        for _ in range(args.rounds):
            for row in rows:
                row.time()
    rates = {row.label: row.rate for row in rows}
    result = {
        "benchmark": "tokenizer_throughput",
        "threads": args.threads,
        "rounds": args.rounds,
        "load_average_at_end": os.getloadavg(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "rows": [
            {"row": r.label, "unit": r.unit, "items_per_call": r.items, "rate": r.rate, "vs_baseline": r.rate / rates[r.baseline], "baseline": r.baseline}
            for r in rows
        ],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"tokenizer_throughput_{args.threads}threads"
    atomic_write_text(stem.with_suffix(".json"), json.dumps(result, indent=2))
    lines = [
        f"Tokenizer throughput, {args.threads} thread(s), median of {args.rounds} rounds,"
        f" load average {result['load_average_at_end'][0]:.1f} (shared machine)",
        "",
        "| row | items/call | rate | unit | vs baseline |",
        "|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(f"| {row['row']} | {row['items_per_call']} | {row['rate']:,.1f} | {row['unit']} | {row['vs_baseline']:.3f}x |")
    atomic_write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
