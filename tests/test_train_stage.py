"""The `train` stage: its config, the task draw, the combined loss, training and the saved model."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
import torch

from mmgen.batch import Segment, TokenBatch
from mmgen.config import ConfigError, structure_attrs, structure_spec
from mmgen.objectives.tasks import TaskConfig, TaskDraw, paper_tasks
from mmgen.objectives.training_loss import TrainingLoss
from mmgen.plugins.datasets.ingest.dataset_source import dataset_candidates
from mmgen.plugins.datasets.ingest.pipeline import ingest
from mmgen.plugins.datasets.lmdb_store import LmdbStore
from mmgen.plugins.datasets.mixsel_halves import build_halves
from mmgen.plugins.datasets.shapes.dataset import ShapesDataset
from mmgen.plugins.datasets.token_cache import build_token_cache
from mmgen.plugins.models.saved import DESCRIPTION_FILE, WEIGHTS_FILE, load_trained_model, space_from_data
from mmgen.plugins.stages.train_model import TrainModelStage, build_training, train_and_save
from mmgen.protocols import ObjectiveOutput
from mmgen.registry import load_registry
from registry_helpers import stage_context
from mmgen.tokenizers.saved import save_tokenizers
from mmgen.trainer import TrainerConfig

from objective_helpers import (
    MARKERS,
    caption_segment,
    hand_batch,
    one_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_space,
)
from token_cache_helpers import BlockImageTokenizer, CharTokenizer


@pytest.fixture(scope="module")
def registry():
    return load_registry()


class FakeTokenizer:
    """Just what training needs of a tokenizer: its modality, space, and encoding MixSel's separator."""

    def __init__(self, space) -> None:
        self.modality = space.name
        self.token_space = space

    def encode(self, items: list[str]) -> Segment:
        assert items == ["|"]
        return caption_segment([[9]])


def fake_tokenizers() -> dict[str, FakeTokenizer]:
    return {s.name: FakeTokenizer(s) for s in tiny_space().spaces}


def test_tasks_follow_p_tau_and_depend_only_on_seed_and_step():
    draw = TaskDraw(paper_tasks(), seed=7)
    names = [draw(step).name for step in range(3000)]
    counts = Counter(names)
    assert abs(counts["t2i"] / 3000 - 0.8) < 0.03
    assert abs(counts["i2t"] / 3000 - 0.1) < 0.02 and abs(counts["it2it"] / 3000 - 0.1) < 0.02
    again = TaskDraw(paper_tasks(), seed=7)
    assert [again(step).name for step in reversed(range(3000))] == names[::-1]  # order-free: resumable, rank-free
    assert names != [TaskDraw(paper_tasks(), seed=8)(step).name for step in range(3000)]
    it2it = draw.tasks[2]
    assert (it2it.context, it2it.target, it2it.mask_context) == (("image",), ("text",), True)


def test_task_weights_must_be_usable():
    with pytest.raises(ValueError, match="at least one"):
        TaskDraw({}, seed=0)
    with pytest.raises(ValueError, match="not all 0"):
        TaskDraw({"t2i": TaskConfig(context=("text",), target=("image",), weight=0.0)}, seed=0)


class Constant:
    """A stand-in objective with a fixed loss, to check the weighting."""

    def __init__(self, name: str, value: float, weight: float) -> None:
        self.name, self.value, self.weight = name, value, weight

    def __call__(self, model: Any, inputs: Any) -> ObjectiveOutput:
        assert inputs.task.name == "t2i" and inputs.step == 5
        return ObjectiveOutput(loss=torch.tensor(self.value), metrics={"seen": 1.0})


def test_the_loss_is_the_weighted_sum_of_the_objectives():
    objectives = [
        Constant("mask", 2.0, 1.0),
        Constant("target_length", 3.0, 0.01),
        Constant("unroll_mask", 5.0, 1.0),
        Constant("mixsel", 7.0, 0.5),
    ]
    tasks = TaskDraw({"t2i": TaskConfig(context=("text",), target=("image",))}, seed=0)
    out = TrainingLoss(objectives, tasks)(torch.nn.Linear(1, 1), hand_batch(), 5, torch.Generator())
    assert out.loss.item() == pytest.approx(2.0 + 0.03 + 5.0 + 3.5)
    assert out.metrics["mask/loss"] == 2.0 and out.metrics["mixsel/seen"] == 1.0
    assert out.metrics["tokens"] == 3 * 16 + 2 + 4 + 6


TINY_MODEL = {"model": {"use": "magvlt", "preset": "tiny"}}


def test_default_config_is_the_papers_recipe(registry):
    config = structure_attrs(TrainModelStage.Config, TINY_MODEL, registry=registry)
    assert [s.use for s in config.objectives] == ["mask", "target_length", "unroll_mask", "mixsel"]
    assert [s.config.weight for s in config.objectives] == [1.0, 0.01, 1.0, 0.5]
    assert {name: t.weight for name, t in config.tasks.items()} == {"t2i": 8.0, "i2t": 1.0, "it2it": 1.0}
    assert config.model.config.code_init_scale == 0.0  # the paper's random embeddings
    assert isinstance(config.trainer, TrainerConfig)


