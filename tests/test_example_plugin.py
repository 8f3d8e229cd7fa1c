"""The example plugin package examples/plugins/mmgen-linear-schedule, as a user gets it and as unit code.

Installed with pip into a temporary folder, it must be listed by `mmgen plugins`,
pass the contract tests and run its tiny recipe end to end. Its sampler is
checked on a fake model with known logits (exact unmasking counts), its metric
on hand-made generations.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from generation_helpers import FakeModel, peaked, spaces, uniform_over
from generation_helpers import one_thread  # noqa: F401 (an autouse fixture)
from mmgen.api import ConfigError, Generation, GenerationRequest, RequestSegment, load_generations, structure_attrs

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugins" / "mmgen-linear-schedule"
PACKAGE = EXAMPLE / "mmgen_linear_schedule"


def example_module(name: str):
    """A module of the example package, loaded from its file.

    Not through sys.path: a stray egg-info beside the sources would then register
    the plugin's entry point in this process, and every later test's registry
    would hold the example's components.
    """
    spec = importlib.util.spec_from_file_location(f"_example_linear_schedule_{name}", PACKAGE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # attrs and typing look classes' modules up here
    spec.loader.exec_module(module)
    return module


sampler_module = example_module("sampler")
metric_module = example_module("metric")
LinearScheduleSampler = sampler_module.LinearScheduleSampler
DistinctOutputs = metric_module.DistinctOutputs


# ---- installed: listed, contract-tested, run from a recipe ------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The example installed with pip into a fresh folder (built from a copy: the sources stay clean)."""
    return install_example(tmp_path_factory.mktemp("example"))


def install_example(work: Path, *, version: str | None = None) -> Path:
    """pip-install a copy of the example into `work/site`; `version` replaces the one in its pyproject."""
    source = shutil.copytree(EXAMPLE, work / "src", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    if version is not None:
        pyproject = source / "pyproject.toml"
        pyproject.write_text(re.sub(r'(?m)^version = ".*"$', f'version = "{version}"', pyproject.read_text()))
    target = work / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(source)],
        check=True,
        capture_output=True,
    )
    return target


def installed_env(site: Path) -> dict[str, str]:
    # One torch thread: with the 2 shared cores busy, tiny models run far faster on one (tests/conftest.py).
    env = {**os.environ, "PYTHONPATH": str(site), "MMGEN_STRICT_PLUGINS": "1", "OMP_NUM_THREADS": "1"}
    env.pop("MMGEN_PLUGINS", None)
    return env


def test_mmgen_plugins_lists_the_components_with_their_package(site, tmp_path):
    listing = subprocess.run(
        [sys.executable, "-m", "mmgen.cli", "plugins"], env=installed_env(site), cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    rows = [line.split() for line in listing.splitlines()]
    assert ["linear_schedule", "mmgen-linear-schedule", "0.1.0", "[linear_schedule]"] in rows
    assert ["distinct_outputs", "mmgen-linear-schedule", "0.1.0", "[linear_schedule]"] in rows
    assert "failed:" not in listing


def test_the_contract_tests_cover_the_installed_components(site):
    # Registering is enough to be tested: tests/test_contracts.py parametrises over the registry.
    selected = "linear_schedule or distinct_outputs"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "tests/test_contracts.py", "-k", selected],
        env=installed_env(site),
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    outcomes = dict(re.findall(r"^tests/test_contracts\.py::(\S+) (\w+)", result.stdout, re.M))
    assert any(test.endswith("[linear_schedule]") for test in outcomes), result.stdout[-3000:]
    assert any(test.endswith("[distinct_outputs]") for test in outcomes), result.stdout[-3000:]
    assert set(outcomes.values()) == {"PASSED"}, result.stdout[-3000:]


