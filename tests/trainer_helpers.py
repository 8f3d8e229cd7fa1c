"""Tiny model, data and tracker shared by the trainer tests (and by scripts they run in subprocesses)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Mapping

import torch
from torch import nn

from mmgen.protocols import ObjectiveOutput


class MemoryTracker:
    """Keeps every logged metric in memory: `metrics[step] == {name: value}`."""

    name: ClassVar[str] = "memory"

    def __init__(self) -> None:
        self.metrics: dict[int, dict[str, float]] = {}
        self.params: dict[str, Any] = {}
        self.texts: dict[str, str] = {}
        self.files: list[str] = []
        self.status: str | None = None

    def start(self, *, run_name: str, tags: Mapping[str, str] | None = None) -> None:
        self.status = "RUNNING"

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.params.update(params)

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        assert step is not None
        self.metrics.setdefault(step, {}).update(metrics)

    def log_artifact(self, path: Path, *, artifact_path: str | None = None) -> None:
        self.files.append(Path(path).name)

    def log_text(self, text: str, *, file_name: str) -> None:
        self.texts[file_name] = text

    def log_image(self, image: Any, *, file_name: str) -> None:
        self.files.append(file_name)

    def end(self, *, status: str = "FINISHED") -> None:
        self.status = status


class TinyMLP(nn.Module):
    """4 -> 8 -> 3 regression net with an embedding, a norm, dropout and a head method.

    `head` is called by the loss outside `forward`, as MAGVLT's `logits` is.
    """

    def __init__(self, *, dropout: float = 0.0, blocks: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(5, 4)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.GELU(), nn.Dropout(dropout)) for _ in range(blocks)
        )
        self.out = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        h = x + self.embed(ids)
        for block in self.blocks:
            h = h + block(h)
        return h

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(h)

    def fsdp_units(self) -> list[nn.Module]:
        return list(self.blocks)


def make_data(n: int = 32, *, seed: int = 0) -> list[tuple[torch.Tensor, int, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    ids = torch.randint(0, 5, (n,), generator=g)
    y = torch.randn(n, 3, generator=g)
    return [(x[i], int(ids[i]), y[i]) for i in range(n)]


def collate(items: list[tuple[torch.Tensor, int, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {
        "x": torch.stack([it[0] for it in items]),
        "ids": torch.tensor([it[1] for it in items]),
        "y": torch.stack([it[2] for it in items]),
    }


def mse_loss(module: TinyMLP, batch: dict[str, torch.Tensor], step: int, generator: torch.Generator) -> ObjectiveOutput:
    """Mean squared error plus a generator-drawn input noise, so the generator's state matters."""
    noise = 0.01 * torch.randn(batch["x"].shape, generator=generator, device=batch["x"].device)
    prediction = module.head(module(batch["x"] + noise, batch["ids"]))
    loss = (prediction - batch["y"]).square().mean()
    return ObjectiveOutput(loss=loss, metrics={"tokens": float(batch["x"].shape[0])})


def plain_mse_loss(module: TinyMLP, batch: dict[str, torch.Tensor], step: int, generator: torch.Generator) -> ObjectiveOutput:
    """Deterministic loss (no noise): lets runs with different micro-batching agree."""
    prediction = module.head(module(batch["x"], batch["ids"]))
    return ObjectiveOutput(loss=(prediction - batch["y"]).square().mean())
