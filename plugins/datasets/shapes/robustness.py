"""How the image oracle holds up on degraded renders (Gaussian blur, JPEG).

Run: `python -m mmgen.plugins.datasets.shapes.robustness --out runs/oracle_robustness`
Writes JSON and a Markdown table: per degradation and canvas size, the share of
scenes read exactly and the per-attribute share of objects read right.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter

from .image_oracle import read_image
from .render import render, sample_scene
from .spec import CELLS

Degrade = Callable[[np.ndarray], np.ndarray]


def blur(radius: float) -> Degrade:
    def apply(pixels: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(radius)))

    return apply


def jpeg(quality: int) -> Degrade:
    def apply(pixels: np.ndarray) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
        return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))

    return apply


DEGRADATIONS: dict[str, Degrade] = {
    "clean": lambda pixels: pixels,
    "blur r=0.5": blur(0.5),
    "blur r=1.0": blur(1.0),
    "blur r=1.5": blur(1.5),
    "jpeg q=90": jpeg(90),
    "jpeg q=75": jpeg(75),
    "jpeg q=50": jpeg(50),
    "jpeg q=25": jpeg(25),
}


def measure(degrade: Degrade, *, size: int, scenes: int, seed: int, max_objects: int = 3) -> dict[str, float]:
    """Share of scenes read exactly, and per attribute the share of true objects matched by cell and right."""
    rng = np.random.default_rng(seed)
    exact = 0
    right = dict.fromkeys(("found", "colour", "shape", "size"), 0)
    total = 0
    for _ in range(scenes):
        scene = sample_scene(rng, size=size, max_objects=max_objects)
        truth = sorted(scene.specs, key=lambda s: CELLS.index(s.cell))
        read = read_image(degrade(render(scene, size)), size=size)
        exact += read == truth
        by_cell = {spec.cell: spec for spec in read}
        for spec in truth:
            total += 1
            got = by_cell.get(spec.cell)
            if got is not None:
                right["found"] += 1
                for attribute in ("colour", "shape", "size"):
                    right[attribute] += getattr(got, attribute) == getattr(spec, attribute)
    return {"scenes_exact": exact / scenes, **{k: v / total for k, v in right.items()}}


def markdown(rows: list[dict]) -> str:
    lines = [
        "| degradation | S | scenes exact | objects found | colour | shape | size |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['degradation']} | {r['size']} | {r['scenes_exact']:.3f} | {r['found']:.3f} | "
            f"{r['colour']:.3f} | {r['shape']:.3f} | {r['size_attr']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/oracle_robustness"))
    parser.add_argument("--scenes", type=int, default=100)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = []
    for name, degrade in DEGRADATIONS.items():
        for size in args.sizes:
            result = measure(degrade, size=size, scenes=args.scenes, seed=args.seed)
            result["size_attr"] = result.pop("size")
            rows.append({"degradation": name, "size": size, "scenes": args.scenes, **result})
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    from mmgen.api import atomic_write_text

    atomic_write_text(args.out / "oracle_robustness.json", json.dumps(rows, indent=2))
    atomic_write_text(args.out / "oracle_robustness.md", markdown(rows))


if __name__ == "__main__":
    main()
