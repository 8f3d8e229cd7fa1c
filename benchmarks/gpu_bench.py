"""One GPU, bf16, MAGVLT `base` with random weights: matmul rate, training tokens/s and MFU, sampling latency.

    benchmarks/gpu.sh                                  # what to run whenever a GPU is lent (at most 5 minutes)
    python benchmarks/gpu_bench.py --smoke --out DIR   # the CPU check of the whole script (tiny preset, seconds)

Parts, each time-boxed so the whole run ends within `--budget` seconds:
1. the card's dense bf16 matmul rate (square matmuls, measured in this run);
2. training: AdamW updates of `base` under bf16 autocast on [BOC] text [BOG] image sequences (the paper's
   64 + 256 tokens) with every text and image slot scored, as `mmgen estimate` counts the mask objective.
   Model FLOPs per update = 6 x (every Linear weight x every slot + each modality's output projection, V x D,
   x its slots) x batch: the matmuls of forward and backward, attention scores left out (about 5% more at
   this length). MFU = model FLOPs/s over the measured matmul rate and over the card's nominal dense bf16 peak
   (looked up by name: H100 and H200 989 TFLOP/s, A100 312);
3. sampling latency, batch 1 and 32: MAGVLT T2I and I2T with the paper's step counts (maskgit: 10 image,
   12 text steps) against ARGVLT token by token with its KV cache, both at the same size.

Writes benchmarks/results/gpu_bench-<card>.json and .md (`--out` elsewhere). Without a GPU and without
`--smoke` it prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

# Dense bf16 tensor-core peaks (no sparsity), TFLOP/s, by a name fragment of torch.cuda.get_device_name().
NOMINAL_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}
MARKERS = ("BOG_LEFT", "BOG_RIGHT", "BOG_TOP", "BOG_BOTTOM")  # MixSel's, so `base` has the paper's 371.5M


class Deadline:
    """The run's time box: each part gets what is left of the budget, up to its own share."""

    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], *, device: torch.device, seconds: float, at_most: int = 1000) -> tuple[float, int]:
    """(mean seconds per call, calls) of `fn` after one warm-up call, repeating for about `seconds`."""
    fn()
    sync(device)
    start, calls = time.perf_counter(), 0
    while calls < at_most and (calls == 0 or time.perf_counter() - start < seconds):
        fn()
        calls += 1
        sync(device)
    return (time.perf_counter() - start) / calls, calls


def nominal_tflops(card: str) -> float | None:
    return next((value for name, value in NOMINAL_TFLOPS.items() if name in card), None)


def matmul_rate(device: torch.device, *, smoke: bool, seconds: float) -> dict[str, Any]:
    size = 256 if smoke else 8192
    dtype = torch.float32 if smoke else torch.bfloat16
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    per_call, calls = timed(lambda: a @ b, device=device, seconds=seconds, at_most=2 if smoke else 1000)
    tflops = 2 * size**3 / per_call / 1e12
    return {"size": size, "dtype": str(dtype).removeprefix("torch."), "calls": calls, "tflops": tflops}


def joint_space(smoke: bool) -> Any:
    from mmgen.token_space import JointTokenSpace, TokenSpace

    side, codes, words, length = (4, 32, 64, 8) if smoke else (16, 16_384, 49_408, 64)
    image = TokenSpace(name="image", vocab_size=codes, shape=(side, side))
    text = TokenSpace(name="text", vocab_size=words, shape=(length,), variable_length=True, pad_id=1, eos_id=1)
    return JointTokenSpace(spaces=(image, text), extra_specials=MARKERS)


def build(name: str, space: Any, *, preset: str, device: torch.device) -> Any:
    from mmgen.plugins.models.argvlt import ArgvltModel
    from mmgen.plugins.models.magvlt import MagvltModel
    from mmgen.plugins.models.presets import architecture

    cls = {"magvlt": MagvltModel, "argvlt": ArgvltModel}[name]
    torch.manual_seed(0)
    return cls(token_space=space, architecture=architecture(preset)).to(device)


