"""Contract tests: every registered component of a kind is checked here.

Registering a plugin is enough to get it tested: each class below is
parametrised over the registry's entries of its kind.
"""

from __future__ import annotations

import inspect
import math

import attrs
import numpy as np
import pytest
import torch

from mmgen.batch import Generation, Record, Segment, TokenBatch
from mmgen.config import ConfigError, declared_inputs, structure_attrs, structure_spec, to_data
from mmgen.generation.task import Prompt
from mmgen.hookspecs import DEPS
from mmgen.stage import StageInputs
from mmgen.protocols import GenerationRequest, ObjectiveOutput, RequestSegment, StepInput
from mmgen.registry import KINDS, load_registry
from mmgen.task import Task
from mmgen.token_space import JointTokenSpace, TokenSpace

REGISTRY = load_registry()
IMAGE = TokenSpace(name="image", vocab_size=12, shape=(2, 2))
TEXT = TokenSpace(name="text", vocab_size=9, shape=(4,), variable_length=True, pad_id=0, eos_id=0)
SPACE = JointTokenSpace(spaces=(IMAGE, TEXT), extra_specials=("BOG_LEFT", "BOG_RIGHT", "BOG_TOP", "BOG_BOTTOM"))
TASKS = (
    Task(name="t2i", context=("text",), target=("image",)),
    Task(name="i2t", context=("image",), target=("text",)),
    Task(name="it2it", context=("image",), target=("text",), mask_context=True),
)


def deps_of(kind: str) -> dict:
    """The dependencies the runner gives components of `kind` (DEPS), made for the tiny space."""
    from mmgen.plugins.clip.model import ClipModel, ClipSizes

    clip = ClipModel(ClipSizes(image_vocab=12, image_length=4, text_vocab=9, text_length=4, width=16, depth=1, heads=2))
    made = {
        "model": tiny_model().eval(),
        "token_space": SPACE,
        "tokenizers": {"text": FakeTextTokenizer()},
        "inputs": StageInputs({}, uses={}, loaded={"clip": clip}),
        "device": "cpu",
    }
    return {name: made[name] for name in DEPS[kind]}


def entries(kind: str) -> list:
    return [pytest.param(entry, id=entry.name) for entry in REGISTRY.entries(kind)]


def default_config(entry):
    """The component's Config with every default, or None when some option is required."""
    required = [f.name for f in attrs.fields(entry.cls.Config) if f.default is attrs.NOTHING]
    if required:
        return None
    try:
        return structure_attrs(entry.cls.Config, {}, registry=REGISTRY)
    except ConfigError as error:  # one of several options is required (vqgan: a preset or an architecture)
        assert "give" in error.message, error.message
        return None


