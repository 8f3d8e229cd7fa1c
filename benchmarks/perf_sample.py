"""Sampling speed on CPU: seconds per sample and per token, MAGVLT vs ARGVLT vs two peers, with counted work.

T2I (a caption in, the image tokens out) and I2T (image tokens in, a caption out) at batch 1 and
32, random weights (speed does not depend on them), for
- MAGVLT with the maskgit sampler at the paper's settings (T2I 10 steps, I2T 12 steps after one
  length pass: samplers/maskgit.py defaults, docs/method.md "Sampler defaults");
- ARGVLT with the autoregressive sampler and its KV cache, one token per step;
- muse-maskgit-pytorch's MaskGit.generate (`bench` extra) at the same width, depth, heads and
  step counts, no guidance; for I2T it fills a square grid of at least the caption's length
  (it generates grids only);
- an x-transformers decoder (`bench` extra) with AutoregressiveWrapper.generate(cache_kv=True).
Captions are full length in every case (MAGVLT's length head set to the longest caption, ARGVLT's
end-of-text score lowered out of its top-k; the peers have no end token), so all generate the
same number of tokens.

Beside the time, per sample: FLOPs (counted by torch's FlopCounterMode over one whole generation)
and bytes moved (weights read once per forward call and shared by the batch, plus the KV cache
read at every autoregressive step; activations left out). MAGVLT runs ~10 full passes over the
whole sequence; ARGVLT runs the sequence once but one slot at a time: at batch 1 it reads all
weights once per token (bytes-bound), at batch 32 the weights are shared by 32 rows and the
FLOP count decides. Cases are interleaved round by round; the first round is a warm-up that also
counts the work and measures memory (peak RSS growth during a sample, over the built model).

    python benchmarks/perf_sample.py              # shapes (5 rounds), base batch 1 (2 rounds)
    python benchmarks/perf_sample.py --base-batches 1 32   # also base at batch 32 (tens of minutes)
    python benchmarks/perf_sample.py --quick      # tiny sizes, 1 round: checks the script
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable

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
    paired_ratio,
    peak_rss_growth,
    peer_version,
    result_stem,
    threads,
    write_results,
)
from perf_models import (
    EOS_ID,
    SIZES,
    MuseMaskGit,
    Sizes,
    XTransformersDecoder,
    architecture,
    build_ours,
    muse_installed,
    synthetic_batch,
    weight_bytes,
    xtransformers_installed,
)
from perf_train import count_flops
from torch import nn

from mmgen.api import GenerationRequest, RequestSegment
from mmgen.registry import load_registry
from mmgen.samplers.autoregressive import AutoregressiveSampler
from mmgen.samplers.maskgit import FixedLengthOptions, MaskGitSampler, VariableLengthOptions

TASKS = ("t2i", "i2t")
WHO = ("MAGVLT", "ARGVLT")  # the first two cases of every comparison
PEERS = {"muse-maskgit-pytorch": "muse_maskgit_pytorch", "x-transformers": "x_transformers"}
PAPER_STEPS = {"t2i": FixedLengthOptions().steps, "i2t": VariableLengthOptions().steps}


class SampleCase:
    """One way of generating a batch of samples; counts its forward calls through its first Linear."""

    def __init__(
        self,
        label: str,
        module: nn.Module,
        generate: Callable[[], Any],
        *,
        tokens: int,
        read_bytes: int,
        kv_bytes: float,
    ) -> None:
        self.label, self.module, self.generate, self.tokens = label, module, generate, tokens
        self.read_bytes, self.kv_bytes = read_bytes, kv_bytes  # per forward call; per sample
        self.forward_calls = 0
        first = next(m for m in module.modules() if isinstance(m, nn.Linear))
        first.register_forward_pre_hook(lambda *_: self._count())
        self.flops: int | None = None
        self.memory_mib: float | None = None
        module.eval()

    def _count(self) -> None:
        self.forward_calls += 1

    def __call__(self, round_index: int) -> None:
        if round_index == 0:  # warm-up: count the work and the memory of one generation
            self.forward_calls = 0

            def counted() -> None:
                self.flops = count_flops(self.generate)

            self.memory_mib = peak_rss_growth(counted)
            self.calls = self.forward_calls
        else:
            self.generate()


def kv_cache_bytes(sizes: Sizes, *, prompt: int, generated: int) -> float:
    """fp32 keys and values every layer reads over `generated` one-token steps after `prompt` slots."""
    arch = architecture(sizes)
    read_slots = sum(range(prompt, prompt + generated))
    return 2 * 4 * arch.depth * arch.width * read_slots


def our_requests(sizes: Sizes, task: str, batch: int) -> GenerationRequest:
    data = synthetic_batch(sizes, batch)
    image, text = data.segments
    if task == "t2i":
        context = RequestSegment(
            modality="text", tokens=text.tokens, known=torch.ones_like(text.tokens), lengths=text.lengths
        )
        target = RequestSegment(
            modality="image", tokens=torch.zeros_like(image.tokens), known=torch.zeros_like(image.tokens), target=True
        )
    else:
        context = RequestSegment(modality="image", tokens=image.tokens, known=torch.ones_like(image.tokens))
        target = RequestSegment(
            modality="text", tokens=torch.zeros_like(text.tokens), known=torch.zeros_like(text.tokens), target=True
        )
    return GenerationRequest(segments=[context, target])


def full_length_captions(model: Any, sizes: Sizes) -> None:
    """Random weights would end captions anywhere: make every caption the longest, as the peers' are."""
    width = model.architecture.width
    if hasattr(model, "length_heads"):  # MAGVLT: class k = length k + 1; the last class always wins
        head = nn.Linear(width, sizes.text_length)
        nn.init.zeros_(head.weight)
        with torch.no_grad():
            head.bias.zero_()
            head.bias[-1] = 1.0
        model.length_heads["text"] = head
    else:  # ARGVLT: end-of-text never in the top-k (the sampler still writes it in the last slot)
        start, _ = model.token_space.content_range("text")
        with torch.no_grad():
            model.output_bias[start + EOS_ID] = -1e4


