"""Two sampler changes of issue 22 against what they replaced, in one process on the same inputs.

- token draws: `torch.multinomial` over softmax (what the samplers did) against the Gumbel-max draw
  `samplers/draws.py::categorical` (what they do), for every masked token of a batch: shapes T2I at
  batch 32 is 32 x 64 positions over 512 codes; base is 32 x 256 over 16,384;
- classifier-free guidance: the conditional and unconditional passes as two forward calls (before)
  against one call over 2B rows (`MaskGitSampler._logits` now), on a MAGVLT of the preset with random
  weights, T2I layout at batch 1 to 32 (where one batch stops paying: `ONE_GUIDED_BATCH_ROWS`).

Each pair is interleaved round by round; ratio = median of per-round new / old times (< 1: faster).

    python benchmarks/perf_draws.py           # shapes sizes, 2 threads (about a minute)
    python benchmarks/perf_draws.py --quick   # tiny sizes, 1 round: checks the script
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from perf_common import (
    add_common_options,
    interleaved,
    machine,
    machine_line,
    markdown_table,
    median,
    paired_ratio,
    result_stem,
    threads,
    write_results,
)
from perf_models import SIZES, build_ours
from perf_sample import our_requests

from mmgen.api import Part, Segment, guide
from mmgen.registry import load_registry
from mmgen.samplers.draws import categorical
from mmgen.samplers.maskgit import _as_known, _Known, _target_logits, _twice


def draws_pair(rows: int, vocab: int) -> dict[str, Any]:
    logits = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(0)).log_softmax(-1)
    generator = torch.Generator().manual_seed(1)

    def multinomial(_: int) -> None:
        torch.multinomial(logits.exp(), 1, generator=generator)

    def gumbel_max(_: int) -> None:
        categorical(logits, generator=generator)

    return {"old": multinomial, "new": gumbel_max}


def guidance_pair(model: Any, request: Any) -> dict[str, Any]:
    context = [_as_known(part) for part in request.segments if not part.target]
    target_part = next(part for part in request.segments if part.target)
    target = Segment(modality=target_part.modality, tokens=target_part.tokens, lengths=torch.full(
        (target_part.tokens.shape[0],), target_part.tokens.shape[1], dtype=torch.long))  # fmt: skip
    masked = torch.ones_like(target.tokens, dtype=torch.bool)

    @torch.no_grad()
    def two_passes(_: int) -> None:
        cond = _target_logits(model, context, Part(segment=target, mask=masked))
        dropped = [type(c)(segment=c.segment, mask=torch.ones_like(c.mask)) for c in context]
        uncond = _target_logits(model, dropped, Part(segment=target, mask=masked))
        guide(cond, uncond, 2.0)

    @torch.no_grad()
    def one_batch(_: int) -> None:
        # What MaskGitSampler._logits does up to ONE_GUIDED_BATCH_ROWS rows.
        both = [_Known(segment=_twice(c.segment), mask=torch.cat([c.mask, torch.ones_like(c.mask)])) for c in context]
        logits = _target_logits(model, both, Part(segment=_twice(target), mask=masked.repeat(2, 1)))
        cond, uncond = logits.chunk(2)
        guide(cond, uncond, 2.0)

    return {"old": two_passes, "new": one_batch}


def measure(label: str, pair: dict[str, Any], *, rounds: int) -> dict[str, Any]:
    times = interleaved(pair, rounds=rounds)
    return {
        "case": label,
        "old_seconds": median(times["old"]),
        "new_seconds": median(times["new"]),
        "new_over_old": paired_ratio(times["new"], times["old"]),
        "rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_options(parser, stem="perf_draws")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 20)")
    args = parser.parse_args()
    torch.set_num_threads(threads(args))
    described = machine()
    rounds = args.rounds or (1 if args.quick else 20)
    presets = ["quick"] if args.quick else ["shapes", "base"]
    rows = []
    for preset in presets:
        sizes = SIZES[preset]
        for batch in (1, 32):
            tokens = f"{batch} x {sizes.image_tokens} tokens of {sizes.image_vocab}"
            label = f"{preset}: draw {tokens}: multinomial -> Gumbel-max"
            rows.append(measure(label, draws_pair(batch * sizes.image_tokens, sizes.image_vocab), rounds=rounds))
    registry = load_registry()
    sizes = SIZES["quick" if args.quick else "shapes"]
    model = build_ours("magvlt", "mask", sizes, registry=registry).model.eval()
    for batch in (1, 2, 4, 8, 16, 32):
        label = f"{sizes.preset}: guided T2I logits, batch {batch}: two passes -> one batch of 2B rows"
        rows.append(measure(label, guidance_pair(model, our_requests(sizes, "t2i", batch)), rounds=rounds))
    result = {"benchmark": "perf_draws", "quick": args.quick, "machine": described, "rows": rows}
    header = ["case", "old s", "new s", "new / old"]
    table = [
        [r["case"], f"{r['old_seconds']:.5f}", f"{r['new_seconds']:.5f}", f"{r['new_over_old']:.2f}"] for r in rows
    ]
    lines = [
        "# Sampler changes of issue 22 against what they replaced",
        "",
        machine_line(described),
        "",
        f"Command: `python benchmarks/perf_draws.py{' --quick' if args.quick else ''}`; {rounds} round(s) after a"
        " warm-up; medians; new / old = median of per-round ratios.",
        "",
        *markdown_table(header, table),
    ]
    write_results(args.out, result_stem(args, "perf_draws"), result, lines)


if __name__ == "__main__":
    main()
