"""Training throughput on CPU: tokens/s and achieved FLOP/s as a share of this machine's fp32 matmul rate.

One optimizer update (forward, backward, gradient clipping, fused AdamW) through the trainer's own
update (`Trainer.step`, the path `mmgen run` trains with) on a fixed synthetic T2I batch, for
- MAGVLT with the train stage's default objectives (mask + target length + UnrollMask + MixSel:
  three forward-backward passes per update), `shapes` only by default;
- MAGVLT with the mask objective alone (one forward-backward, as the peers);
- ARGVLT with causal_lm (one forward-backward, left-to-right attention);
- the peer muse-maskgit-pytorch MaskGit (`bench` extra) at the same width, depth, heads, vocabularies
  and tokens, through the same trainer update ("not installed" without it).

FLOPs are counted (torch's FlopCounterMode: every matmul and attention product, forward and
backward, of one update; attention counted in full even where causal) and divided by the median
update time: achieved FLOP/s. The matmul rate is measured in the same run (square fp32 GEMMs of
the model's width and MLP width, perf_common.matmul_rate). Cases of a preset are timed in
interleaved rounds; the first round is a warm-up and measures memory: peak RSS growth during the
first update of the built model (gradients, AdamW state, activations), beside the weights' size.

    python benchmarks/perf_train.py                 # shapes (6 rounds) and base (2 rounds): ~10 min on 2 cores
    python benchmarks/perf_train.py --quick         # tiny sizes, 1 round: checks the script
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path
from typing import Any

import torch
from perf_common import (
    BENCH_EXTRA,
    NOT_INSTALLED,
    add_common_options,
    interleaved,
    machine,
    machine_line,
    markdown_table,
    matmul_rate,
    median,
    peak_rss_growth,
    peer_version,
    result_stem,
    threads,
    write_results,
)
from perf_models import (
    SIZES,
    MuseMaskGit,
    Sizes,
    architecture,
    batch_tokens,
    build_ours,
    muse_installed,
    synthetic_batch,
)
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from mmgen.api import ObjectiveOutput
from mmgen.registry import load_registry
from mmgen.trainer import Trainer, TrainerConfig

MUSE = "muse MaskGit (peer)"

# Torch's counter knows the GPU attention kernels; the CPU flash kernel gets the same formulas.
CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: (
        lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v)
    ),
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: (
        lambda grad, q, k, v, *args, out_shape=None, **kwargs: sdpa_backward_flop_count(grad, q, k, v)
    ),
}


def count_flops(work: Any) -> int:
    """Matmul and attention FLOPs `work()` runs (forward and backward)."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
        work()
    return counter.get_total_flops()


class UpdateCase:
    """One model's optimizer update on a fixed batch, through the trainer's update."""

    def __init__(self, label: str, module: torch.nn.Module, loss_fn: Any, batch: Any, *, tokens: int, out_dir: Path):
        config = TrainerConfig(steps=10**9, batch_size=len(batch.segments[0].tokens), warmup_steps=0)
        self.label, self.tokens, self.loss_fn = label, tokens, loss_fn
        self.trainer = Trainer(config, out_dir=out_dir, quiet=True)
        self.module, self.batch = module, batch
        self.trainer.start(module, loss_fn=loss_fn, stream=itertools.repeat(batch))
        self.parameters = sum(p.numel() for p in module.parameters())
        self.memory_mib: float | None = None

    def __call__(self, round_index: int) -> None:
        if round_index == 0:  # the warm-up round: the first update allocates gradients and AdamW state
            self.memory_mib = peak_rss_growth(self.trainer.step)
        else:
            self.trainer.step()

    def flops(self) -> int:
        generator = torch.Generator().manual_seed(0)

        def forward_backward() -> None:
            self.loss_fn(self.module, self.batch, 0, generator).loss.backward()

        flops = count_flops(forward_backward)
        self.module.zero_grad(set_to_none=True)
        return flops


