"""The trained Shapes checkpoints in checkpoints/shapes: they load, generate, and keep their quality.

They are what `recipes/shapes.yaml` produced (checkpoints/shapes/README.md says
which commit and artefact hashes), so `mmgen generate --run checkpoints/shapes`
works on a fresh clone. Each test generates for the first 64 scenes of the
Shapes test split (its own stream, objects in reading order as the recipe
lists them: the same scenes the recipe evaluated first),
with the recipe's sampler, one candidate and seed 0, and judges them with the
Shapes oracles. The floors sit below the accuracies measured when the
checkpoints were made (README there), by a margin for CPU-to-CPU float
differences; a regression in the model code, the sampler, the tokenizers'
loading or the oracles falls through them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmgen.plugins.datasets.shapes.dataset import ShapesDataset
from mmgen.plugins.datasets.shapes.metric import ShapesAccuracy
from mmgen.plugins.generation.artefacts import latest_artefact, load_for_generation
from mmgen.plugins.generation.prompts import prompts_from_records
from mmgen.plugins.generation.guidance import GuidanceOptions
from mmgen.plugins.generation.tasks import TaskRunner
from mmgen.registry import load_registry
from mmgen.samplers.maskgit import FixedLengthOptions, MaskGitSampler, VariableLengthOptions

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints" / "shapes"
SCENES = 64
# Measured when the checkpoints were made (this test's setting; checkpoints/shapes/README.md):
# T2I one-object 1.00, two-object 0.89, colour 1.00, cell 1.00; I2T parsed 1.00, all-correct 0.08, colour 0.86.
T2I_ONE_OBJECT_FLOOR = 0.85
T2I_TWO_OBJECT_FLOOR = 0.7
T2I_COLOUR_FLOOR = 0.9
T2I_CELL_FLOOR = 0.9
I2T_PARSED_FLOOR = 0.85
I2T_ACCURACY_FLOOR = 0.03
I2T_COLOUR_FLOOR = 0.7
# recipes/shapes.yaml, stage generate.
SAMPLER = MaskGitSampler(
    fixed=FixedLengthOptions(guidance=GuidanceOptions(scale=1.0), gumbel_start=1.0, gumbel_end=0.1),
    variable=VariableLengthOptions(steps=24),
)


@pytest.fixture(scope="module")
def loaded():
    registry = load_registry()
    return load_for_generation(
        tokenizers_dir=latest_artefact(CHECKPOINTS, "tokenizers"),
        model_dir=latest_artefact(CHECKPOINTS, "train"),
        clip_dir=None,
        registry=registry,
    )


@pytest.fixture(scope="module")
def records():
    dataset = ShapesDataset(size=64, max_objects=2, object_order="reading", counts={"test": SCENES}, seed=0)
    return list(dataset.records("test"))


def accuracies(loaded, records, task: str) -> dict[str, float]:
    prompts = prompts_from_records(task, records, image_tokenizer=loaded.tokenizers["image"])
    runner = TaskRunner(model=loaded.model, tokenizers=loaded.tokenizers, sampler=SAMPLER)
    with torch.random.fork_rng(devices=[]):
        generations = runner.run(task, prompts, seed=0, batch_size=SCENES)
    prefix = f"{task}/"
    return {k.removeprefix(prefix): v for k, v in ShapesAccuracy().compute(generations).items() if k.startswith(prefix)}


def test_the_checkpoints_are_the_shapes_recipes_models(loaded):
    assert loaded.model.token_space.modalities == ("image", "text")
    assert loaded.model.architecture.width == 128 and len(loaded.model.blocks) == 4
    assert sum(p.numel() for p in loaded.model.parameters()) < 2_000_000
    size = sum(f.stat().st_size for f in CHECKPOINTS.rglob("*") if f.is_file())
    assert size < 20 * 2**20, f"checkpoints/shapes holds {size / 2**20:.1f} MiB; the issue allows 20"


def test_text_to_image_quality_holds(loaded, records):
    found = accuracies(loaded, records, "t2i")
    assert found["n"] == SCENES
    assert found["objects_1"] >= T2I_ONE_OBJECT_FLOOR and found["objects_2"] >= T2I_TWO_OBJECT_FLOOR, found
    assert found["colour"] >= T2I_COLOUR_FLOOR and found["cell"] >= T2I_CELL_FLOOR, found


def test_image_to_text_quality_holds(loaded, records):
    found = accuracies(loaded, records, "i2t")
    assert found["n"] == SCENES
    assert found["parsed"] >= I2T_PARSED_FLOOR, found
    assert found["accuracy"] >= I2T_ACCURACY_FLOOR and found["colour"] >= I2T_COLOUR_FLOOR, found
