"""torch.compile on this CPU: a MAGVLT training update and T2I sampling, eager against compiled.

Issue 22 asks for torch.compile to be measured and used where it helps on the CPU. Each case runs
the same work twice in one process, interleaved round by round: the eager model, and a copy with
`module.compile()` (what `trainer.compile: true` does for training; for sampling the model's
forward is compiled in place, so the sampler's own code is unchanged). The first round, which
includes compiling, is timed separately as the compile cost; the ratio is the median of per-round
compiled / eager times (below 1: compiled is faster). Outputs are compared too: the compiled
update's loss and the sampled tokens against the eager ones from the same seed.

    python benchmarks/perf_compile.py            # shapes preset, 2 threads (compiling alone takes minutes)
    python benchmarks/perf_compile.py --quick    # tiny sizes, 1 round: checks the script (also minutes)
"""

from __future__ import annotations

import argparse
import copy
import itertools
import time
from pathlib import Path
from typing import Any, Callable

import torch
from perf_common import (
    add_common_options,
    interleaved,
    machine,
    machine_line,
    markdown_table,
    matmul_rate,
    median,
    paired_ratio,
    result_stem,
    threads,
    write_results,
)
from perf_models import SIZES, Sizes, architecture, build_ours, synthetic_batch
from perf_sample import full_length_captions, our_requests

from mmgen.registry import load_registry
from mmgen.samplers.maskgit import MaskGitSampler
from mmgen.trainer import Trainer, TrainerConfig

PAPER_STEPS = {"t2i": 10, "i2t": 12}


def update_case(
    training: Any, batch: Any, *, compiled: bool, out_dir: Path
) -> tuple[Callable[[int], Any], list[float]]:
    """One optimizer update per call, eager or compiled; the losses it returned, in order."""
    config = TrainerConfig(steps=10**9, batch_size=len(batch.segments[0].tokens), warmup_steps=0, compile=compiled)
    trainer = Trainer(config, out_dir=out_dir, quiet=True)
    trainer.start(copy.deepcopy(training.model), loss_fn=training.loss, stream=itertools.repeat(batch))
    losses: list[float] = []

    def run(_: int) -> None:
        losses.append(float(trainer.step().metrics["loss"]))

    return run, losses


def sample_case(model: Any, request: Any, *, compiled: bool) -> tuple[Callable[[int], Any], list[torch.Tensor]]:
    """One generation of `request` per call (maskgit, the paper's steps), from a generator seeded per round."""
    model = copy.deepcopy(model).eval()
    if compiled:
        model.compile()
    sampler = MaskGitSampler()  # the paper's defaults: T2I 10 steps
    outputs: list[torch.Tensor] = []

    def run(round_index: int) -> None:
        out = sampler.generate(model, request, generator=torch.Generator().manual_seed(round_index))
        outputs.append(out.segments[0].tokens)

    return run, outputs


def measure_pair(
    label: str, eager: Callable[[int], Any], compiled: Callable[[int], Any], *, rounds: int
) -> dict[str, Any]:
    started = time.perf_counter()
    compiled(0)  # compiling happens here
    compile_seconds = time.perf_counter() - started
    times = interleaved({"eager": eager, "compiled": compiled}, rounds=rounds)
    return {
        "case": label,
        "eager_seconds": median(times["eager"]),
        "compiled_seconds": median(times["compiled"]),
        "compiled_over_eager": paired_ratio(times["compiled"], times["eager"]),
        "first_compiled_call_seconds": compile_seconds,
        "rounds": rounds,
    }


def measure(sizes: Sizes, *, rounds: int, registry: Any, out_dir: Path) -> list[dict[str, Any]]:
    rows = []
    training = build_ours("magvlt", "mask", sizes, registry=registry)
    batch = synthetic_batch(sizes, sizes.train_batch)
    eager, eager_losses = update_case(training, batch, compiled=False, out_dir=out_dir / "eager")
    compiled, compiled_losses = update_case(training, batch, compiled=True, out_dir=out_dir / "compiled")
    row = measure_pair(f"train update, batch {sizes.train_batch} (mask objective)", eager, compiled, rounds=rounds)
    # The two copies make the same updates: the losses of the first update agree to float rounding.
    row["first_loss_eager_compiled"] = [eager_losses[0], compiled_losses[0]]
    rows.append(row)
    model = training.model
    full_length_captions(model, sizes)
    # T2I only: I2T's predicted caption lengths change the sequence length from batch to batch, and each
    # new length compiles again (minutes on 2 cores), which no sampling run would earn back.
    for task in ("t2i",):
        for batch_size in (1, 32):
            request = our_requests(sizes, task, batch_size)
            eager, eager_out = sample_case(model, request, compiled=False)
            compiled, compiled_out = sample_case(model, request, compiled=True)
            label = f"{task.upper()} sampling, batch {batch_size} ({PAPER_STEPS[task]} steps)"
            row = measure_pair(label, eager, compiled, rounds=rounds)
            # Same seed per round: the share of tokens that agree (float rounding can flip a draw).
            seeds = min(len(eager_out), len(compiled_out) - 1)
            agree = [(eager_out[i] == compiled_out[i + 1]).float().mean().item() for i in range(seeds)]
            row["tokens_agreeing_same_seed"] = median(agree) if agree else None
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_options(parser, stem="perf_compile")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5)")
    args = parser.parse_args()
    torch.set_num_threads(threads(args))
    registry = load_registry()
    described = machine()
    preset = "quick" if args.quick else "shapes"
    sizes = SIZES[preset]
    width = architecture(sizes).width
    rate = matmul_rate([width, 4 * width], repeats=2 if args.quick else 5)["best"]
    rounds = args.rounds or (1 if args.quick else 5)
    work = Path(args.out) / ".perf_compile_work"
    rows = measure(sizes, rounds=rounds, registry=registry, out_dir=work)
    result = {"benchmark": "perf_compile", "quick": args.quick, "machine": described, "preset": preset,
              "matmul_rate": rate, "rows": rows}  # fmt: skip
    header = ["case", "eager s", "compiled s", "compiled / eager", "first compiled call s"]
    table = [
        [r["case"], f"{r['eager_seconds']:.4f}", f"{r['compiled_seconds']:.4f}", f"{r['compiled_over_eager']:.2f}",
         f"{r['first_compiled_call_seconds']:.1f}"]
        for r in rows
    ]  # fmt: skip
    lines = [
        f"# torch.compile: eager against compiled ({preset} preset)",
        "",
        machine_line(described),
        "",
        f"Command: `python benchmarks/perf_compile.py{' --quick' if args.quick else ''}`; {rounds} round(s) after the"
        " first (compiling) call; medians; ratio = median of per-round compiled / eager.",
        "",
        *markdown_table(header, table),
    ]
    write_results(args.out, result_stem(args, "perf_compile"), result, lines)


if __name__ == "__main__":
    main()