def our_case(label: str, model: str, objectives: str, sizes: Sizes, batch: Any, *, registry: Any, out_dir: Path):
    training = build_ours(model, objectives, sizes, registry=registry)
    return UpdateCase(label, training.model, training.loss, batch, tokens=batch_tokens(batch), out_dir=out_dir)


def muse_case(sizes: Sizes, batch: Any, *, out_dir: Path) -> UpdateCase:
    torch.manual_seed(0)
    module = MuseMaskGit(
        sizes, target_side=sizes.image_side, target_vocab=sizes.image_vocab, condition_vocab=sizes.text_vocab
    )
    image, text = batch.segments[0].tokens, batch.segments[1].tokens
    tokens = batch_tokens(batch)

    def loss_fn(module: MuseMaskGit, _batch: Any, _step: int, _generator: Any) -> ObjectiveOutput:
        return ObjectiveOutput(loss=module.loss(image, text), metrics={"tokens": float(tokens)})

    return UpdateCase(MUSE, module, loss_fn, batch, tokens=tokens, out_dir=out_dir)


def case_groups(preset: str, sizes: Sizes, *, registry: Any, out_dir: Path) -> list[list[Any]]:
    """Cases timed together (interleaved); groups run one after another, so base never holds 4 models at once."""
    batch = synthetic_batch(sizes, sizes.train_batch)
    build = dict(registry=registry, out_dir=out_dir)
    paper = (
        []
        if preset == "base"
        else [lambda: our_case("MAGVLT, paper objectives", "magvlt", "paper", sizes, batch, **build)]
    )
    mask = lambda: our_case("MAGVLT, mask objective", "magvlt", "mask", sizes, batch, **build)  # noqa: E731
    causal = lambda: our_case("ARGVLT, causal_lm", "argvlt", "causal_lm", sizes, batch, **build)  # noqa: E731
    peer = [lambda: muse_case(sizes, batch, out_dir=out_dir)] if muse_installed() else []
    if preset == "base":  # ~6 GB per model with its gradients and AdamW state: two at a time
        return [[mask, *peer], [causal]]
    return [[*paper, mask, causal, *peer]]


def measure_preset(preset: str, sizes: Sizes, *, rounds: int, registry: Any) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for group in case_groups(preset, sizes, registry=registry, out_dir=Path(tmp)):
            cases = [build() for build in group]
            times = interleaved(
                {c.label: c for c in cases},
                rounds=rounds,
                on_round=lambda done: print(f"  {preset}: round {done} of {rounds + 1} done", flush=True),
            )
            for case in cases:
                seconds = median(times[case.label])
                flops = case.flops()
                rows.append(
                    {
                        "preset": preset,
                        "case": case.label,
                        "parameters": case.parameters,
                        "batch": sizes.train_batch,
                        "tokens_per_step": case.tokens,
                        "seconds_per_step": seconds,
                        "seconds_all_rounds": times[case.label],
                        "tokens_per_s": case.tokens / seconds,
                        "counted_flops_per_step": flops,
                        "achieved_flops_per_s": flops / seconds,
                        "first_step_peak_rss_growth_mib": case.memory_mib,
                        "weights_mib": 4 * case.parameters / 2**20,
                    }
                )
            del cases
    return rows


GOAL_FRACTION = {"base": 0.90, "shapes": 0.80}


