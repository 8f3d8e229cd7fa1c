"""A tiny trained run for the tests of `mmgen serve`, made once per test session, and a job poller."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np

# Toy sizes: data, tokenizers, cache and train in a few seconds; generation in tens of milliseconds.
RECIPE = """
name: serve-tiny
seed: 0
device: cpu
tracker: {use: none}
stages:
  data:
    dataset: {use: shapes, size: 32, max_objects: 1, object_order: reading, train: 32, val: 8, test: 8, holdout: 0}
  tokenizers:
    tokenizers:
      - {use: vqgan, preset: tiny, train: {steps: 4, batch_size: 8, warmup_steps: 1}}
      - {use: sentencepiece_bpe, vocab_size: 64, max_length: 32}
  cache: {}
  train:
    model: {use: magvlt, preset: tiny}
    objectives: [{use: mask}, {use: target_length}]
    trainer: {steps: 4, batch_size: 8, warmup_steps: 1}
    samples: {prompts: 0}
"""


def tiny_run(base: Path) -> Path:
    """The workdir of the tiny recipe's run under `base` (the session's temporary root), trained on first use."""
    from click.testing import CliRunner

    from mmgen.cli import main

    workdir = base / "serve-tiny" / "runs"
    if not any(workdir.glob("artefacts/train-*/DONE.json")):
        workdir.parent.mkdir(parents=True, exist_ok=True)
        recipe = workdir.parent / "recipe.yaml"
        recipe.write_text(RECIPE)
        result = CliRunner().invoke(main, ["-q", "run", str(recipe), "--set", f"workdir={workdir}"])
        assert result.exit_code == 0, result.output
    return workdir


def picture_png(*, size: int = 32, colour=(200, 30, 30)) -> bytes:
    """A PNG of one filled square on black, the Shapes look."""
    from PIL import Image

    array = np.zeros((size, size, 3), np.uint8)
    array[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = colour
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def finished(client, job_id: str, *, timeout_s: float = 120.0) -> dict:
    """Poll a job until it is done or failed; its last view."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {timeout_s} s"
        time.sleep(0.02)