def model_flops_per_example(model: Any, space: Any) -> int:
    """6 x the multiply-adds of one example's forward pass through every matmul with weights."""
    width = model.architecture.width
    slots = sum(s.length for s in space.spaces) + 4
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    projections = sum(s.length * s.vocab_size * width for s in space.spaces)
    return 6 * (linear * slots + projections)


def training(device: torch.device, *, smoke: bool, preset: str, batch: int, seconds: float) -> dict[str, Any]:
    from mmgen.batch import Segment
    from mmgen.layout import Part, pack
    from mmgen.trainer import TrainerConfig, adamw

    space = joint_space(smoke)
    model = build("magvlt", space, preset=preset, device=device).train()
    optimizer = adamw(model, TrainerConfig(steps=10, warmup_steps=0))
    segments = {
        s.name: Segment.full(s.name, torch.randint(0, s.vocab_size, (batch, s.length), device=device))
        for s in space.spaces
    }
    parts = {m: Part(segment=s, mask=torch.ones_like(s.tokens, dtype=torch.bool)) for m, s in segments.items()}
    packed = pack(space, ["BOC", parts["text"], "BOG", parts["image"]])
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    def update() -> None:
        with autocast:
            hidden = model(packed)
            loss = sum(
                F.cross_entropy(
                    model.logits(hidden[:, packed.span(m).start : packed.span(m).stop], m).flatten(0, 1).float(),
                    segment.tokens.flatten(),
                )
                for m, segment in segments.items()
            )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    per_step, steps = timed(update, device=device, seconds=seconds, at_most=2 if smoke else 1000)
    tokens = batch * packed.tokens.shape[1]
    flops = model_flops_per_example(model, space) * batch
    result = {
        "preset": preset,
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch": batch,
        "sequence": packed.tokens.shape[1],
        "steps_timed": steps,
        "seconds_per_step": per_step,
        "tokens_per_s": tokens / per_step,
        "model_tflops_per_s": flops / per_step / 1e12,
    }
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 1024**3
    return result