def goal_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """The issue's training goals as measured ratios: share of the matmul rate; muse's time over ours."""
    table = []
    for row in rows:
        goal = f">= {GOAL_FRACTION[row['preset']]:.2f}" if row["preset"] in GOAL_FRACTION else "reported"
        table.append([f"{row['preset']} {row['case']}: achieved / matmul rate", row["fraction_of_matmul_rate"], goal])
    by = {(r["preset"], r["case"]): r for r in rows}
    for (preset, case), row in by.items():
        peer = by.get((preset, MUSE))
        if peer is not None and case != MUSE:
            table.append(
                [
                    f"{preset}: muse s/step / {case} s/step",
                    peer["seconds_per_step"] / row["seconds_per_step"],
                    "reported",
                ]
            )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_options(parser, stem="perf_train")
    parser.add_argument("--presets", nargs="+", default=["shapes", "base"], choices=["shapes", "base"])
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per preset (default shapes 6, base 2)")
    args = parser.parse_args()
    torch.set_num_threads(threads(args))
    registry = load_registry()
    described = machine()
    presets = {"quick": SIZES["quick"]} if args.quick else {p: SIZES[p] for p in args.presets}
    rows, rates = [], {}
    for preset, sizes in presets.items():
        width = architecture(sizes).width
        rates[preset] = matmul_rate([width, 4 * width], repeats=2 if args.quick else 5)
        print(f"{preset}: fp32 matmul {rates[preset]['best'] / 1e9:.1f} GFLOP/s; timing...", flush=True)
        rounds = args.rounds or (1 if args.quick else 2 if preset == "base" else 6)
        for row in measure_preset(preset, sizes, rounds=rounds, registry=registry):
            row["rounds"] = rounds
            row["fraction_of_matmul_rate"] = row["achieved_flops_per_s"] / rates[preset]["best"]
            rows.append(row)
        # The matmul rate again at the end: a neighbour's load shows as a change.
        rates[preset]["best_after"] = matmul_rate([width, 4 * width], repeats=2 if args.quick else 5)["best"]
    muse = peer_version("muse-maskgit-pytorch", "muse_maskgit_pytorch")
    result = {
        "benchmark": "perf_train",
        "quick": args.quick,
        "machine": described,
        "matmul_rate": rates,
        "peers": {"muse-maskgit-pytorch": muse or NOT_INSTALLED},
        "rows": rows,
    }
    header = [
        "preset",
        "case",
        "params (M)",
        "batch",
        "tokens/step",
        "s/step",
        "tokens/s",
        "GFLOP/step",
        "GFLOP/s",
        "/ matmul rate",
        "first-step RSS growth (MiB)",
        "weights (MiB)",
    ]
    table = [
        [
            r["preset"],
            r["case"],
            r["parameters"] / 1e6,
            r["batch"],
            r["tokens_per_step"],
            r["seconds_per_step"],
            r["tokens_per_s"],
            r["counted_flops_per_step"] / 1e9,
            r["achieved_flops_per_s"] / 1e9,
            r["fraction_of_matmul_rate"],
            "n/a" if r["first_step_peak_rss_growth_mib"] is None else r["first_step_peak_rss_growth_mib"],
            r["weights_mib"],
        ]
        for r in rows
    ]
    if muse is None:
        table += [[preset, MUSE, *[NOT_INSTALLED] * 10] for preset in presets]
    lines = [
        "# Training throughput (one optimizer update, synthetic T2I batch)",
        "",
        f"`python benchmarks/perf_train.py{' --quick' if args.quick else ''}`: {machine_line(described)}.",
        "fp32 matmul rate (square GEMMs of width and MLP width, best size; start / end of the preset): "
        + "; ".join(f"{p} {r['best'] / 1e9:.1f} / {r['best_after'] / 1e9:.1f} GFLOP/s" for p, r in rates.items())
        + f". Peers: muse-maskgit-pytorch {muse or NOT_INSTALLED} ({BENCH_EXTRA}).",
        "",
        *markdown_table(header, table),
        "",
        "## Goals (issue 22)",
        "",
        *markdown_table(["ratio", "measured", "goal"], goal_rows(rows)),
        "",
        "GFLOP/step: matmul and attention FLOPs of the update's forward and backward, counted by torch's"
        " FlopCounterMode. / matmul rate: achieved GFLOP/s over the matmul rate above. Medians of "
        + ", ".join(f"{p} {rows_rounds} rounds" for p, rows_rounds in {r["preset"]: r["rounds"] for r in rows}.items())
        + " after a warm-up round, the cases of a preset interleaved.",
    ]
    write_results(args.out, result_stem(args, "perf_train"), result, lines)


if __name__ == "__main__":
    main()
