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

The numbers are the same under torch's AVX-512, AVX2 and scalar kernels
(ATEN_CPU_CAPABILITY) and MKL's bit-compatible mode (MKL_CBWR=COMPATIBLE).
That needs the tokenizer's twin merging: 157 of the shipped VQ-GAN's 512
codes are twins of another (closer than 1e-4, left by dead-code restarts),
and which twin a latent got followed the float path, so before the merge
another path gave the captioner ids it never trained on (I2T all-correct
0.00 under `default`). Twins are now reported as their lowest id
(quantizer.merge_twins; test_codes_do_not_depend_on_the_cpu_kernels), and the
tokenizer encodes in full blocks so that the batch size does not move the
codes that are close but not twins
(test_one_image_alone_gets_the_codes_it_gets_in_a_batch).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import attrs

from mmgen.generation.pipeline import GenerationPipeline
from mmgen.plugins.datasets.shapes.dataset import ShapesDataset
from mmgen.plugins.datasets.shapes.metric import ShapesAccuracy
from mmgen.plugins.stages.generate import example
from mmgen.recipe import load_recipe
from mmgen.registry import load_registry
from mmgen.stage import StageInputs
from mmgen.stage_folder import newest_finished, newest_model, read_done

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "checkpoints" / "shapes"
SCENES = 64
# Measured when the checkpoints were made (this test's setting; checkpoints/shapes/README.md):
# T2I one-object 0.96, two-object 0.82, colour 1.00, cell 1.00; I2T parsed 1.00, all-correct 0.67,
# colour 0.97. The floors guard ONE sample (issue 17): the model shipped before the caption phase wrote
# a wholly right caption for 0.53 of these scenes, the one before it for 0.08.
T2I_ONE_OBJECT_FLOOR = 0.85
T2I_TWO_OBJECT_FLOOR = 0.7
T2I_COLOUR_FLOOR = 0.9
T2I_CELL_FLOOR = 0.9
I2T_PARSED_FLOOR = 0.9
I2T_ACCURACY_FLOOR = 0.55
I2T_COLOUR_FLOOR = 0.85
# Cycle score and refinement, measured on these checkpoints: the true caption beats every
# one-shape-swapped caption for 0.97 of the 64 scenes; refinement as recipes/shapes.yaml runs it
# puts captions right whose last object has both its size and its shape wrong (16 of 16 on the
# first-phase model; this one passes the same floor).
CYCLE_TRUTH_FIRST_FLOOR = 0.9
REFINE_SCENES = 16
REFINE_PUT_RIGHT_FLOOR = 0.85


@attrs.frozen
class Loaded:
    model: object
    tokenizers: dict
    registry: object


@pytest.fixture(scope="module")
def loaded():
    """The checkpoints as `mmgen generate --run checkpoints/shapes` loads them: through the stages that made them."""
    registry = load_registry()
    folders = {
        "train": newest_model(CHECKPOINTS, registry=registry),
        "tokenizers": newest_finished(CHECKPOINTS, "tokenizers"),
    }
    inputs = StageInputs(folders, uses={k: read_done(f)["use"] for k, f in folders.items()}, registry=registry)
    return Loaded(model=inputs.load("train"), tokenizers=inputs.load("tokenizers"), registry=registry)


@pytest.fixture(scope="module")
def records():
    dataset = ShapesDataset(size=64, max_objects=2, object_order="reading", counts={"test": SCENES}, seed=0)
    return list(dataset.records("test"))


def recipe_sampler(registry):
    """recipes/shapes.yaml's sampler (stage generate)."""
    config = load_recipe(ROOT / "recipes" / "shapes.yaml", registry=registry).stages[-2].spec.config
    return registry.build(config.sampler)


def task(loaded, name: str):
    from mmgen.config import structure_spec

    return loaded.registry.build(structure_spec("tasks", name, path="task", registry=loaded.registry))


def prompts(loaded, records, name: str):
    examples = [example(r, loaded.tokenizers, caption_modality="text") for r in records]
    return task(loaded, name).prompts(examples)


def accuracies(loaded, records, name: str) -> dict[str, float]:
    pipeline = GenerationPipeline(model=loaded.model, tokenizers=loaded.tokenizers, sampler=recipe_sampler(loaded.registry))
    with torch.random.fork_rng(devices=[]):
        generations = pipeline.run(task(loaded, name), prompts(loaded, records, name), seed=0, batch_size=SCENES)
    prefix = f"{name}/"
    return {k.removeprefix(prefix): v for k, v in ShapesAccuracy().compute(generations).items() if k.startswith(prefix)}


def test_the_checkpoints_are_the_shapes_recipes_models(loaded):
    assert loaded.model.token_space.modalities == ("image", "text")
    assert loaded.model.architecture.width == 128 and len(loaded.model.blocks) == 4
    assert sum(p.numel() for p in loaded.model.parameters()) < 2_000_000
    size = sum(f.stat().st_size for f in CHECKPOINTS.rglob("*") if f.is_file())
    assert size < 20 * 2**20, f"checkpoints/shapes holds {size / 2**20:.1f} MiB; the issue allows 20"