def test_config_errors_name_the_path(registry):
    with pytest.raises(ConfigError, match=r"objectives\[1\]\.weigth: unknown option.*did you mean 'weight'"):
        structure_attrs(
            TrainModelStage.Config,
            {**TINY_MODEL, "objectives": [{"use": "mask"}, {"use": "mixsel", "weigth": 1}]},
            registry=registry,
        )
    with pytest.raises(ConfigError, match=r"tasks\.t2i\.target: missing required option"):
        structure_attrs(
            TrainModelStage.Config, {**TINY_MODEL, "tasks": {"t2i": {"context": ["text"]}}}, registry=registry
        )
    with pytest.raises(ConfigError, match=r"^model: missing required option"):
        structure_attrs(TrainModelStage.Config, {}, registry=registry)


def test_the_joint_space_gets_the_objectives_markers(registry):
    config = structure_attrs(TrainModelStage.Config, {"model": {"use": "magvlt", "preset": "tiny"}}, registry=registry)
    training = build_training(
        model=config.model,
        objectives=config.objectives,
        tasks=config.tasks,
        seed=0,
        registry=registry,
        tokenizers=fake_tokenizers(),
    )
    assert training.token_space == tiny_space()
    assert training.token_space.extra_specials == MARKERS
    assert training.model.embedding.weight.shape == (8 + 10 + 2 + 4 + 4, 32)
    mixsel = training.loss.objectives[3]
    assert mixsel.separators == {"text": (9,)}


class PairsDataset:
    """Three hand-made pairs repeated: items are row indices, `collate` builds the TokenBatch."""

    def __init__(self) -> None:
        batch = hand_batch()
        # MixSel's squeezed image halves, as the cache stage gives them (any codes do here).
        halves = batch.modality("image").tokens.view(3, 2, 8)
        self.batch = TokenBatch(segments=batch.segments, extras={"mixsel_halves/image": halves})

    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: int) -> int:
        return index % 3

    def collate(self, items: list[int]) -> TokenBatch:
        return self.batch.select(torch.tensor(items))


def test_training_saves_a_model_that_loads_back(registry, tmp_path):
    data = {
        "model": {"use": "magvlt", "preset": "tiny"},
        "trainer": {"steps": 3, "batch_size": 4, "warmup_steps": 0, "log_every": 1, "checkpoint_every": 3},
    }
    config = structure_attrs(TrainModelStage.Config, data, registry=registry)
    training = train_and_save(
        config, tokenizers=fake_tokenizers(), dataset=PairsDataset(), out_dir=tmp_path, registry=registry
    )
    assert (tmp_path / "trainer" / "checkpoints" / "step-00000003.pt").is_file()
    description = json.loads((tmp_path / DESCRIPTION_FILE).read_text())
    assert description["model"]["use"] == "magvlt" and description["model"]["preset"] == "tiny"
    assert space_from_data(description["token_space"]) == training.token_space

    loaded = load_trained_model(tmp_path, registry)
    assert not loaded.training
    trained = training.model.state_dict()
    assert set(loaded.state_dict()) == set(trained)
    assert all(torch.equal(loaded.state_dict()[k], trained[k].cpu()) for k in trained)
    weights = torch.load(tmp_path / WEIGHTS_FILE, weights_only=True)
    assert not torch.equal(
        weights["blocks.0.qkv.weight"],
        build_training(
            model=config.model,
            objectives=config.objectives,
            tasks=config.tasks,
            seed=0,
            registry=registry,
            tokenizers=fake_tokenizers(),
        ).model.state_dict()["blocks.0.qkv.weight"],
    )  # it did train


def test_loading_needs_a_saved_model(registry, tmp_path):
    with pytest.raises(FileNotFoundError, match="no trained model"):
        load_trained_model(tmp_path, registry)


def test_a_stage_needs_an_objective(registry):
    # Refused when the recipe is structured (before any work), at the field's own path.
    with pytest.raises(ConfigError, match=r"^stages\.train\.objectives: the train stage needs at least one objective"):
        structure_spec("stages", {"use": "train", **TINY_MODEL, "objectives": []}, path="stages.train", registry=registry)
    spec = structure_spec("stages", {"use": "train", **TINY_MODEL}, path="stages.train", registry=registry)
    assert isinstance(registry.build(spec), TrainModelStage)


class SavedBlockImageTokenizer(BlockImageTokenizer):
    @classmethod
    def load(cls, directory) -> SavedBlockImageTokenizer:
        return cls()


class SavedCharTokenizer(CharTokenizer):
    @classmethod
    def load(cls, directory) -> SavedCharTokenizer:
        return cls()


