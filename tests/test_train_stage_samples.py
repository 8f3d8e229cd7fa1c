"""The `train` stage's tracking (samples while training, the model artefacts, the parameter count) and condition dropout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import ImageFont

from mmgen.batch import Segment
from mmgen.config import ConfigError, structure_attrs, structure_spec
from mmgen.errors import MissingSplitError
from mmgen.objectives.mask import MaskPrediction
from mmgen.objectives.masked_forward import CONDITION_DROPOUT_KEY, SHARED_KEY, masked_forward
from mmgen.objectives.tasks import TaskConfig, TaskDraw
from mmgen.objectives.training_loss import TrainingLoss
from mmgen.plugins.datasets.ingest.dataset_source import dataset_candidates
from mmgen.plugins.datasets.ingest.pipeline import ingest
from mmgen.plugins.datasets.shapes.dataset import ShapesDataset
from mmgen.plugins.datasets.token_cache import build_token_cache
from mmgen.generation.grid import generation_cell, render_grid
from mmgen.generation.options import GenerateOptions, build_sampler
from mmgen.plugins.datasets.cache_stage import TokenCache
from mmgen.plugins.models.saved import DESCRIPTION_FILE, WEIGHTS_FILE, load_trained_model
from mmgen.plugins.stages.train_model import TrainModelStage
from mmgen.plugins.stages.caption_table import caption_table
from mmgen.plugins.stages.training_samples import SampleOptions, TrainingSamples, sample_examples
from mmgen.plugins.tasks.builtin import ImageToText, TextToImage
from mmgen.protocols import ObjectiveOutput, StepInput
from mmgen.registry import load_registry
from mmgen.tokenizers.saved import save_tokenizers

from registry_helpers import stage_context
from objective_helpers import (
    I2T,
    IT2IT,
    T2I,
    hand_batch,
    one_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_model,
    tiny_space,
)
from token_cache_helpers import BlockImageTokenizer, CharTokenizer

VAL_RECORDS = 3
GAP = 18  # render_grid's space around cells: 3 x its padding of 6
TILE = 128  # render_grid's image_size


# ---- condition dropout ---------------------------------------------------------------------


def forward_with(task, *, p: float | None, seed: int = 1):
    """The masked forward of `hand_batch()` (3 rows; captions of lengths 2, 4, 6) and the generator after it."""
    space = tiny_space()
    generator = torch.Generator().manual_seed(seed)
    shared = {} if p is None else {CONDITION_DROPOUT_KEY: p}
    inputs = StepInput(batch=hand_batch(), task=task, generator=generator, shared=shared)
    return masked_forward(tiny_model(space), inputs, space=space), generator


def span_tokens(forward, modality: str) -> torch.Tensor:
    span = forward.packed.span(modality)
    return forward.packed.tokens[:, span.start : span.stop]


def test_dropout_hides_the_whole_caption_of_the_drawn_rows_and_nothing_else():
    space = tiny_space()
    plain, _ = forward_with(T2I, p=None)
    dropped, _ = forward_with(T2I, p=0.5)
    # Seed 1 draws r [3], the image positions [3, 16], then one U(0, 1) per row: rows 0 and 2 fall under 0.5.
    rows = torch.tensor([True, False, True])
    valid = hand_batch().modality("text").valid()
    assert set(dropped.dropped) == {"text"}
    assert torch.equal(dropped.dropped["text"], valid & rows[:, None])
    m, pad = space.mask_id("text"), space.offset("text")  # padding is local id 0
    assert span_tokens(dropped, "text").tolist() == [
        [m, m, pad, pad, pad, pad],
        [pad + 1, pad + 2, pad + 3, pad, pad, pad],
        [m, m, m, m, m, m],
    ]
    # The target and the loss positions are those of the same seed without dropout; padding stays padding.
    assert torch.equal(dropped.masks["image"], plain.masks["image"])
    assert torch.equal(span_tokens(dropped, "image"), span_tokens(plain, "image"))
    assert torch.equal(dropped.packed.key_padding, plain.packed.key_padding)
    assert torch.equal(dropped.packed.attn_mask, plain.packed.attn_mask)


def test_dropout_zero_changes_nothing_and_draws_nothing():
    plain, plain_generator = forward_with(T2I, p=None)
    zero, zero_generator = forward_with(T2I, p=0.0)
    assert zero.dropped == {}
    assert torch.equal(zero.packed.tokens, plain.packed.tokens)
    assert torch.equal(zero.hidden, plain.hidden)
    assert torch.equal(zero_generator.get_state(), plain_generator.get_state())


def test_dropout_one_masks_every_context_token_and_keeps_padding():
    space = tiny_space()
    plain, _ = forward_with(T2I, p=None)
    everything, _ = forward_with(T2I, p=1.0)
    valid = hand_batch().modality("text").valid()
    assert torch.equal(everything.dropped["text"], valid)
    text = span_tokens(everything, "text")
    assert torch.equal(text == space.mask_id("text"), valid)
    assert torch.equal(text[~valid], span_tokens(plain, "text")[~valid])
    assert torch.equal(everything.packed.key_padding, plain.packed.key_padding)
    assert torch.equal(span_tokens(everything, "image"), span_tokens(plain, "image"))

    # I2T: the whole image grid is the context; the caption target is untouched.
    plain, _ = forward_with(I2T, p=None)
    everything, _ = forward_with(I2T, p=1.0)
    assert (span_tokens(everything, "image") == space.mask_id("image")).all()
    assert torch.equal(everything.masks["text"], plain.masks["text"])
    assert torch.equal(span_tokens(everything, "text"), span_tokens(plain, "text"))


def test_it2it_dropout_hides_the_image_but_scores_only_the_masked_positions():
    space = tiny_space()
    plain, _ = forward_with(IT2IT, p=None)
    everything, _ = forward_with(IT2IT, p=1.0)
    assert (span_tokens(everything, "image") == space.mask_id("image")).all()
    assert torch.equal(everything.masks["image"], plain.masks["image"])  # the loss positions
    assert everything.logits["image"].shape == plain.logits["image"].shape
    assert torch.equal(span_tokens(everything, "text"), span_tokens(plain, "text"))


class Spy:
    """An objective that keeps what the step shared with it."""

    name = "spy"
    weight = 0.0

    def __init__(self) -> None:
        self.shared: dict[str, Any] = {}

    def __call__(self, model: Any, inputs: StepInput) -> ObjectiveOutput:
        self.shared = dict(inputs.shared)
        return ObjectiveOutput(loss=torch.zeros(()))


def test_the_training_loss_hands_the_rate_to_the_mask_objectives_forward():
    space = tiny_space()
    spy = Spy()
    loss = TrainingLoss(
        [MaskPrediction(token_space=space), spy],
        TaskDraw({"t2i": TaskConfig(context=("text",), target=("image",))}, seed=0),
        condition_dropout=1.0,
    )
    loss(tiny_model(space), hand_batch(), 0, torch.Generator().manual_seed(0))
    assert spy.shared[CONDITION_DROPOUT_KEY] == 1.0
    assert torch.equal(spy.shared[SHARED_KEY].dropped["text"], hand_batch().modality("text").valid())
    with pytest.raises(ValueError, match=r"condition_dropout must be in \[0, 1\], got 1.5"):
        TrainingLoss([spy], loss.tasks, condition_dropout=1.5)


@pytest.fixture(scope="module")
def registry():
    return load_registry()


MODEL = {"model": {"use": "magvlt", "preset": "tiny"}}


def test_stage_options_and_their_errors(registry):
    config = structure_attrs(TrainModelStage.Config, dict(MODEL), registry=registry)
    assert config.condition_dropout == 0.0
    assert config.samples == SampleOptions(every=None, prompts=8, split="val", tasks=("t2i", "i2t"))
    data = {**MODEL, "condition_dropout": 0.1, "samples": {"every": 500, "prompts": 4, "split": "test"}}
    config = structure_attrs(TrainModelStage.Config, data, registry=registry)
    assert config.condition_dropout == 0.1 and config.samples == SampleOptions(every=500, prompts=4, split="test")
    with pytest.raises(ConfigError, match=r"condition_dropout: must be in \[0, 1\], got 1.5"):
        structure_attrs(TrainModelStage.Config, {**MODEL, "condition_dropout": 1.5}, registry=registry)
    with pytest.raises(ConfigError, match=r"samples.every: must be > 0 or null, got 0"):
        structure_attrs(TrainModelStage.Config, {**MODEL, "samples": {"every": 0}}, registry=registry)
    with pytest.raises(ConfigError, match=r"samples\.evry: unknown option.*did you mean 'every'"):
        structure_attrs(TrainModelStage.Config, {**MODEL, "samples": {"evry": 2}}, registry=registry)


# ---- the stage's tracking ------------------------------------------------------------------


class PictureTokenizer(BlockImageTokenizer):
    """Block tokens that decode to a 16 x 16 grey picture (one grey level per 4 x 4 block); encode inverts it."""

    def decode(self, segment: Segment) -> list[torch.Tensor]:
        levels = segment.tokens.view(-1, 1, self.grid, self.grid) * (256 // self.levels) + 8
        pictures = levels.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3).expand(-1, 3, -1, -1)
        return list(pictures.to(torch.uint8))

    @classmethod
    def load(cls, directory: Path) -> PictureTokenizer:
        return cls()


class SavedCharTokenizer(CharTokenizer):
    @classmethod
    def load(cls, directory: Path) -> SavedCharTokenizer:
        return cls()


class WithTestTokenizers:
    """The real registry, plus the two test tokenizers that `load_saved_tokenizers` looks up."""

    def __init__(self, registry) -> None:
        self.registry = registry
        self.tokenizers = {"block_image": PictureTokenizer, "chars": SavedCharTokenizer}

    def get(self, kind: str, name: str) -> type:
        return self.tokenizers[name] if kind == "tokenizers" else self.registry.get(kind, name)

    def build(self, spec, **deps):
        return self.get(spec.kind, spec.use).from_config(spec.config, **deps)


class RecordingTracker:
    """Keeps every call (artefacts with their bytes at logging time)."""

    name = "recording"

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def log_metrics(self, metrics, *, step=None) -> None:
        self.calls.append(("metrics", dict(metrics), step))

    def log_image(self, image, *, file_name: str, key=None, step=None) -> None:
        self.calls.append(("image", file_name, np.array(image)))
        self.calls.append(("series", key, step))

    def log_text(self, text: str, *, file_name: str) -> None:
        self.calls.append(("text", file_name, text))

    def log_table(self, data, *, file_name: str) -> None:
        self.calls.append(("table", file_name, {k: list(v) for k, v in data.items()}))

    def log_artifact(self, path, *, artifact_path=None) -> None:
        self.calls.append(("artifact", Path(path), artifact_path, Path(path).read_bytes()))

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [call[1:] for call in self.calls if call[0] == kind]


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory) -> dict[str, Path]:
    """Tokenizers and token caches of 8 train and 3 val Shapes records; `train_only` lacks the val cache."""
    root = tmp_path_factory.mktemp("stage")
    tokenizers = {"image": PictureTokenizer(), "text": SavedCharTokenizer()}
    save_tokenizers(tokenizers, root / "tokenizers")
    shapes = ShapesDataset(size=32, counts={"train": 8, "val": VAL_RECORDS})
    for split in ("train", "val"):
        store = root / "data" / f"{split}.lmdb"
        ingest(dataset_candidates(shapes, split), store, progress=False)
        build_token_cache(store, root / "cache" / f"{split}.lmdb", tokenizers=tokenizers, progress=False)
    build_token_cache(
        root / "data" / "train.lmdb", root / "train_only" / "train.lmdb", tokenizers=tokenizers, progress=False
    )
    return {"tokenizers": root / "tokenizers", "cache": root / "cache", "train_only": root / "train_only"}


def run_stage(registry, artefacts, out_dir: Path, *, steps: int, samples: dict, cache: str = "cache"):
    data = {
        "model": {"use": "magvlt", "preset": "tiny"},
        # The test tokenizer encodes no squeezed halves: MixSel mixes token grids.
        "objectives": [
            "mask",
            "target_length",
            "unroll_mask",
            {"use": "mixsel", "separator": " ", "mixing": "tokens_resize"},
        ],
        "trainer": {"steps": steps, "batch_size": 4, "warmup_steps": 0, "checkpoint_every": steps, "log_every": 50},
        "samples": samples,
    }
    stage = registry.build(structure_spec("stages", {"use": "train", **data}, path="stages.train", registry=registry))
    tracker = RecordingTracker()
    with_tokenizers = WithTestTokenizers(registry)
    folders = {"tokenizers": artefacts["tokenizers"], "cache": artefacts[cache]}
    context = stage_context(out_dir, folders=folders, registry=with_tokenizers, tracker=tracker)
    stage.run(context)
    return tracker, with_tokenizers


def one_line_grid_height() -> int:
    """A row of cells whose caption fits on one line: tile, padding, one text line (render_grid's layout)."""
    line = int(ImageFont.load_default().getbbox("Ag")[3]) + 4
    return GAP + TILE + 6 + line + GAP


@pytest.mark.parametrize(("steps", "every", "sampled_at"), [(4, 2, [2, 4]), (3, None, [3])])
def test_the_stage_logs_samples_then_the_model(registry, artefacts, tmp_path, steps, every, sampled_at):
    # prompts 8 > the 3 val records: all of them.
    tracker, with_tokenizers = run_stage(registry, artefacts, tmp_path, steps=steps, samples={"every": every})
    images, tables = tracker.of("image"), tracker.of("table")
    # A grid per task, also a step of the task's image series; a caption table for the task that writes text.
    assert [name for name, _ in images] == [f"samples/step-{s:06d}-{t}.png" for s in sampled_at for t in ("t2i", "i2t")]
    assert tracker.of("series") == [(f"samples/{t}", s) for s in sampled_at for t in ("t2i", "i2t")]
    assert [name for name, _ in tables] == [f"samples/step-{s:06d}-i2t.json" for s in sampled_at]
    assert tracker.of("text") == []
    for _, grid in images[::2]:  # T2I: one row of 3 cells, each a generated picture above its one-line caption
        assert grid.dtype == np.uint8 and grid.shape == (one_line_grid_height(), GAP + 3 * (TILE + GAP), 3)

    # The last samples are the saved model's generations with the trainer's seed, exactly.
    model = load_trained_model(tmp_path, with_tokenizers)
    tokenizers = {"image": PictureTokenizer(), "text": SavedCharTokenizer()}
    examples = sample_examples(TokenCache(artefacts["cache"]), SampleOptions(prompts=8), tokenizers=tokenizers)
    sampler = build_sampler(GenerateOptions(), model=model, registry=registry)
    samples = TrainingSamples(
        examples=examples, tasks=[TextToImage(), ImageToText()], tokenizers=tokenizers, sampler=sampler, seed=0
    )
    made = samples.generate(model)
    assert np.array_equal(images[-2][1], render_grid([generation_cell(g) for g in made["t2i"]]))
    assert np.array_equal(images[-1][1], render_grid([generation_cell(g) for g in made["i2t"]]))
    table = tables[-1][1]
    assert table == caption_table(made["i2t"])
    captions = [e.items["text"] for e in examples]
    assert list(table) == ["key", "generated", "reference"] and len(table["generated"]) == VAL_RECORDS
    assert table["key"] == [e.key for e in examples]
    assert table["reference"] == captions
    assert table["generated"] == [g.outputs["text"] for g in made["i2t"]]
    assert [g.inputs["text"] for g in made["t2i"]] == captions

    # First the parameter count, at the end the saved files, as they are on disk.
    count = sum(p.numel() for p in model.parameters())
    assert tracker.calls[0] == ("metrics", {"parameters": float(count)}, None)
    assert tracker.calls[-2:] == [
        ("artifact", tmp_path / WEIGHTS_FILE, "model", (tmp_path / WEIGHTS_FILE).read_bytes()),
        ("artifact", tmp_path / DESCRIPTION_FILE, "model", (tmp_path / DESCRIPTION_FILE).read_bytes()),
    ]


def test_no_prompts_no_samples_no_held_out_split_and_the_same_training(registry, artefacts, tmp_path):
    tracker, _ = run_stage(registry, artefacts, tmp_path / "quiet", steps=2, samples={"prompts": 0}, cache="train_only")
    assert tracker.of("image") == [] and tracker.of("table") == []
    assert [(path.name, where) for path, where, _ in tracker.of("artifact")] == [
        (WEIGHTS_FILE, "model"),
        (DESCRIPTION_FILE, "model"),
    ]
    # Sampling after every step leaves the training run as it was.
    sampled, _ = run_stage(registry, artefacts, tmp_path / "sampled", steps=2, samples={"every": 1})
    assert len(sampled.of("image")) == 4  # two steps, two tasks
    quiet = torch.load(tmp_path / "quiet" / WEIGHTS_FILE, weights_only=True)
    loud = torch.load(tmp_path / "sampled" / WEIGHTS_FILE, weights_only=True)
    assert quiet.keys() == loud.keys() and all(torch.equal(quiet[k], loud[k]) for k in quiet)


def test_a_missing_sample_split_fails_before_training(registry, artefacts, tmp_path):
    with pytest.raises(MissingSplitError, match=r"training samples read split 'val'.*no 'val' split.*samples.prompts: 0"):
        run_stage(registry, artefacts, tmp_path, steps=1, samples={}, cache="train_only")
    assert not (tmp_path / "trainer").exists()


def test_sample_tasks_are_checked_before_training(registry, artefacts, tmp_path):
    with pytest.raises(ConfigError, match=r"samples\.tasks\[1\]\.use: no task named 'i2x'; did you mean 'i2t'"):
        run_stage(registry, artefacts, tmp_path, steps=1, samples={"tasks": ["t2i", "i2x"]})
    assert not (tmp_path / "trainer").exists()
