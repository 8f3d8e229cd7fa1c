"""How fast does MAGVLT start to read the caption? T2I mask prediction alone, probed every K updates.

Trains a fresh MAGVLT on a recipe's token cache (its data, tokenizers and
cache stages are run or reused) with the T2I task and L_mask only, and every
`--every` updates runs the teacher-forced probe of `conditioning_probe.py` on
the first 256 val pairs: cross-entropy of the non-background image tokens
with the true and with shuffled captions (the gap is what the caption is
worth), and where the model puts non-background tokens; and the colour probe
of `shapes_colour_probe.py` (does it draw the colour the caption names, and
for two-object captions, on the right object?). `--caption-weights 1 0 0 0 0`
trains on each record's first caption only (Shapes: the `full` template),
as the train stage's `caption_weights` does; the probes read the same val
pairs either way.
Minutes per run, so training choices (code embedding init, width, depth,
learning rate, batch, caption weights) can be compared long before any
generation is right.

`--synthetic` replaces each image token p with the caption's token p mod 6: a
mapping any working model learns within a few hundred updates (a wiring check).

    python benchmarks/magvlt_t2i_probe.py recipes/quickstart.yaml --threads 1 --steps 600 --every 100
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import attrs
import torch

from conditioning_probe import conditioning_probe
from generation_run import read_records
from magvlt_shapes_quality import prepare
from shapes_colour_probe import code_colour_table, colour_probe, colour_probe_inputs

from mmgen.atomic import atomic_write_text
from mmgen.batch import TokenBatch
from mmgen.objectives.mask import MaskPrediction
from mmgen.objectives.tasks import TaskConfig, TaskDraw
from mmgen.objectives.training_loss import TrainingLoss
from mmgen.plugins.datasets.token_cache import TokenCacheDataset
from mmgen.plugins.models.magvlt import MagvltModel
from mmgen.plugins.models.presets import Architecture
from mmgen.plugins.stages.train_model import joint_space
from mmgen.registry import load_registry
from mmgen.tokenizers.saved import load_saved_tokenizers

VAL_PAIRS = 256
COLOUR_TABLE_IMAGES = 1000  # training images that name each code's colour
SYNTHETIC_PERIOD = 6


def synthetic(batch: TokenBatch, *, codes: int) -> TokenBatch:
    """Image token p := caption token p mod 6 (mod the image vocabulary)."""
    image, text = batch.modality("image"), batch.modality("text")
    source = text.tokens[:, torch.arange(image.tokens.shape[1]) % SYNTHETIC_PERIOD] % codes
    return TokenBatch(segments=[attrs.evolve(image, tokens=source), text])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--code-init-scale", type=float, default=10.0,
                        help="code embeddings from the VQ codebook (plugins/models/code_init.py); 0: the paper's random init")
    parser.add_argument("--caption-weights", type=float, nargs="+", default=None,
                        help="train caption rows with these weights (as the train stage's caption_weights)")
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--name", default="magvlt_t2i_probe")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    registry = load_registry()
    folders, _ = prepare(args.recipe, [], registry)
    tokenizers = load_saved_tokenizers(folders["tokenizers"], registry)
    train = TokenCacheDataset(
        folders["cache"] / "train.lmdb", seed=0, tokenizers=tokenizers, caption_weights=args.caption_weights
    )
    val = TokenCacheDataset(folders["cache"] / "val.lmdb", seed=0, tokenizers=tokenizers)
    space = joint_space(tokenizers, [])
    codes = space.space("image").vocab_size
    sizes = Architecture(width=args.width, depth=args.depth, heads=args.heads)
    model = MagvltModel(token_space=space, architecture=sizes)
    if args.code_init_scale > 0:
        model.init_code_embeddings("image", tokenizers["image"].code_vectors(), scale=args.code_init_scale)
    mask = MaskPrediction(token_space=space, label_smoothing=args.label_smoothing)
    loss_fn = TrainingLoss([mask], TaskDraw({"t2i": TaskConfig(context=("text",), target=("image",))}, seed=0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
    # Warm-up, then constant: the probe compares how soon learning starts, not where a schedule ends.
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / args.warmup))

    def prepared(batch: TokenBatch) -> TokenBatch:
        return synthetic(batch, codes=codes) if args.synthetic else batch

    probe_batch = prepared(val.collate(val.__getitems__(list(range(min(VAL_PAIRS, len(val)))))))
    code_colour = code_colour_table(tokenizers, read_records(folders["data"], "train", limit=COLOUR_TABLE_IMAGES))
    val_records = read_records(folders["data"], "val", limit=VAL_PAIRS)
    colour_batch, colours, _, counts = colour_probe_inputs(tokenizers, val_records)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(train))
    curve, started, probing = [], time.perf_counter(), 0.0
    for step in range(args.steps + 1):
        if step % args.every == 0 or step == args.steps:
            begun = time.perf_counter()
            point = {"step": step, "train_seconds": begun - started - probing, **conditioning_probe(model, probe_batch)}
            if not args.synthetic:
                point.update(colour_probe(model, colour_batch, colours=colours, code_colour=code_colour, counts=counts))
            point["load_average"] = os.getloadavg()[0]
            probing += time.perf_counter() - begun
            curve.append(point)
            print("  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in point.items()), flush=True)
        if step == args.steps:
            break
        first = (step * args.batch_size) % (len(train) - args.batch_size)
        batch = prepared(train.collate(train.__getitems__(order[first : first + args.batch_size].tolist())))
        loss = loss_fn(model, batch, step, generator).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()

    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{args.name}_{args.threads}threads"
    atomic_write_text(stem.with_suffix(".json"), json.dumps({"settings": settings, "curve": curve}, indent=2))
    keys = ("probe/gap", "probe/ce_rare", "probe/rare_recall", "probe/rare_precision")
    if not args.synthetic:
        keys += ("colour/right_given_object", "colour/right_given_object_1", "colour/right_given_object_2")
        keys += ("colour/object_mass",)
    lines = [
        f"T2I probe, `{args.recipe}`, {' '.join(f'{k}={v}' for k, v in settings.items() if k not in ('recipe', 'out'))}",
        "",
        "| step | train s | " + " | ".join(keys) + " | load avg |",
        "|---|---|" + "---|" * len(keys) + "---|",
    ]
    for p in curve:
        cells = " | ".join(f"{p[k]:.3f}" for k in keys)
        lines.append(f"| {p['step']} | {p['train_seconds']:.0f} | {cells} | {p['load_average']:.1f} |")
    atomic_write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