class WithTestTokenizers:
    """The real registry, plus the two test tokenizers that `load_saved_tokenizers` looks up."""

    def __init__(self, registry) -> None:
        self.registry = registry
        self.tokenizers = {"block_image": SavedBlockImageTokenizer, "chars": SavedCharTokenizer}

    def get(self, kind: str, name: str) -> type:
        if kind == "tokenizers":
            return self.tokenizers[name]
        return self.registry.get(kind, name)

    def build(self, spec, **deps):
        return self.get(spec.kind, spec.use).from_config(spec.config, **deps)


def test_the_stage_trains_from_the_tokenizers_and_cache_artefacts(registry, tmp_path):
    tokenizers = {"image": SavedBlockImageTokenizer(), "text": SavedCharTokenizer()}
    save_tokenizers(tokenizers, tmp_path / "tokenizers")
    store = tmp_path / "data" / "train.lmdb"
    ingest(dataset_candidates(ShapesDataset(size=32, counts={"train": 8}), "train"), store, progress=False)
    build_token_cache(store, tmp_path / "cache" / "train.lmdb", tokenizers=tokenizers, progress=False)
    build_halves(store, tmp_path / "cache" / "train.lmdb", tokenizers=tokenizers, progress=False)  # as the cache stage
    data = {
        "model": {"use": "magvlt", "preset": "tiny"},
        "objectives": ["mask", "target_length", "unroll_mask", {"use": "mixsel", "separator": " "}],
        "trainer": {"steps": 2, "batch_size": 4, "warmup_steps": 0, "checkpoint_every": 2},
    }
    stage = registry.build(structure_spec("stages", {"use": "train", **data}, path="stages.train", registry=registry))
    with_tokenizers = WithTestTokenizers(registry)
    context = stage_context(
        tmp_path / "train",
        folders={"tokenizers": tmp_path / "tokenizers", "cache": tmp_path / "cache"},
        registry=with_tokenizers,
    )
    stage.run(context)
    model = load_trained_model(tmp_path / "train", with_tokenizers)
    space = model.token_space
    assert space.modalities == ("image", "text") and space.extra_specials == MARKERS
    assert space.space("text") == CharTokenizer().token_space
    assert model.length_logits(torch.zeros(1, 32)).shape == (1, 12)


def test_a_task_enters_the_draw_at_its_start_step():
    tasks = {**paper_tasks(), "i2t": TaskConfig(context=("image",), target=("text",), weight=1.0, start_step=100)}
    draw = TaskDraw(tasks, seed=7)
    names = [draw(step).name for step in range(3000)]
    assert "i2t" not in names[:100] and Counter(names[:100])["t2i"] > 75
    assert abs(Counter(names[100:])["i2t"] / 2900 - 0.1) < 0.02
    # Once every task has started, the draws are exactly those without a start step.
    plain = TaskDraw(paper_tasks(), seed=7)
    assert names[100:] == [plain(step).name for step in range(100, 3000)]
    with pytest.raises(ValueError, match="start at step 0"):
        TaskDraw({"i2t": TaskConfig(context=("image",), target=("text",), start_step=5)}, seed=0)
    with pytest.raises(ValueError, match="start_step must be >= 0"):
        TaskConfig(context=("image",), target=("text",), start_step=-1)


def test_the_stage_reads_captions_with_the_recipes_caption_weights(registry, tmp_path, monkeypatch):
    import mmgen.plugins.stages.train_model as train_model

    tokenizers = {"image": SavedBlockImageTokenizer(), "text": SavedCharTokenizer()}
    save_tokenizers(tokenizers, tmp_path / "tokenizers")
    store = tmp_path / "data" / "train.lmdb"
    ingest(dataset_candidates(ShapesDataset(size=32, counts={"train": 4}), "train"), store, progress=False)
    build_token_cache(store, tmp_path / "cache" / "train.lmdb", tokenizers=tokenizers, progress=False)
    data = {"model": {"use": "magvlt", "preset": "tiny"}, "objectives": ["mask"], "caption_weights": [1, 0, 0, 0, 0]}
    stage = registry.build(structure_spec("stages", {"use": "train", **data}, path="stages.train", registry=registry))
    seen = {}
    monkeypatch.setattr(train_model, "train_and_save", lambda config, *, dataset, **_: seen.update(dataset=dataset))
    context = stage_context(
        tmp_path / "train",
        folders={"tokenizers": tmp_path / "tokenizers", "cache": tmp_path / "cache"},
        registry=WithTestTokenizers(registry),
    )
    stage.run(context)
    assert seen["dataset"].caption_weights == (1.0, 0.0, 0.0, 0.0, 0.0)
    first = tokenizers["text"].encode([LmdbStore(store)[i].captions[0] for i in range(4)]).tokens.numpy()
    assert all((seen["dataset"][i].tokens["text"] == first[i]).all() for i in range(4))