def target_shape(sizes: Sizes, task: str) -> tuple[int, int, int]:
    """(generated tokens, their vocabulary, prompt tokens) of a task."""
    if task == "t2i":
        return sizes.image_tokens, sizes.image_vocab, sizes.text_length
    return sizes.text_length, sizes.text_vocab, sizes.image_tokens


def build_cases(sizes: Sizes, task: str, batch: int, *, registry: Any) -> list[SampleCase]:
    generated, vocab, prompt = target_shape(sizes, task)
    width = architecture(sizes).width
    request = our_requests(sizes, task, batch)
    cases = []
    for model_name, sampler, label in (
        ("magvlt", MaskGitSampler(), f"MAGVLT maskgit ({PAPER_STEPS[task]} steps)"),
        ("argvlt", AutoregressiveSampler(), "ARGVLT, KV cache"),
    ):
        model = build_ours(
            model_name, "causal_lm" if model_name == "argvlt" else "mask", sizes, registry=registry
        ).model
        full_length_captions(model, sizes)
        generator = torch.Generator().manual_seed(0)
        kv = kv_cache_bytes(sizes, prompt=prompt + 3, generated=generated) if model_name == "argvlt" else 0.0
        cases.append(
            SampleCase(
                label,
                model,
                lambda model=model, sampler=sampler, generator=generator: sampler.generate(
                    model, request, generator=generator
                ),
                tokens=generated,
                read_bytes=weight_bytes(model) + 4 * vocab * width,  # the tied output head reads the target's rows
                kv_bytes=kv,
            )
        )
    data = synthetic_batch(sizes, batch)
    image, text = (s.tokens for s in data.segments)
    condition, condition_vocab = (text, sizes.text_vocab) if task == "t2i" else (image, sizes.image_vocab)
    if muse_installed():
        torch.manual_seed(0)
        side = math.isqrt(generated - 1) + 1
        muse = MuseMaskGit(sizes, target_side=side, target_vocab=vocab, condition_vocab=condition_vocab)
        steps = PAPER_STEPS[task]
        cases.append(
            SampleCase(
                f"muse MaskGit ({steps} steps; {side}x{side} grid)",
                muse,
                lambda: muse.generate(condition, steps=steps),
                tokens=side * side,
                read_bytes=weight_bytes(muse),
                kv_bytes=0.0,
            )
        )
    if xtransformers_installed():
        torch.manual_seed(0)
        joint = sizes.image_vocab + sizes.text_vocab + 16
        decoder = XTransformersDecoder(sizes, joint_vocab=joint, target_vocab=vocab, max_length=prompt + generated + 4)
        cases.append(
            SampleCase(
                "x-transformers decoder, KV cache",
                decoder,
                lambda: decoder.generate(condition, length=generated),
                tokens=generated,
                read_bytes=weight_bytes(decoder),
                kv_bytes=kv_cache_bytes(sizes, prompt=prompt, generated=generated),
            )
        )
    return cases


def measure(preset: str, sizes: Sizes, task: str, batch: int, *, rounds: int, registry: Any) -> list[dict[str, Any]]:
    cases = build_cases(sizes, task, batch, registry=registry)
    times = interleaved({c.label: c for c in cases}, rounds=rounds)
    magvlt, argvlt = (c.label for c in cases[:2])
    rows = []
    for case in cases:
        seconds = median(times[case.label])
        tokens = case.tokens
        rows.append(
            {
                "preset": preset,
                "task": task,
                "batch": batch,
                "case": case.label,
                "who": WHO[cases.index(case)] if cases.index(case) < 2 else case.label.split()[0],
                "rounds": rounds,
                "seconds_per_sample": seconds / batch,
                "seconds_all_rounds": times[case.label],
                "generated_tokens": tokens,
                "seconds_per_token": seconds / batch / tokens,
                "forward_calls": case.calls,
                "flops_per_sample": case.flops / batch,
                "bytes_per_sample": case.calls * case.read_bytes / batch + case.kv_bytes,
                "peak_rss_growth_mib": case.memory_mib,
                "vs_magvlt": paired_ratio(times[case.label], times[magvlt]),
                "vs_argvlt": paired_ratio(times[case.label], times[argvlt]),
            }
        )
    return rows