def test_the_tiny_recipe_runs_end_to_end(site, tmp_path):
    command = [sys.executable, "-m", "mmgen.cli", "-q", "run", str(EXAMPLE / "recipes" / "tiny.yaml")]
    result = subprocess.run(
        [*command, "--set", f"workdir={tmp_path / 'runs'}"], env=installed_env(site), cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (evaluate,) = (tmp_path / "runs" / "artefacts").glob("evaluate-*")
    (generate,) = (tmp_path / "runs" / "artefacts").glob("generate-*")
    metrics = json.loads((evaluate / "metrics.json").read_text())
    # The tiny recipe names no protocols: one sample per prompt, `one_sample` in every key.
    assert metrics["one_sample/distinct_outputs/t2i/n"] == 4.0 and metrics["one_sample/distinct_outputs/i2t/n"] == 4.0
    assert metrics["one_sample/shapes_accuracy/t2i/n"] == 4.0 and metrics["one_sample/shapes_accuracy/i2t/n"] == 4.0
    # The metric agrees with the generations the sampler made (read back as the evaluate stage reads them).
    generations = load_generations(generate / "one_sample")
    captions = [g.outputs["text"] for g in generations if g.task == "i2t"]
    assert metrics["one_sample/distinct_outputs/i2t/distinct"] == len(set(captions)) / 4
    pictures = [g.outputs["image"] for g in generations if g.task == "t2i"]
    assert all(p.dtype == np.uint8 and p.shape == (16, 16, 3) for p in pictures)


def test_an_upgraded_plugin_redoes_the_stages_that_use_it_and_nothing_else(site, tmp_path_factory, tmp_path):
    upgraded = install_example(tmp_path_factory.mktemp("example-upgraded"), version="0.2.0")
    command = [sys.executable, "-m", "mmgen.cli", "-q", "run", str(EXAMPLE / "recipes" / "tiny.yaml")]
    command += ["--set", f"workdir={tmp_path / 'runs'}"]

    def stage_states(installed: Path) -> dict[str, str]:
        result = subprocess.run(command, env=installed_env(installed), cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        lines = result.stdout.splitlines()
        table = lines[lines.index(next(x for x in lines if x.split() == ["stage", "seconds", "folder"])) + 1 :]
        rows = [line.split() for line in table[: next(i for i, x in enumerate(table) if x.startswith("total"))]]
        return {key: state for key, state, _ in rows}

    assert set(stage_states(site).values()) != {"cached"}
    # 0.1.0 -> 0.2.0 of the package behind `linear_schedule` (generate) and `distinct_outputs` (evaluate).
    states = stage_states(upgraded)
    assert {key: state == "cached" for key, state in states.items()} == {
        "data": True,
        "tokenizers": True,
        "cache": True,
        "train": True,
        "generate": False,
        "evaluate": False,
    }


# ---- the sampler on a fake model ----------------------------------------------------------


def segment(modality, tokens, *, known=None, lengths=None, target=False) -> RequestSegment:
    tokens = torch.as_tensor(tokens)
    known = torch.ones_like(tokens, dtype=torch.bool) if known is None else torch.as_tensor(known, dtype=torch.bool)
    lengths = None if lengths is None else torch.as_tensor(lengths)
    return RequestSegment(modality=modality, tokens=tokens, known=known, lengths=lengths, target=target)


def blank(modality, batch, length) -> RequestSegment:
    return segment(modality, torch.zeros(batch, length, dtype=torch.long), known=torch.zeros(batch, length), target=True)


def prompt(batch=1) -> RequestSegment:
    """A caption of two words and EOS (text ids 1, 2, then 0), the context of every request here."""
    return segment("text", [[1, 2, 0, 0, 0, 0]] * batch, lengths=[3] * batch)


def masked_counts(model, modality) -> list[list[int]]:
    """Per model call, per row: how many positions of the last `modality` span showed MASK."""
    return [model.masked_in(call, modality).sum(dim=1).tolist() for call in range(len(model.calls))]


def run(sampler, model, *segments, seed=0):
    return sampler.generate(model, GenerationRequest(segments=segments), generator=torch.Generator().manual_seed(seed))


def test_still_masked_is_the_ceiling_of_the_linear_schedule():
    after = [sampler_module.still_masked(torch.tensor([10, 16, 3]), step=t, steps=4).tolist() for t in range(5)]
    # ceil(N (1 - t/4)): 10 -> 10, 7.5, 5, 2.5, 0; 16 -> 16, 12, 8, 4, 0; 3 -> 3, 2.25, 1.5, 0.75, 0.
    assert after == [[10, 16, 3], [8, 12, 3], [5, 8, 2], [3, 4, 1], [0, 0, 0]]


def test_each_step_leaves_the_linear_share_masked_per_row():
    model = FakeModel(spaces(image_shape=(4, 4)), {"image": uniform_over([8] * 16, 8), "text": uniform_over([2] * 6, 10)})
    known = torch.zeros(2, 16, dtype=torch.bool)
    known[1, :10] = True  # row 1: 6 unknown tokens
    out = run(LinearScheduleSampler(steps=4), model, prompt(2), segment("image", torch.zeros(2, 16, dtype=torch.long), known=known, target=True))
    # Row 0 (16 unknown): 16, 12, 8, 4 still masked when each step starts; row 1 (6): 6, ceil(4.5), 3, ceil(1.5).
    assert masked_counts(model, "image") == [[16, 6], [12, 5], [8, 3], [4, 2]]
    assert out.segments[0].tokens.shape == (2, 16)


def test_steps_that_would_fix_nothing_make_no_model_pass():
    model = FakeModel(spaces(), {"image": uniform_over([8] * 4, 8), "text": uniform_over([2] * 6, 10)})
    known = torch.tensor([[True, False, False, False]])
    out = run(LinearScheduleSampler(steps=4), model, prompt(), segment("image", [[5, 0, 0, 0]], known=known, target=True))
    # 3 unknown over 4 steps: ceil(2.25) = 3 after step 1 (nothing fixed, no pass), then 2, 1, 0.
    assert masked_counts(model, "image") == [[3], [2], [1]]
    assert out.segments[0].tokens[0, 0].item() == 5


def test_tokens_are_fixed_most_confident_first_and_never_change_again():
    # Uniform over 4, 1, 8, 2 tokens: log p of any draw is -log k, so positions fix in the order 1, 3, 0, 2.
    model = FakeModel(spaces(), {"image": uniform_over([4, 1, 8, 2], 8), "text": uniform_over([2] * 6, 10)})
    out = run(LinearScheduleSampler(steps=4), model, prompt(), blank("image", 1, 4), seed=3)
    assert [model.masked_in(call, "image")[0].tolist() for call in range(4)] == [
        [True, True, True, True],
        [True, False, True, True],
        [True, False, True, False],
        [False, False, True, False],
    ]
    final = out.segments[0].tokens[0]
    for call in range(1, 4):
        fixed = ~model.masked_in(call, "image")[0]
        assert torch.equal(model.seen(call, "image")[0][fixed], final[fixed])
    assert final[1].item() == 0  # the only token position 1 allows


def test_known_tokens_and_the_context_never_change():
    model = FakeModel(spaces(image_shape=(4, 4)), {"image": uniform_over([8] * 16, 8), "text": uniform_over([2] * 6, 10)})
    source = torch.arange(32).view(2, 16) % 8
    known = torch.rand(2, 16, generator=torch.Generator().manual_seed(0)) < 0.5
    sampler = LinearScheduleSampler(steps=3, temperature=2.0, choice_noise=1.0)
    out = run(sampler, model, prompt(2), segment("image", source, known=known, target=True))
    assert torch.equal(out.segments[0].tokens[known], source[known])
    for call in range(len(model.calls)):
        assert torch.equal(model.seen(call, "text")[:, :3], torch.tensor([[1, 2, 0]] * 2))


def test_the_same_seed_gives_the_same_tokens():
    def tokens(seed):
        model = FakeModel(spaces(image_shape=(4, 4)), {"image": uniform_over([8] * 16, 8), "text": uniform_over([2] * 6, 10)})
        return run(LinearScheduleSampler(steps=4, choice_noise=1.0), model, prompt(), blank("image", 1, 16), seed=seed)

    assert torch.equal(tokens(0).segments[0].tokens, tokens(0).segments[0].tokens)
    assert not torch.equal(tokens(0).segments[0].tokens, tokens(1).segments[0].tokens)


def text_model(length_class: int) -> FakeModel:
    """Text logits that pick 5, 6, 7, 8, 9, 4 at positions 0..5; the length head picks `length_class` (length + 1)."""
    lengths = torch.full((6,), -30.0)
    lengths[length_class] = 30.0
    logits = {"image": peaked([3, 3, 3, 3], 8), "text": peaked([5, 6, 7, 8, 9, 4], 10)}
    return FakeModel(spaces(), logits, length_logits=lengths)


def test_a_text_target_gets_its_length_from_the_length_head_then_the_linear_schedule():
    model = text_model(length_class=3)  # length 4: three words and EOS
    image = segment("image", [[1, 2, 3, 4]])
    out = run(LinearScheduleSampler(steps=2), model, image, blank("text", 1, 6))
    (text,) = out.segments
    assert text.lengths.tolist() == [4]
    assert text.tokens.tolist() == [[5, 6, 7, 0, 0, 0]]  # EOS (0) closes the length; padding (0) after it
    # The length query sees the whole target masked; then 3 unknown tokens over 2 steps: 3, then ceil(1.5) = 2.
    assert masked_counts(model, "text") == [[6], [3], [2]]
    assert model.calls[0].attn_mask is not None  # the BEGIN query cannot see the target


def test_a_known_prefix_survives_and_the_length_leaves_room_after_it():
    model = text_model(length_class=0)  # the head says length 1, too short for the known prefix
    known = torch.tensor([[True, True, False, False, False, False]])
    text = segment("text", [[8, 9, 0, 0, 0, 0]], known=known, target=True)
    out = run(LinearScheduleSampler(steps=2), model, segment("image", [[1, 2, 3, 4]]), text)
    # At least the prefix, one new word and EOS: length 4.
    assert out.segments[0].lengths.tolist() == [4]
    assert out.segments[0].tokens.tolist() == [[8, 9, 7, 0, 0, 0]]


def test_targets_are_generated_in_request_order_each_seeing_the_ones_before():
    model = text_model(length_class=2)
    out = run(LinearScheduleSampler(steps=2), model, prompt(), blank("image", 1, 4), blank("text", 1, 6))
    image, text = out.segments
    assert (image.modality, text.modality) == ("image", "text")
    assert image.tokens.tolist() == [[3, 3, 3, 3]] and text.tokens.tolist() == [[5, 6, 0, 0, 0, 0]]
    # Every pass for the caption shows the finished image, unmasked, between the prompt and BOG.
    caption_calls = [i for i, packed in enumerate(model.calls) if len([s for s in packed.spans if s.modality == "text"]) == 2]
    assert caption_calls and all(model.masked_in(i, "image").sum() == 0 for i in caption_calls)
    assert all(model.seen(i, "image").tolist() == [[3, 3, 3, 3]] for i in caption_calls)


def test_options_are_checked_with_the_yaml_path():
    with pytest.raises(ConfigError, match=r"sampler.steps: must be > 0, got 0"):
        structure_attrs(LinearScheduleSampler.Config, {"steps": 0}, path="sampler")
    with pytest.raises(ConfigError, match=r"sampler.choise_noise: unknown option .*did you mean 'choice_noise'"):
        structure_attrs(LinearScheduleSampler.Config, {"choise_noise": 1.0}, path="sampler")


# ---- the metric on hand-made generations --------------------------------------------------


def generation(task: str, key: str, **outputs) -> Generation:
    return Generation(task=task, key=key, inputs={}, outputs=outputs)


def test_distinct_outputs_per_task():
    zeros = np.zeros((2, 2, 3), np.uint8)
    generations = [
        generation("t2i", "a", image=zeros),
        generation("t2i", "b", image=zeros.copy()),  # the same picture: not distinct
        generation("t2i", "c", image=np.ones((2, 2, 3), np.uint8)),
        generation("t2i", "d", image=np.zeros((4, 1, 3), np.uint8)),  # the same bytes, another shape: distinct
        generation("i2t", "a", text="a red circle"),
        generation("i2t", "b", text="a red circle"),
        generation("i2t", "c", text="a blue square"),
    ]
    metric = DistinctOutputs.from_config(DistinctOutputs.Config(), inputs=None, device="cpu")
    assert metric.compute(generations) == {"i2t/distinct": 2 / 3, "i2t/n": 3.0, "t2i/distinct": 0.75, "t2i/n": 4.0}


def test_several_outputs_count_as_one_combination_and_nothing_gives_nothing():
    picture = np.zeros((2, 2, 3), np.uint8)
    generations = [
        generation("t2it", "a", image=picture, text="x"),
        generation("t2it", "b", image=picture, text="y"),
        generation("t2it", "c", text="x", image=picture.copy()),
    ]
    assert DistinctOutputs().compute(generations) == {"t2it/distinct": 2 / 3, "t2it/n": 3.0}
    assert DistinctOutputs().compute([]) == {}