def requests(space: Any, task: str, batch: int, device: torch.device) -> Any:
    from mmgen.protocols import GenerationRequest, RequestSegment

    image, text = space.space("image"), space.space("text")
    given = {
        "image": torch.randint(0, image.vocab_size, (batch, image.length), device=device),
        "text": torch.randint(2, text.vocab_size, (batch, text.length), device=device),
    }
    lengths = torch.full((batch,), text.length // 2, device=device)
    context, target = ("text", "image") if task == "t2i" else ("image", "text")
    known = torch.ones_like(given[context], dtype=torch.bool)
    prompt = RequestSegment(
        modality=context, tokens=given[context], known=known, lengths=lengths if context == "text" else None
    )
    blank = torch.zeros_like(given[target])
    wanted = RequestSegment(modality=target, tokens=blank, known=blank.bool(), target=True)
    return GenerationRequest(segments=[prompt, wanted])


def sampling(
    device: torch.device, *, smoke: bool, preset: str, deadline: Deadline, share: float
) -> list[dict[str, Any]]:
    from mmgen.samplers.autoregressive import AutoregressiveSampler
    from mmgen.samplers.maskgit import MaskGitSampler

    space = joint_space(smoke)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    rows = []
    for name, sampler in (("magvlt", MaskGitSampler()), ("argvlt", AutoregressiveSampler())):
        model = build(name, space, preset=preset, device=device).eval()
        for task in ("t2i", "i2t"):
            for batch in (1, 32):
                if deadline.left() < 5 and not smoke:  # the smoke check runs every part, once
                    rows.append({"model": name, "task": task, "batch": batch, "skipped": "time box"})
                    continue
                request = requests(space, task, batch, device)
                generator = torch.Generator(device=device).manual_seed(0)

                def sample() -> None:
                    with torch.no_grad(), autocast:
                        sampler.generate(model, request, generator=generator)

                box = min(share, deadline.left() / 4)
                per_call, calls = timed(sample, device=device, seconds=box, at_most=1 if smoke else 20)
                rows.append({"model": name, "task": task, "batch": batch, "calls": calls, "seconds": per_call})
                print(f"  {name} {task} batch {batch}: {per_call * 1000:.1f} ms", flush=True)
    return rows


def markdown(result: dict[str, Any]) -> str:
    train, matmul = result["training"], result["matmul"]
    lines = [
        f"# GPU benchmark: {result['card']}",
        "",
        f"`{result['command']}` (torch {result['torch']}; {result['seconds']:.0f} s).",
        "",
        f"- dense {matmul['dtype']} matmul ({matmul['size']}^3): **{matmul['tflops']:.1f} TFLOP/s** measured"
        + (f", nominal {result['nominal_tflops']:.0f}" if result["nominal_tflops"] else ", nominal unknown"),
        f"- training `{train['preset']}` ({train['parameters']:,} parameters), batch {train['batch']} x"
        f" {train['sequence']} tokens: {train['tokens_per_s']:,.0f} tokens/s,"
        f" {train['seconds_per_step']:.3f} s/update,"
        f" {train['model_tflops_per_s']:.1f} model TFLOP/s = **MFU {result['mfu_measured']:.1%}** of the measured"
        " matmul rate"
        + (f", **{result['mfu_nominal']:.1%}** of nominal" if result["mfu_nominal"] is not None else ""),
        "",
        "| task | batch | MAGVLT ms | ARGVLT (KV cache) ms | ARGVLT / MAGVLT |",
        "|---|---|---|---|---|",
    ]
    by = {(r["model"], r["task"], r["batch"]): r.get("seconds") for r in result["sampling"]}
    for task in ("t2i", "i2t"):
        for batch in (1, 32):
            mag, ar = by.get(("magvlt", task, batch)), by.get(("argvlt", task, batch))
            cells = [f"{x * 1000:.1f}" if x else "skipped" for x in (mag, ar)]
            ratio = f"{ar / mag:.1f}" if mag and ar else "-"
            lines.append(f"| {task} | {batch} | {cells[0]} | {cells[1]} | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny preset, a few steps; runs on the CPU")
    parser.add_argument("--budget", type=float, default=270.0, help="seconds for the whole run")
    parser.add_argument("--batch", type=int, default=32, help="training batch (sequences per update)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_bench: no CUDA GPU here (torch.cuda.is_available() is False); --smoke runs the CPU check")
        return 2
    started = time.perf_counter()
    deadline = Deadline(args.budget)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    cpu = f"CPU {platform.processor() or platform.machine()}"
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    preset, batch = ("tiny", 4) if args.smoke else ("base", args.batch)
    print(f"gpu_bench on {card}", flush=True)
    matmul = matmul_rate(device, smoke=args.smoke, seconds=min(5.0, args.budget * 0.03))
    print(f"  matmul: {matmul['tflops']:.1f} TFLOP/s", flush=True)
    train = training(device, smoke=args.smoke, preset=preset, batch=batch, seconds=min(60.0, deadline.left() * 0.3))
    print(f"  training: {train['tokens_per_s']:,.0f} tokens/s", flush=True)
    rows = sampling(device, smoke=args.smoke, preset=preset, deadline=deadline, share=min(10.0, deadline.left() / 8))
    nominal = nominal_tflops(card) if device.type == "cuda" else None
    result = {
        "benchmark": "gpu_bench",
        "card": card,
        "command": " ".join(["python benchmarks/gpu_bench.py", *(argv if argv is not None else sys.argv[1:])]),
        "torch": torch.__version__,
        "nominal_tflops": nominal,
        "matmul": matmul,
        "training": train,
        "mfu_measured": train["model_tflops_per_s"] / matmul["tflops"],
        "mfu_nominal": train["model_tflops_per_s"] / nominal if nominal else None,
        "sampling": rows,
    }
    result["seconds"] = time.perf_counter() - started
    slug = re.sub(r"[^a-z0-9]+", "-", card.lower()).strip("-")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"gpu_bench-{slug}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (args.out / f"gpu_bench-{slug}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