def test_one_image_alone_gets_the_codes_it_gets_in_a_batch(loaded, records):
    # The shipped VQ-GAN has twin codebook entries; encoded alone (`mmgen generate --image`), an image
    # must get the codes the token cache gave it in batches, or captions are written from ids the
    # model never trained on (before the fix: 84% of one image's codes differed, captions were garbage).
    images = torch.stack([loaded.tokenizers["image"].load_item(r.data) for r in records[:16]])
    together = loaded.tokenizers["image"].encode(images).tokens
    alone = torch.cat([loaded.tokenizers["image"].encode(images[i : i + 1]).tokens for i in range(16)])
    assert torch.equal(alone, together), f"{int((alone != together).sum())} of {together.numel()} codes differ"


CODES_SCRIPT = """
import sys, torch
from mmgen.tokenizers.vqgan.tokenizer import VQGANTokenizer
from mmgen.plugins.datasets.shapes.dataset import ShapesDataset
tokenizer = VQGANTokenizer.load(sys.argv[1])
dataset = ShapesDataset(size=64, max_objects=2, object_order="reading", counts={"test": 64}, seed=0)
images = torch.stack([tokenizer.load_item(r.data) for r in dataset.records("test")])
print(" ".join(map(str, tokenizer.encode(images).tokens.flatten().tolist())))
"""


@pytest.mark.parametrize("env", [{"ATEN_CPU_CAPABILITY": "default"}, {"MKL_CBWR": "COMPATIBLE"}])
def test_codes_do_not_depend_on_the_cpu_kernels(loaded, records, env):
    # Other kernels take other float paths through the encoder; twins merged, every code stays the same
    # (before the merge, under `default`, most canvas codes were the other twin and captions collapsed).
    folder = newest_finished(CHECKPOINTS, "tokenizers") / "image"
    command = [sys.executable, "-c", CODES_SCRIPT, str(folder)]
    result = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, check=True)
    images = torch.stack([loaded.tokenizers["image"].load_item(r.data) for r in records])
    here = loaded.tokenizers["image"].encode(images).tokens.flatten().tolist()
    there = [int(code) for code in result.stdout.split()]
    assert len(there) == len(here) and sum(a != b for a, b in zip(here, there)) == 0


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


SHAPE_WORDS = ("circle", "square", "triangle", "cross")


def caption(objects: list[dict]) -> str:
    """The `full` template, as the recipe's captions and the Shapes oracles read it."""
    return " and ".join(f"a {o['size']} {o['colour']} {o['shape']} in the {o['cell']}" for o in objects)


def with_shape(objects: list[dict], index: int, shape: str) -> list[dict]:
    return [{**o, "shape": shape} if i == index else o for i, o in enumerate(objects)]


def test_cycle_score_names_the_shape_the_image_shows(loaded, records):
    """log p(image | caption) ranks the true caption above every caption with one shape word swapped."""
    from mmgen.plugins.rerankers.cycle import CycleReranker

    given = prompts(loaded, records, "i2t")
    texts, groups = [], []
    for prompt in given:
        objects = prompt.reference["objects"]
        swaps = [with_shape(objects, i, s) for i, o in enumerate(objects) for s in SHAPE_WORDS if s != o["shape"]]
        groups.append(1 + len(swaps))
        texts += [caption(objects)] + [caption(swap) for swap in swaps]
    rows = torch.tensor([i for i, n in enumerate(groups) for _ in range(n)])
    image = loaded.tokenizers["image"].encode(torch.stack([p.items["image"] for p in given])).select(rows)
    scores = CycleReranker(loaded.model).pair_scores(image, loaded.tokenizers["text"].encode(texts)).split(groups)
    truth_first = sum(bool((group[0] > group[1:]).all()) for group in scores) / len(groups)
    assert truth_first >= CYCLE_TRUTH_FIRST_FLOOR, truth_first


def test_cycle_refinement_puts_a_wrong_size_and_shape_right(loaded, records):
    """A caption with its last object's size and shape both wrong comes back as the true caption."""
    from mmgen.plugins.refiners.caption_refine import CaptionRefiner
    from mmgen.plugins.refiners.refine_config import RefineConfig

    given = prompts(loaded, records[:REFINE_SCENES], "i2t")
    truths, wrong = [], []
    for prompt in given:
        objects = prompt.reference["objects"]
        last = objects[-1]
        shape = SHAPE_WORDS[(SHAPE_WORDS.index(last["shape"]) + 1) % len(SHAPE_WORDS)]
        size = "large" if last["size"] == "small" else "small"
        truths.append(caption(objects))
        wrong.append(caption([*objects[:-1], {**last, "shape": shape, "size": size}]))
    image = loaded.tokenizers["image"].encode(torch.stack([p.items["image"] for p in given]))
    # The registered refiner's defaults: a two-pass (checkerboard) cycle score.
    refiner = CaptionRefiner.from_config(RefineConfig(), model=loaded.model)
    text = loaded.tokenizers["text"].encode(wrong)
    refined = loaded.tokenizers["text"].decode(refiner.refine({"image": image}, {"text": text})["text"])
    put_right = sum(r == t for r, t in zip(refined, truths)) / len(truths)
    assert put_right >= REFINE_PUT_RIGHT_FLOOR, list(zip(refined, truths))