def goal_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """The issue's goals as measured ratios (> 1 means the goal's first-named side is faster)."""
    by = {(r["preset"], r["task"], r["batch"], r["who"]): r for r in rows}
    table = []
    for (preset, task, batch, who), row in by.items():
        if who == "muse":
            table.append([f"{preset} {task} batch {batch}: muse time / MAGVLT time", row["vs_magvlt"], ">= 1"])
        if who == "x-transformers":
            argvlt = by[(preset, task, batch, "ARGVLT")]
            table.append(
                [
                    f"{preset} {task} batch {batch}: x-transformers s/token / ARGVLT s/token",
                    row["seconds_per_token"] / argvlt["seconds_per_token"],
                    ">= 1",
                ]
            )
        if who == "ARGVLT":
            magvlt = by[(preset, task, batch, "MAGVLT")]
            goal = (
                {("base", 1): ">= 2", ("shapes", 1): ">= 3"}.get((preset, batch), "reported")
                if task == "t2i"
                else "reported"
            )
            flops = row["flops_per_sample"] / magvlt["flops_per_sample"]
            moved = row["bytes_per_sample"] / magvlt["bytes_per_sample"]
            label = f"{preset} {task} batch {batch}: ARGVLT time / MAGVLT time (FLOPs {flops:.2f}x, bytes {moved:.2f}x)"
            table.append([label, row["vs_magvlt"], goal])
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_options(parser, stem="perf_sample")
    parser.add_argument("--presets", nargs="+", default=["shapes", "base"], choices=["shapes", "base"])
    parser.add_argument("--base-batches", nargs="+", type=int, default=[1], help="batch sizes for base (default 1)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default shapes 5, base 2)")
    args = parser.parse_args()
    torch.set_num_threads(threads(args))
    registry = load_registry()
    described = machine()
    presets = {"quick": SIZES["quick"]} if args.quick else {p: SIZES[p] for p in args.presets}
    rows, rates = [], {}
    for preset, sizes in presets.items():
        width = architecture(sizes).width
        rates[preset] = matmul_rate([width, 4 * width], repeats=2 if args.quick else 5)["best"]
        rounds = args.rounds or (1 if args.quick else 2 if preset == "base" else 5)
        for batch in args.base_batches if preset == "base" else (1, 32):
            for task in TASKS:
                print(f"{preset} {task} batch {batch}: {rounds} round(s) after a warm-up...", flush=True)
                rows += measure(preset, sizes, task, batch, rounds=rounds, registry=registry)
    for row in rows:
        row["achieved_fraction_of_matmul_rate"] = (
            row["flops_per_sample"] / row["seconds_per_sample"] / rates[row["preset"]]
        )
    peers = {name: peer_version(name, module) or NOT_INSTALLED for name, module in PEERS.items()}
    result = {
        "benchmark": "perf_sample",
        "quick": args.quick,
        "machine": described,
        "matmul_rate": rates,
        "paper_steps": PAPER_STEPS,
        "peers": peers,
        "rows": rows,
    }
    header = [
        "preset",
        "task",
        "batch",
        "case",
        "s/sample",
        "ms/token",
        "vs MAGVLT",
        "GFLOP/sample",
        "MB moved/sample",
        "FLOP/s / matmul rate",
        "peak RSS growth (MiB)",
    ]
    table = [
        [
            r["preset"],
            r["task"],
            r["batch"],
            r["case"],
            r["seconds_per_sample"],
            1e3 * r["seconds_per_token"],
            r["vs_magvlt"],
            r["flops_per_sample"] / 1e9,
            r["bytes_per_sample"] / 1e6,
            r["achieved_fraction_of_matmul_rate"],
            "n/a" if r["peak_rss_growth_mib"] is None else r["peak_rss_growth_mib"],
        ]
        for r in rows
    ]
    missing = [name for name, version in peers.items() if version == NOT_INSTALLED]
    lines = [
        "# Sampling speed (random weights, full-length outputs)",
        "",
        f"`python benchmarks/perf_sample.py{' --quick' if args.quick else ''}`: {machine_line(described)}.",
        "fp32 matmul rate: "
        + "; ".join(f"{p} {r / 1e9:.1f} GFLOP/s" for p, r in rates.items())
        + ". Peers: "
        + ", ".join(f"{n} {v}" for n, v in peers.items())
        + f" ({BENCH_EXTRA}).",
        "",
        *markdown_table(header, table),
        *(f"| | | | {name}: {NOT_INSTALLED} | | | | | | | |" for name in missing),
        "",
        "vs MAGVLT: the case's time over MAGVLT's, median of the per-round ratios (< 1: faster than MAGVLT)."
        " GFLOP/sample: counted over one generation. MB moved/sample: weights once per forward call, shared by"
        " the batch, plus the KV cache each autoregressive step reads (activations left out).",
        "",
        "## Goals (issue 22)",
        "",
        *markdown_table(["ratio", "measured", "goal"], goal_rows(rows)),
    ]
    write_results(args.out, result_stem(args, "perf_sample"), result, lines)


if __name__ == "__main__":
    main()
