"""What checking artefacts costs: hashing a stage folder against loading it, and a hashed checkpoint write
against a plain one, each pair timed in the same process.

1. Read side: `stage_folder.verify` (sha256 of every file, as the runner and `mmgen generate` do before a
   stage reads its inputs) of the shipped model and tokenizers folders, against loading them
   (`load_trained_model` + `load_saved_tokenizers`). Verification is cold each time (its per-process
   memo is cleared), as in a fresh `mmgen generate`.
2. Write side: `checkpoint.write_atomic` (serialise, sha256, `.sha256` then the checkpoint, both fsynced)
   against `torch.save` to a file of a state the size of a training checkpoint of that model.

    python benchmarks/artefact_verify_overhead.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mmgen import stage_folder
from mmgen.atomic import atomic_write_text
from mmgen.checkpoint import write_atomic
from mmgen.plugins.models.saved import load_trained_model
from mmgen.registry import load_registry
from mmgen.tokenizers.saved import load_saved_tokenizers

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints" / "shapes" / "artefacts"


def median_seconds(work, *, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def read_side(registry, *, repeats: int) -> dict[str, float]:
    (train,) = SHIPPED.glob("captions-*")  # the shipped model
    (tokenizers,) = SHIPPED.glob("tokenizers-*")

    def verify() -> None:
        stage_folder._verified.clear()  # cold, as in a new process
        stage_folder.verify(train)
        stage_folder.verify(tokenizers)

    def load() -> None:
        load_trained_model(train, registry)
        load_saved_tokenizers(tokenizers, registry)

    sizes = sum(p.stat().st_size for folder in (train, tokenizers) for p in folder.rglob("*") if p.is_file())
    verify_s, load_s = median_seconds(verify, repeats=repeats), median_seconds(load, repeats=repeats)
    return {"bytes": sizes, "verify_s": verify_s, "load_s": load_s, "verify_over_load": verify_s / load_s}


def write_side(registry, *, repeats: int) -> dict[str, float]:
    (train,) = SHIPPED.glob("captions-*")  # the shipped model
    model = load_trained_model(train, registry)
    optimizer = torch.optim.AdamW(model.parameters())
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()  # AdamW's two moments per weight: a checkpoint's real size
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": 1}
    with tempfile.TemporaryDirectory() as tmp:
        plain_path, hashed_path = Path(tmp) / "plain.pt", Path(tmp) / "step-00000001.pt"
        plain_s = median_seconds(lambda: torch.save(state, plain_path), repeats=repeats)
        hashed_s = median_seconds(lambda: write_atomic(hashed_path, state), repeats=repeats)
        size = hashed_path.stat().st_size
    return {"bytes": size, "torch_save_s": plain_s, "hashed_write_s": hashed_s, "hashed_over_plain": hashed_s / plain_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    registry = load_registry()
    result = {
        "benchmark": "artefact_verify_overhead",
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s)",
        "repeats": args.repeats,
        "read": read_side(registry, repeats=args.repeats),
        "write": write_side(registry, repeats=args.repeats),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "artefact_verify_overhead.json", json.dumps(result, indent=2))
    read, write = result["read"], result["write"]
    lines = [
        "# Artefact checks: cost against the work they guard",
        "",
        f"`python benchmarks/artefact_verify_overhead.py` ({result['machine']}; median of {args.repeats}).",
        "",
        "| what | bytes | checked | baseline | ratio |",
        "|---|---|---|---|---|",
        f"| read: verify vs load (shipped model + tokenizers) | {read['bytes']:,} | {read['verify_s'] * 1000:.1f} ms "
        f"| {read['load_s'] * 1000:.1f} ms | {read['verify_over_load']:.2f} |",
        f"| write: hashed atomic checkpoint vs torch.save | {write['bytes']:,} | {write['hashed_write_s'] * 1000:.1f} ms "
        f"| {write['torch_save_s'] * 1000:.1f} ms | {write['hashed_over_plain']:.2f} |",
    ]
    atomic_write_text(args.out / "artefact_verify_overhead.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