def tiny_batch(batch_size: int = 4, seed: int = 0) -> TokenBatch:
    generator = torch.Generator().manual_seed(seed)
    image = torch.randint(0, IMAGE.vocab_size, (batch_size, IMAGE.length), generator=generator)
    lengths = torch.randint(2, TEXT.length + 1, (batch_size,), generator=generator)
    text = torch.randint(1, TEXT.vocab_size, (batch_size, TEXT.length), generator=generator)
    positions = torch.arange(TEXT.length)[None]
    text = torch.where(positions < lengths[:, None] - 1, text, torch.zeros_like(text))  # EOS, then pad (same id)
    # Batches from the cache stage carry MixSel's squeezed image halves (any valid codes do here).
    halves = {"mixsel_halves/image": image.view(batch_size, 2, IMAGE.length // 2)}
    segments = (Segment.full("image", image), Segment(modality="text", tokens=text, lengths=lengths))
    return TokenBatch(segments=segments, extras=halves)


def tiny_model(space: JointTokenSpace = SPACE):
    model_entry = REGISTRY.entry("models", "magvlt")
    config = structure_attrs(model_entry.cls.Config, {"preset": "tiny"}, registry=REGISTRY)
    torch.manual_seed(0)
    return model_entry.cls.from_config(config, token_space=space)


def space_for(modalities) -> JointTokenSpace:
    """SPACE, plus a fixed-length space of 4 tokens for each other modality named (a plugin's audio, ...)."""
    others = [TokenSpace(name=m, vocab_size=12, shape=(4,)) for m in dict.fromkeys(modalities) if m not in SPACE.modalities]
    return attrs.evolve(SPACE, spaces=(*SPACE.spaces, *others))


def batch_for(space: JointTokenSpace, batch_size: int) -> TokenBatch:
    """tiny_batch, plus random tokens for each modality of `space` that it lacks."""
    batch = tiny_batch(batch_size=batch_size)
    generator = torch.Generator().manual_seed(1)
    others = [
        Segment.full(s.name, torch.randint(0, s.vocab_size, (batch_size, s.length), generator=generator))
        for s in space.spaces
        if s.name not in SPACE.modalities
    ]
    return attrs.evolve(batch, segments=(*batch.segments, *others))


def test_every_kind_has_builtin_components():
    missing = [kind for kind in KINDS if not REGISTRY.names(kind)]
    assert missing == []
    assert REGISTRY.failures == []


@pytest.mark.parametrize("kind", KINDS)
def test_component_shape(kind):
    for entry in REGISTRY.entries(kind):
        assert entry.cls.name == entry.name
        assert attrs.has(entry.cls.Config), entry.name
        config = default_config(entry)
        if config is None:
            continue
        fields = attrs.fields(entry.cls.Config)
        if fields:
            with pytest.raises(attrs.exceptions.FrozenInstanceError):
                setattr(config, fields[0].name, None)
        # The resolved recipe form structures back to the same config.
        assert structure_attrs(entry.cls.Config, to_data(config), registry=REGISTRY) == config


class TestTrackers:
    @pytest.mark.parametrize("entry", entries("trackers"))
    def test_full_run_cycle(self, entry, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
        tracker = entry.cls.from_config(default_config(entry))
        artefact = tmp_path / "a.txt"
        artefact.write_text("x")
        tracker.start(run_name="contract")
        tracker.log_params({"a": 1, "b": "two"})
        tracker.log_metrics({"loss": 0.5}, step=3)
        tracker.log_text("hello", file_name="hello.txt")
        tracker.log_image(np.zeros((4, 4, 3), dtype=np.uint8), file_name="grid.png")
        tracker.log_image(np.zeros((4, 4, 3), dtype=np.uint8), file_name="grid-2.png", key="grid", step=2)
        tracker.log_table({"key": ["a", "b"], "generated": ["x", "y"]}, file_name="captions.json")
        tracker.log_artifact(artefact)
        tracker.end(status="FINISHED")


class TestDatasets:
    @pytest.mark.parametrize("entry", entries("datasets"))
    def test_records_are_deterministic_records(self, entry):
        config = default_config(entry)
        if config is None:
            pytest.skip(f"{entry.name} needs a source path; covered by its own tests")
        first = entry.cls.from_config(config)
        second = entry.cls.from_config(config)
        split = first.splits()[0]
        a = [r for _, r in zip(range(3), first.records(split))]
        b = [r for _, r in zip(range(3), second.records(split))]
        assert len(a) == 3 and a == b
        for record in a:
            assert isinstance(record, Record) and isinstance(record.data, bytes) and record.data
            assert record.captions and all(isinstance(c, str) and c for c in record.captions)


class TestModels:
    @pytest.mark.parametrize("entry", entries("models"))
    def test_logits_are_restricted_to_the_modality(self, entry):
        from mmgen.layout import Part, pack

        fields = {f.name for f in attrs.fields(entry.cls.Config)}
        options = {"preset": "tiny"} if "preset" in fields else {}  # the smallest size where a model has presets
        config = structure_attrs(entry.cls.Config, options, registry=REGISTRY)
        model = entry.cls.from_config(config, token_space=SPACE, tokenizers=None)
        batch = tiny_batch()
        packed = pack(SPACE, ["BOC", Part(segment=batch.modality("text")), "BOG", Part(segment=batch.modality("image"))])
        hidden = model(packed)
        assert hidden.shape[:2] == packed.tokens.shape
        assert model.logits(hidden, "image").shape == (*packed.tokens.shape, IMAGE.vocab_size)
        assert model.logits(hidden, "text").shape == (*packed.tokens.shape, TEXT.vocab_size)


class FakeTextTokenizer:
    """Encodes any text as one token then EOS: what objectives may ask of a tokenizer."""

    modality = "text"
    token_space = TEXT

    def encode(self, items):
        tokens = torch.zeros(len(items), TEXT.length, dtype=torch.long)
        tokens[:, 0] = 3
        return Segment(modality="text", tokens=tokens, lengths=torch.full((len(items),), 2))

    def decode(self, segment):
        return [" ".join(f"t{t}" for t in row[: int(n)]) for row, n in zip(segment.tokens.tolist(), segment.lengths)]


class TestObjectives:
    @pytest.mark.parametrize("task", TASKS, ids=lambda t: t.name)
    @pytest.mark.parametrize("entry", entries("objectives"))
    def test_loss_is_a_finite_differentiable_scalar(self, entry, task):
        model = tiny_model()
        objective = entry.cls.from_config(default_config(entry), token_space=SPACE, tokenizers={"text": FakeTextTokenizer()})
        inputs = StepInput(batch=tiny_batch(), task=task, generator=torch.Generator().manual_seed(1))
        out = objective(model, inputs)
        assert isinstance(out, ObjectiveOutput)
        assert out.loss.ndim == 0 and math.isfinite(out.loss.item())
        if out.loss.requires_grad:
            out.loss.backward()
            assert any(p.grad is not None for p in model.parameters())
        else:  # an objective that does not apply to this task contributes an exact zero
            assert out.loss.item() == 0.0
        assert all(math.isfinite(float(v)) for v in out.metrics.values())


class TestSamplers:
    @pytest.mark.parametrize("entry", entries("samplers"))
    def test_fills_unknown_and_keeps_known_tokens(self, entry):
        model = tiny_model().eval()
        batch = tiny_batch(batch_size=2)
        text, image = batch.modality("text"), batch.modality("image")
        known = torch.zeros_like(image.tokens, dtype=torch.bool)
        known[:, 0] = True
        request = GenerationRequest(
            segments=(
                RequestSegment(modality="text", tokens=text.tokens, known=text.valid(), lengths=text.lengths),
                RequestSegment(modality="image", tokens=image.tokens, known=known, target=True),
            )
        )
        sampler = entry.cls.from_config(default_config(entry))
        (out,) = sampler.generate(model, request, generator=torch.Generator().manual_seed(0)).segments
        assert out.modality == "image" and out.tokens.shape == image.tokens.shape
        assert ((out.tokens >= 0) & (out.tokens < IMAGE.vocab_size)).all()
        assert torch.equal(out.tokens[:, 0], image.tokens[:, 0])


class TestMetrics:
    @pytest.mark.parametrize("entry", entries("metrics"))
    def test_nothing_to_judge_gives_named_floats(self, entry):
        config = default_config(entry)
        if config is None:
            pytest.skip(f"{entry.name} needs options; covered by its own tests")
        result = entry.cls.from_config(config, **deps_of("metrics")).compute([])
        assert isinstance(result, dict)
        assert all(isinstance(k, str) and isinstance(v, float) for k, v in result.items())


class TestStages:
    @pytest.mark.parametrize("entry", entries("stages"))
    def test_has_run(self, entry):
        assert callable(getattr(entry.cls, "run", None))

    @pytest.mark.parametrize("entry", entries("stages"))
    def test_declares_the_stages_it_reads(self, entry):
        # A stage names what it reads in `upstream` fields, so the runner knows the graph before any work.
        config = default_config(entry)
        if config is None:
            pytest.skip(f"{entry.name} needs options")
        for path, key in declared_inputs(config):
            assert isinstance(key, str) and key, (entry.name, path)


class TestTasks:
    @pytest.mark.parametrize("entry", entries("tasks"))
    def test_builds_a_request_the_sampler_fills_with_what_it_makes(self, entry):
        task = entry.cls.from_config(default_config(entry))
        assert task.name == entry.name and isinstance(task.summary, str) and task.summary
        assert task.makes
        # The core names no modality: a task of a plugin's modality (audio) gets a space with it.
        space = space_for([*task.needs, *task.makes])
        batch = batch_for(space, 2)
        inputs = {m: batch.modality(m) for m in task.needs}
        sampler = REGISTRY.build(structure_spec("samplers", "maskgit", path="s", registry=REGISTRY))
        # Each route's requests in turn (a follow_up reads what the earlier ones made) make what the task makes.
        for route in task.routes() if hasattr(task, "routes") else [task]:
            made = {}
            request = route.request(inputs, batch=2, space=space, device=torch.device("cpu"))
            while request is not None:
                out = sampler.generate(tiny_model(space).eval(), request, generator=torch.Generator().manual_seed(0))
                assert [s.modality for s in out.segments] == [s.modality for s in request.segments if s.target]
                made.update({s.modality: s for s in out.segments})
                follow_up = getattr(route, "follow_up", None)
                request = follow_up(inputs, made, batch=2, space=space, device="cpu") if follow_up else None
            assert tuple(m for m in made if m in task.makes) == task.makes
            assert all(s.batch_size == 2 for s in made.values())

    @pytest.mark.parametrize("entry", entries("tasks"))
    def test_prompts_hold_what_the_task_needs(self, entry):
        task = entry.cls.from_config(default_config(entry))
        others = [m for m in task.needs if m not in ("image", "text")]  # a plugin's modality (audio)
        examples = [
            # A text every task can read, the vqa task's `question: ... answer: ...` included.
            Prompt(
                key=f"k{i}",
                items={"image": f"image {i}", "text": f"question: a b? answer: d {i}", **{m: m for m in others}},
            )
            for i in range(3)
        ]
        prompts = task.prompts(examples)
        assert [p.key for p in prompts] == ["k0", "k1", "k2"]
        assert all(set(p.items) == set(task.needs) for p in prompts)


class TestRerankers:
    @pytest.mark.parametrize("entry", entries("rerankers"))
    def test_one_finite_score_per_row(self, entry):
        reranker = entry.cls.from_config(default_config(entry), **deps_of("rerankers"))
        assert set(reranker.modalities) <= set(SPACE.modalities)
        batch = tiny_batch(batch_size=3)
        scores = reranker.scores({s.modality: s for s in batch.segments})
        assert scores.shape == (3,) and torch.isfinite(scores).all()


class TestRefiners:
    @pytest.mark.parametrize("entry", entries("refiners"))
    def test_refined_outputs_keep_their_modalities_and_shapes(self, entry):
        refiner = entry.cls.from_config(default_config(entry), **deps_of("refiners"))
        assert set(refiner.refines) <= set(refiner.modalities) <= set(SPACE.modalities)
        batch = tiny_batch(batch_size=3)
        image, text = batch.modality("image"), batch.modality("text")
        refined = refiner.refine({"image": image}, {"text": text})
        assert set(refined) == {"text"} and refined["text"].tokens.shape == text.tokens.shape
        assert torch.equal(refined["text"].lengths, text.lengths)


@pytest.mark.parametrize("kind", KINDS)
def test_from_config_takes_the_kinds_deps_by_keyword(kind):
    # Every component gets its kind's deps (mmgen.api.DEPS) and must accept more: a dep added later breaks nothing.
    for entry in REGISTRY.entries(kind):
        parameters = inspect.signature(entry.cls.from_config).parameters.values()
        assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters), f"{entry.name}: from_config lacks **deps"
        named = {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
        assert named <= set(DEPS[kind]), f"{entry.name} asks for {sorted(named - set(DEPS[kind]))}, not given to {kind}"


class TestTokenizers:
    @pytest.mark.parametrize("entry", entries("tokenizers"))
    def test_declares_modality_and_persistence(self, entry):
        for member in ("encode", "decode", "save", "load", "content_hash", "load_item"):
            assert callable(getattr(entry.cls, member, None)), f"{entry.name} lacks {member}"


def test_generation_record_types_are_plain():
    generation = Generation(task="t2i", key="k", inputs={"text": "a"}, outputs={"image": np.zeros((2, 2, 3), np.uint8)})
    assert generation.reference == {}
