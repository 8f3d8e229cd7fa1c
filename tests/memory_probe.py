"""Measured peak memory of two training updates of a recipe's MAGVLT on the CPU (tests/test_estimate.py).

The step is what `mmgen estimate` counts for the `mask` objective with every slot masked: one forward pass over
[BOC] text [BOG] image, logits and cross entropy on every text and image slot, one backward, gradient clipping
and the trainer's fused AdamW (core/trainer.py), gradients freed with set_to_none. Two updates, so the second
runs with AdamW's moments in place. Memory is torch's CPU allocator, as its profiler reports it: the bytes
allocated since profiling began (the model is built inside), at their high-water mark. That counts tensors
exactly, whatever the CPU, unlike the resident set (which also holds libraries and freed pages).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from mmgen.batch import Segment
from mmgen.layout import Part, pack
from mmgen.plugins.estimate.shapes import token_spaces
from mmgen.recipe import load_recipe
from mmgen.token_space import JointTokenSpace
from mmgen.trainer import adamw


def train_two_updates(recipe_path: Path, *, registry, checkpointing: bool) -> None:
    recipe = load_recipe(recipe_path, registry=registry)
    index = next(i for i, e in enumerate(recipe.stages) if e.spec.use == "train")
    config = recipe.stages[index].spec.config
    spaces = token_spaces(recipe.stages[:index], config.tokenizers_stage, "train")
    space = JointTokenSpace(spaces=spaces)
    generator = torch.Generator().manual_seed(0)
    batch = config.trainer.batch_size
    segments = {
        s.name: Segment.full(s.name, torch.randint(0, s.vocab_size, (batch, s.length), generator=generator))
        for s in spaces
    }
    model = registry.build(config.model, token_space=space).train()
    model.set_activation_checkpointing(checkpointing)
    optimizer = adamw(model, config.trainer)
    image, text = (s.name for s in spaces)
    for _ in range(2):
        parts = {m: Part(segment=s, mask=torch.ones_like(s.tokens, dtype=torch.bool)) for m, s in segments.items()}
        packed = pack(space, ["BOC", parts[text], "BOG", parts[image]])
        hidden = model(packed)
        loss = torch.zeros(())
        for modality, segment in segments.items():
            span = packed.span(modality)
            logits = model.logits(hidden[:, span.start : span.stop], modality)
            loss = loss + F.cross_entropy(logits.flatten(0, 1), segment.tokens.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        del hidden, logits, loss, packed


def peak_allocated(recipe_path: Path, *, registry, checkpointing: bool, trace: Path) -> int:
    """The CPU allocator's high-water mark over two updates, in bytes."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        train_two_updates(recipe_path, registry=registry, checkpointing=checkpointing)
    prof.export_chrome_trace(str(trace))
    events = json.loads(trace.read_text())["traceEvents"]
    return max(e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]")
