"""Twin codebook entries against how the VQ-GAN restarts dead codes: uniform draws (mmgen's) or far draws.

Dead-code restarts move each code unused for `dead_after` steps onto a latent of
the current batch. mmgen draws those latents uniformly; on Shapes most latents
are blank canvas, so restarted codes land next to the live background code and
become twins (entries within 1e-6 of another), whose ids then follow the float
path (tests/test_shipped_checkpoints.py says what that costs). The variant
measured here draws latents in proportion to their squared distance from the
nearest live entry (k-means++ seeding). Both train the recipe's image tokenizer
in this process, each in its own workdir, with the same data, seed and
schedule; the variant is patched in here and is not mmgen's behaviour.

Reports per variant: codes with a twin, val PSNR of encode -> decode on the
first `--images` val records, and how many distinct codes those images use.

    python benchmarks/vqgan_restart_twins.py recipes/quickstart.yaml --workdir /tmp/restart-twins
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch

from generation_run import read_records

from mmgen.atomic import atomic_write_text
from mmgen.recipe import read_yaml, structure_recipe
from mmgen.registry import load_registry
from mmgen.runner import run_recipe
from mmgen.tokenizers.saved import load_saved_tokenizers
from mmgen.tokenizers.vqgan.quantizer import VectorQuantizer

TWIN_COSINE = 1 - 1e-6
UNIFORM_RESTART = VectorQuantizer.restart_dead


@torch.no_grad()
def far_restart(self: VectorQuantizer, latents: torch.Tensor, *, dead_after: int, generator: torch.Generator) -> int:
    """Dead codes onto latents drawn in proportion to their squared distance from the nearest live entry."""
    dead = (self.steps_unused >= dead_after).nonzero().flatten()
    if dead.numel() == 0:
        return 0
    live = self.entries()[self.steps_unused < dead_after].float()
    weights = torch.cdist(latents.float(), live).min(dim=1).values.pow(2) if live.numel() else torch.ones(len(latents))
    if float(weights.sum()) <= 0:
        weights = torch.ones_like(weights)
    picks = torch.multinomial(weights.cpu(), dead.numel(), replacement=True, generator=generator)
    self.codebook[dead] = latents[picks.to(latents.device)].to(self.codebook.dtype)
    self.steps_unused[dead] = 0
    return int(dead.numel())


def train_tokenizers(recipe_path: Path, workdir: Path, registry) -> dict[str, Path]:
    data = read_yaml(recipe_path)
    data = {**data, "tracker": {"use": "none"}, "stages": {k: data["stages"][k] for k in ("data", "tokenizers")}}
    previous = Path.cwd()
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)  # the runner writes runs/ under the working directory
    try:
        results = run_recipe(structure_recipe(data, registry=registry, source=recipe_path), registry=registry)
    finally:
        os.chdir(previous)
    return {r.key: workdir / r.out_dir for r in results}


def measure(folders: dict[str, Path], registry, *, images: int) -> dict[str, float]:
    tokenizer = load_saved_tokenizers(folders["tokenizers"], registry)["image"]
    quantizer = next(m for m in tokenizer.autoencoder.modules() if isinstance(m, VectorQuantizer))
    entries = quantizer.entries().detach()
    cosine = entries @ entries.T
    cosine.fill_diagonal_(-2.0)
    records = read_records(folders["data"], "val", limit=images)
    pixels = torch.stack([tokenizer.load_item(r.data) for r in records])
    codes = tokenizer.encode(pixels)
    decoded = tokenizer.decode(codes)
    decoded = decoded if isinstance(decoded, torch.Tensor) else torch.stack(list(decoded))
    mse = float(((decoded.float() - pixels.float()) ** 2).mean())
    return {
        "codes_with_twin": int((cosine > TWIN_COSINE).any(dim=1).sum()),
        "codebook_size": len(entries),
        "val_psnr": 10 * float(torch.log10(torch.tensor(255.0**2 / mse))),
        "distinct_codes": int(codes.tokens.unique().numel()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path, help="a recipe with data and tokenizers stages (its VQ-GAN is trained)")
    parser.add_argument("--workdir", type=Path, required=True, help="one sub-folder per variant is made here")
    parser.add_argument("--images", type=int, default=256, help="val records encoded and decoded")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--name", default="vqgan_restart_twins")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    registry = load_registry()
    rows = {}
    for variant, restart in (("uniform (mmgen)", UNIFORM_RESTART), ("far (k-means++)", far_restart)):
        VectorQuantizer.restart_dead = restart
        try:
            folders = train_tokenizers(args.recipe.resolve(), args.workdir.resolve() / variant.split()[0], registry)
        finally:
            VectorQuantizer.restart_dead = UNIFORM_RESTART
        rows[variant] = measure(folders, registry, images=args.images)
        print(variant, rows[variant], flush=True)
    result = {
        "benchmark": "vqgan_restart_twins",
        "recipe": str(args.recipe),
        "images": args.images,
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "variants": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{args.name}_{args.threads}threads"
    atomic_write_text(stem.with_suffix(".json"), json.dumps(result, indent=2))
    lines = [
        f"VQ-GAN of `{args.recipe}` trained twice (same data, seed, schedule); first {args.images} val records",
        "",
        "| restarts | codes with a twin | val PSNR | distinct codes used |",
        "|---|---|---|---|",
    ]
    for variant, row in rows.items():
        lines.append(
            f"| {variant} | {row['codes_with_twin']} of {row['codebook_size']} | {row['val_psnr']:.2f}"
            f" | {row['distinct_codes']} |"
        )
    atomic_write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
