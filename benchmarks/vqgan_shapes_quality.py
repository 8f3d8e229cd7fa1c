"""VQ-GAN quality on Shapes against training time: the image oracle reading reconstructions of the val split.

Trains the `shapes` preset through the plugin's own path (`VQGANTokenizer.fit`,
the shared trainer) and, at every evaluation, reconstructs the val images and
asks `mmgen.plugins.datasets.shapes.oracle.read_image` for their objects. An
object counts as correct when the oracle finds it with the right shape, colour,
size and cell; an image when the oracle finds exactly its objects. Evaluation
time is excluded from the training time; data generation is reported apart (the
recipe's data stage does it). The machine is shared: the load average is
recorded with every point.

    python benchmarks/vqgan_shapes_quality.py --threads 2 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import Counter
from pathlib import Path

import attrs
import numpy as np
import torch

from mmgen.atomic import atomic_write_text
from mmgen.plugins.datasets.shapes.dataset import ShapesDataset
from mmgen.plugins.datasets.shapes.oracle import read_image
from mmgen.plugins.datasets.shapes.scene import specs_from_json
from mmgen.tokenizers.vqgan.autoencoder import pixels_to_unit, unit_to_pixels
from mmgen.tokenizers.vqgan.tokenizer import VQGANTokenizer
from mmgen.tokenizers.vqgan.training import TrainConfig


def judge(reconstructions: np.ndarray, metas: list[dict]) -> dict[str, float]:
    """Object and image accuracy of the oracle on uint8 [N, S, S, 3] reconstructions."""
    objects = correct = exact = 0
    wrong: Counter[str] = Counter()
    for pixels, meta in zip(reconstructions, metas):
        found = set(read_image(pixels, size=meta["size"]))
        truth = specs_from_json(meta)
        objects += len(truth)
        correct += sum(spec in found for spec in truth)
        exact += found == set(truth)
        for spec in (s for s in truth if s not in found):
            read = [f for f in found if f.cell == spec.cell]
            if not read:
                wrong["missing"] += 1
            for attribute in ("shape", "colour", "size") if read else ():
                wrong[attribute] += getattr(read[0], attribute) != getattr(spec, attribute)
    return {
        "object_accuracy": correct / objects,
        "image_accuracy": exact / len(metas),
        **{f"wrong_{k}": float(v) for k, v in sorted(wrong.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train", type=int, default=10_000, help="training images (the shapes dataset's default)")
    parser.add_argument("--val", type=int, default=500, help="val images, all judged by the oracle")
    parser.add_argument("--steps", type=int, default=None, help="default: the preset's TrainConfig")
    parser.add_argument("--lr", type=float, default=None, help="default: the preset's TrainConfig")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the preset's TrainConfig")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--name", default="vqgan_shapes_quality")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    started = time.perf_counter()
    shapes = ShapesDataset(size=64, counts={"train": args.train, "val": args.val})
    records = {split: list(shapes.records(split)) for split in ("train", "val")}
    data_seconds = time.perf_counter() - started

    train = TrainConfig()
    train = attrs.evolve(
        train,
        steps=args.steps or train.steps,
        lr=args.lr or train.lr,
        batch_size=args.batch_size or train.batch_size,
        eval_every=args.eval_every,
        eval_images=args.val,
    )
    tokenizer = VQGANTokenizer.from_config(VQGANTokenizer.Config(preset="shapes", train=train))
    val_images = torch.stack([tokenizer.load_item(r.data) for r in records["val"]])
    metas = [r.meta for r in records["val"]]
    curve = []

    def on_eval(autoencoder, step, metrics):
        with torch.no_grad():
            rebuilt = torch.cat(
                [unit_to_pixels(autoencoder(pixels_to_unit(val_images[i : i + 100]))[0]) for i in range(0, len(val_images), 100)]
            )
        point = {"step": step, **metrics, **judge(rebuilt.permute(0, 2, 3, 1).numpy(), metas), "load_average": os.getloadavg()[0]}
        curve.append(point)
        print(
            f"step {step:5d}  {point['train_seconds']:6.1f}s  objects {point['object_accuracy']:.4f}"
            f"  images {point['image_accuracy']:.4f}  psnr {point['psnr']:.2f}  usage {point['codebook_usage']:.3f}"
            f"  perplexity {point['perplexity']:.0f}  load {point['load_average']:.1f}",
            flush=True,
        )

    out_dir = args.out / f"{args.name}_work"
    if out_dir.exists():
        import shutil

        shutil.rmtree(out_dir)  # a fresh run, not a resume
    tokenizer.fit(records.__getitem__, out_dir=out_dir, seed=args.seed, on_eval=on_eval)
    final = curve[-1]
    result = {
        "benchmark": "vqgan_shapes_quality",
        "threads": args.threads,
        "architecture": attrs.asdict(tokenizer.architecture),
        "train": attrs.asdict(train),
        "train_images": args.train,
        "val_images": args.val,
        "data_generation_seconds": data_seconds,
        "steps_per_s": final["step"] / final["train_seconds"],
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "curve": curve,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{args.name}_{args.threads}threads"
    atomic_write_text(stem.with_suffix(".json"), json.dumps(result, indent=2))
    lines = [
        f"VQ-GAN `shapes` preset on Shapes 64x64 -> 8x8 tokens, {args.threads} thread(s), {args.train} train images,"
        f" oracle on {args.val} val images; {result['steps_per_s']:.2f} steps/s at batch {train.batch_size}",
        "",
        "| step | train s | object acc | image acc | PSNR dB | codebook usage | perplexity | load avg |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in curve:
        lines.append(
            f"| {p['step']} | {p['train_seconds']:.0f} | {p['object_accuracy']:.4f} | {p['image_accuracy']:.4f} |"
            f" {p['psnr']:.2f} | {p['codebook_usage']:.3f} | {p['perplexity']:.0f} | {p['load_average']:.1f} |"
        )
    atomic_write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
