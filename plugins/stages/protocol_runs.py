"""Generation protocols: the ways the generate stage picks each prompt's output, and how their runs are kept.

A protocol is `candidates` samples per prompt, the reranker's best of them, then a refiner. Every task
always runs `one_sample` (one sample, no reranking, no refinement: the model alone), so the table the
evaluate stage writes puts what search adds beside what the model does on its own. A recipe names the
others per task:

    protocols:
      t2i: {clip: {candidates: 32, rerank: clip}}                  # MAGVLT's protocol (sec. 4.2)
      i2t:
        clip: {candidates: 64, rerank: clip}
        cycle: {candidates: 32, rerank: {use: cycle}, refine: {use: caption_refine},
                sampler: {use: maskgit, variable: {temperature: 0.5}}}   # its own sampler (default: the stage's)

The stage writes each protocol's generations to `<protocol>/`, what each protocol ran (tasks, prompts,
candidates, reranker, refiner) to `protocols.json`, and the seconds each task took under each protocol to
`timings.json`: wall clock differs from run to run, so it is kept apart from what a rerun reproduces byte for
byte. The evaluate stage reads all back with `load_protocol_runs`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

from mmgen.api import Spec, atomic_write_text, load_generations, optional_component, positive, positive_or_none

ONE_SAMPLE = "one_sample"
PROTOCOLS_FILE = "protocols.json"
TIMINGS_FILE = "timings.json"  # wall clock: the one output of the stage a rerun does not reproduce
SECONDS = ("seconds", "seconds_per_output")


@attrs.frozen(kw_only=True)
class ProtocolOptions:
    """`candidates` samples per prompt, the `rerank`er's best of them, then the `refine`r (each optional).

    `sampler` draws this protocol's candidates in place of the stage's sampler: candidates for a reranker
    want more variety than the one sample the stage's settings are tuned for (e.g. captions at temperature
    0.5 where one sample is best at 0.1). `prompts` runs it on the first that many of the stage's prompts
    only (unset: all): search costs 10-40x one sample, and the evaluate stage's table shows each
    protocol's n beside its accuracy."""

    candidates: int = attrs.field(default=1, validator=positive)
    prompts: int | None = attrs.field(default=None, validator=positive_or_none)
    rerank: Spec | None = optional_component("rerankers")
    refine: Spec | None = optional_component("refiners")
    sampler: Spec | None = optional_component("samplers")

    def __attrs_post_init__(self) -> None:
        if self.candidates > 1 and self.rerank is None:
            raise ValueError(f"{self.candidates} candidates need a reranker to pick one: add e.g. `rerank: clip`")


@attrs.frozen(kw_only=True)
class ProtocolRun:
    """One protocol's generations (every task it ran) and, per task, what it took: `timings[task]` has
    `prompts`, `candidates`, `seconds` and `seconds_per_output` (wall clock, sampling + reranking + refinement)."""

    name: str
    generations: list[Any]
    timings: dict[str, dict[str, Any]]


def legacy_name(candidates: int, rerank: Spec | None, refine: Spec | None) -> str | None:
    """The protocol the old per-task keys (`candidates`, `rerank`, `refine`) describe: named by its reranker
    and refiner (`clip`, `cycle+caption_refine`); None when they describe one sample alone."""
    if candidates == 1 and rerank is None and refine is None:
        return None
    return "+".join(spec.use for spec in (rerank, refine) if spec is not None)


def write_protocols(runs: list[ProtocolRun], out_dir: Path) -> list[Path]:
    """`protocols.json` (protocol -> task -> what ran) and `timings.json` (protocol -> task -> seconds), in the
    order the protocols ran."""
    out_dir = Path(out_dir)
    setup = {r.name: {t: {k: v for k, v in d.items() if k not in SECONDS} for t, d in r.timings.items()} for r in runs}
    seconds = {r.name: {t: {k: d[k] for k in SECONDS} for t, d in r.timings.items()} for r in runs}
    atomic_write_text(out_dir / PROTOCOLS_FILE, json.dumps(setup, indent=2))
    atomic_write_text(out_dir / TIMINGS_FILE, json.dumps(seconds, indent=2))
    return [out_dir / PROTOCOLS_FILE, out_dir / TIMINGS_FILE]


def load_protocol_runs(directory: Path) -> dict[str, ProtocolRun]:
    """Each protocol a generate stage ran, in the order it ran them: its generations and timings."""
    directory = Path(directory)
    setup = json.loads((directory / PROTOCOLS_FILE).read_text(encoding="utf-8"))
    seconds = json.loads((directory / TIMINGS_FILE).read_text(encoding="utf-8"))
    return {
        name: ProtocolRun(
            name=name,
            generations=load_generations(directory / name),
            timings={task: {**ran, **seconds[name][task]} for task, ran in tasks.items()},
        )
        for name, tasks in setup.items()
    }
