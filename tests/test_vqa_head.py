"""VQA as classification: the answer head, growing a model by it, the vqa_classify objective and answer_head sampler."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mmgen.batch import Segment, TokenBatch
from mmgen.errors import UserError
from mmgen.layout import Part, pack
from mmgen.protocols import StepInput
from mmgen.task import Task
from mmgen.token_space import JointTokenSpace, TokenSpace

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "checkpoints" / "shapes-first-phase" / "artefacts" / "train-fc4b1d51eefde40e"

IMAGE = TokenSpace(name="image", vocab_size=16, shape=(2, 2))
TEXTS = [
    "question: what colour is the circle? answer: red",
    "question: what colour is the square? answer: blue",
    "question: is there a red cross? answer: yes",
    "question: is the circle above the square? answer: no",
    "question: how many objects are there? answer: 2",
]
ANSWERS = ["red", "blue", "yes"]


@pytest.fixture(scope="module")
def tokenizer():
    from mmgen.tokenizers.sentencepiece_bpe import SentencePieceBPE

    bpe = SentencePieceBPE(vocab_size=60, max_length=32, dropout=0.0)
    bpe.train(TEXTS * 4)
    return bpe


@pytest.fixture(scope="module")
def registry():
    from mmgen.registry import load_registry

    return load_registry()


def tiny_spec(registry, **options):
    from mmgen.config import structure_spec

    return structure_spec("models", {"use": "magvlt", "preset": "tiny", **options}, path="model", registry=registry)


def build(registry, space, seed=0, **options):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return registry.build(tiny_spec(registry, **options), token_space=space, tokenizers=None).eval()


def space_of(tokenizer) -> JointTokenSpace:
    return JointTokenSpace(spaces=(IMAGE, tokenizer.token_space))


def headed_model(registry, tokenizer, *, prefer: int):
    """A tiny model with a head over ANSWERS whose scores are fixed: 5 for class `prefer`, 0 for the others."""
    from mmgen.plugins.models.answer_head import encode_answers, with_answer_head

    model = build(registry, space_of(tokenizer))
    tokens = encode_answers(ANSWERS, tokenizer=tokenizer, length=tokenizer.max_length)
    _, grown = with_answer_head(tiny_spec(registry), model, tokens, registry=registry, seed=0)
    with torch.no_grad():
        grown.answer_head.out.weight.zero_()
        grown.answer_head.out.bias.copy_(torch.eye(len(ANSWERS))[prefer] * 5.0)
    return grown.eval()


def image_segment(rows: int) -> Segment:
    return Segment.full("image", torch.arange(4).repeat(rows, 1))


def sequence(tokenizer, space, text):
    items = ["BOC", Part(segment=image_segment(1)), "BOG", Part(segment=tokenizer.encode([text]))]
    return pack(space, items)


def test_without_a_head_the_model_has_the_same_tensors_and_computes_the_same(registry, tokenizer):
    import torch as t

    space = space_of(tokenizer)
    plain, headed = build(registry, space), build(registry, space, answer_classes=3)
    assert plain.answer_head is None
    added = sorted(set(headed.state_dict()) - set(plain.state_dict()))
    assert added == [
        "answer_head.answer_tokens",
        "answer_head.dense.bias",
        "answer_head.dense.weight",
        "answer_head.norm.bias",
        "answer_head.norm.weight",
        "answer_head.out.bias",
        "answer_head.out.weight",
    ]
    # The head is made last: every other tensor of a seed is what it was before the option existed.
    for name, tensor in plain.state_dict().items():
        assert t.equal(tensor, headed.state_dict()[name]), name
    packed = sequence(tokenizer, space, TEXTS[0])
    with t.no_grad():
        assert t.equal(plain(packed), headed(packed))
    # A saved model (no head) loads strictly: its weights file has exactly the model's tensors.
    from mmgen.plugins.models.saved import load_trained_model

    shipped = load_trained_model(TRAIN, registry)
    saved = t.load(TRAIN / "weights.pt", map_location="cpu", weights_only=True)
    assert shipped.answer_head is None and sorted(shipped.state_dict()) == sorted(saved)


def test_growing_by_a_head_keeps_every_pretrained_tensor_bit_for_bit(registry, tokenizer):
    from mmgen.plugins.models.answer_head import encode_answers, load_with_head, with_answer_head

    space = space_of(tokenizer)
    model = build(registry, space, seed=3)
    tokens = encode_answers(ANSWERS, tokenizer=tokenizer, length=tokenizer.max_length)
    spec, grown = with_answer_head(tiny_spec(registry), model, tokens, registry=registry, seed=0)
    assert spec.config.answer_classes == 3 and grown.answer_head.classes == 3
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, grown.state_dict()[name]), name
    assert torch.equal(grown.answer_head.answer_tokens, tokens)
    assert [tokenizer.decode_ids(row) for row in tokens.tolist()] == ANSWERS
    # The model's own init: biases zero, LayerNorm identity.
    assert not grown.answer_head.dense.bias.any() and not grown.answer_head.out.bias.any()
    assert torch.equal(grown.answer_head.norm.weight, torch.ones(grown.answer_head.norm.weight.shape))
    packed = sequence(tokenizer, space, TEXTS[1])
    with torch.no_grad():
        assert torch.equal(model(packed), grown(packed))
    with pytest.raises(UserError, match=r"already has an answer head \(3 classes\); set answer_head: null"):
        with_answer_head(spec, grown, tokens, registry=registry, seed=0)
    state = {k: v for k, v in model.state_dict().items() if k != "head_norm.bias"}
    fresh = build(registry, space, answer_classes=3)
    with pytest.raises(ValueError, match=r"missing \['head_norm.bias'\], unexpected \[\]"):
        load_with_head(fresh, state, tokens)


def test_the_question_prefix_is_found_exactly(tokenizer):
    from mmgen.objectives.vqa_classify import prefix_length

    for text in TEXTS:
        ids = tokenizer.encode([text]).tokens[0].tolist()
        n = prefix_length(ids, tokenizer=tokenizer)
        prefix, answer = text.split(" answer: ")
        assert tokenizer.decode_ids(ids[:n]) == f"{prefix} answer:"
        assert tokenizer.decode_ids(ids[n:]) == answer
    assert prefix_length(tokenizer.encode(["a red circle"]).tokens[0].tolist(), tokenizer=tokenizer) is None
    # Nothing after `answer:`: no answer to learn.
    assert prefix_length(tokenizer.encode(["question: is it? answer:"]).tokens[0].tolist(), tokenizer=tokenizer) is None
    # Spelt in other pieces (every merge dropped): the prefix is not the text's first pieces.
    dropped = tokenizer.encode_dropout([TEXTS[0]], rate=1.0, seeds=[0]).tokens[0].tolist()
    assert prefix_length(dropped, tokenizer=tokenizer) is None


def test_the_objective_trains_soft_targets_with_exact_loss_and_metrics(registry, tokenizer):
    from mmgen.objectives.vqa_classify import VqaClassify

    model = headed_model(registry, tokenizer, prefer=1)  # logits [0, 5, 0] for every question
    objective = VqaClassify(token_space=model.token_space, tokenizer=tokenizer)
    texts = [TEXTS[1], "a blue square", TEXTS[3]]  # answer blue (class 1); no question; answer no (no class)
    batch = TokenBatch(segments=[image_segment(3), tokenizer.encode(texts)])
    task = Task(name="i2t", context=("image",), target=("text",), full_length=True)
    out = objective(model, StepInput(batch=batch, task=task, generator=torch.Generator()))
    objective._classes = {"red": 0, "blue": 1, "yes": 2}
    assert objective.targets(["blue", "no"], classes=3).tolist() == [[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731  BCE-with-logits: target 1 -> softplus(-x), 0 -> softplus(x)
    blue = 2 * softplus(0) + softplus(-5)
    no = 2 * softplus(0) + softplus(5)
    assert out.loss.item() == pytest.approx((blue + no) / 2, rel=1e-6)
    assert out.metrics == {"accuracy": 0.5, "unknown_answer": 0.5, "skipped": 1.0}
    out.loss.backward()
    assert model.answer_head.out.bias.grad is not None
    # A step without a text target trains nothing and still reaches the head.
    t2i = Task(name="t2i", context=("text",), target=("image",))
    idle = objective(model, StepInput(batch=batch, task=t2i, generator=torch.Generator()))
    assert idle.loss.item() == 0.0 and idle.metrics == {}


def test_the_objective_gives_zero_and_says_why_for_a_model_without_a_head(registry, tokenizer, caplog):
    from mmgen.objectives.vqa_classify import VqaClassify

    model = build(registry, space_of(tokenizer))
    objective = VqaClassify(token_space=model.token_space, tokenizer=tokenizer)
    batch = TokenBatch(segments=[image_segment(1), tokenizer.encode([TEXTS[0]])])
    task = Task(name="i2t", context=("image",), target=("text",))
    with caplog.at_level("WARNING"):
        for _ in range(2):
            out = objective(model, StepInput(batch=batch, task=task, generator=torch.Generator()))
            assert out.loss.item() == 0.0 and not out.loss.requires_grad
    assert [r.getMessage() for r in caplog.records] == [
        "objective 'vqa_classify' trains an answer head, and the model has none (its loss is 0):"
        " give the finetune stage answer_head: {top: N}"
    ]


def test_the_finetune_stage_refuses_vqa_classify_without_a_head(registry, tokenizer):
    from mmgen.plugins.stages.answer_head import grow_answer_head
    from mmgen.plugins.stages.finetune import FinetuneStage
    from mmgen.config import structure_attrs

    config = structure_attrs(FinetuneStage.Config, {"objectives": [{"use": "vqa_classify"}]}, registry=registry)
    model = build(registry, space_of(tokenizer))
    with pytest.raises(UserError, match=r"the pretrained model has none: give the stage answer_head: \{top: N\}$"):
        grow_answer_head(
            tiny_spec(registry), model, config, inputs=None, tokenizers={"text": tokenizer}, out_dir=None,
            registry=registry,
        )


def vqa_run(model, tokenizer, sampler, questions):
    from mmgen.generation.pipeline import GenerationPipeline
    from mmgen.generation.task import Prompt
    from mmgen.plugins.tasks.vqa import VisualQuestionAnswering

    image_tokenizer = type("Grid", (), {"encode": lambda self, items: Segment.full("image", items)})()
    pipeline = GenerationPipeline(
        model=model, tokenizers={"image": image_tokenizer, "text": tokenizer}, sampler=sampler, show_progress=False
    )
    task = VisualQuestionAnswering()
    examples = [Prompt(key=str(i), items={"image": torch.arange(4), "text": q}) for i, q in enumerate(questions)]
    return pipeline.run(task, task.prompts(examples))


def test_the_sampler_writes_the_best_class_answer_after_the_question(registry, tokenizer):
    from mmgen.samplers.answer_head import AnswerHeadSampler

    model = headed_model(registry, tokenizer, prefer=2)  # always "yes"
    questions = [TEXTS[0], "question: is there a red cross? answer: no"]
    made = vqa_run(model, tokenizer, AnswerHeadSampler(), questions)
    assert [g.outputs["text"] for g in made] == [
        "question: what colour is the circle? answer: yes",
        "question: is there a red cross? answer: yes",
    ]
    # The tokens: exactly the prefix's, then the class's answer tokens, then EOS.
    prefix = tokenizer.encode(["question: what colour is the circle? answer:"])
    n = int(prefix.lengths[0]) - 1
    yes = model.answer_head.answer_tokens[2].tolist()
    yes = yes[: yes.index(tokenizer.token_space.eos_id)]
    from mmgen.api import GenerationRequest
    from mmgen.plugins.tasks.vqa import VisualQuestionAnswering

    inputs = {"image": image_segment(1), "text": prefix}
    request = VisualQuestionAnswering().request(inputs, batch=1, space=model.token_space, device="cpu")
    written = AnswerHeadSampler().generate(model, GenerationRequest(segments=request.segments), generator=None)
    row = written.segments[0]
    eos = tokenizer.token_space.eos_id
    assert row.tokens[0].tolist() == prefix.tokens[0, :n].tolist() + yes + [eos] * (tokenizer.max_length - n - len(yes))
    assert row.lengths.tolist() == [n + len(yes) + 1]


def test_the_sampler_refuses_a_model_without_a_head_in_one_line(registry, tokenizer):
    from mmgen.samplers.answer_head import AnswerHeadSampler

    model = build(registry, space_of(tokenizer))
    with pytest.raises(UserError) as error:
        vqa_run(model, tokenizer, AnswerHeadSampler(), [TEXTS[0]])
    assert str(error.value) == (
        "task 'vqa': the answer_head sampler needs a model with an answer head (VQA as classification), and this one"
        " has none: fine-tune it with the finetune stage's answer_head option, or use the maskgit sampler"
    )


def test_a_request_that_is_no_question_goes_to_maskgit(registry, tokenizer):
    from mmgen.api import GenerationRequest, RequestSegment
    from mmgen.samplers.answer_head import AnswerHeadSampler
    from mmgen.samplers.maskgit import MaskGitSampler

    model = headed_model(registry, tokenizer, prefer=0)
    text = tokenizer.encode([TEXTS[0]])
    image = image_segment(1)
    request = GenerationRequest(
        segments=[
            RequestSegment(modality="text", tokens=text.tokens, known=text.valid(), lengths=text.lengths),
            RequestSegment(modality="image", tokens=image.tokens, known=torch.zeros(1, 4).bool(), target=True),
        ]
    )
    ours = AnswerHeadSampler().generate(model, request, generator=torch.Generator().manual_seed(0))
    theirs = MaskGitSampler().generate(model, request, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ours.segments[0].tokens, theirs.segments[0].tokens)
