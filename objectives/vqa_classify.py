"""VQA as classification: train the answer head (plugins/models/answer_head.py) beside the generative VQA.

For each row of an I2T-like step (the text a target, given some context), the text is decoded with the text
tokenizer and its known prefix `question: ... answer:` found: its tokens are the first n tokens of the row
(SentencePiece pieces never cross a space, so the prefix encodes as the text's first pieces; a row where
that does not hold, or that is no VQA text, is skipped and counted in `skipped`). The head reads the
`[BOG]` state of `[BOC] context [BOG] text` with the first n text tokens shown and every later slot MASK
(the text at full length): what the `answer_head` sampler shows it.

The target: the answer's soft scores over the model's answer classes (metrics/vqa_vocabulary.py
`soft_targets`), so binary cross-entropy per class aims at the VQA accuracy. The token cache keeps the
text only, not the record's ten human answers, so the answer in the text (what follows `answer:`) stands
for all ten: a class scores 1 when it is that answer, every other 0. Exact for `shapes_vqa` (its ten
answers are one answer ten times); for VQAv2 it trains on `multiple_choice_answer` alone (docs/vqa.md).
A row whose answer is not among the classes has an all-zero target (the usual VQA practice) and counts in
`unknown_answer`. The loss sums over classes and averages over rows (BCE per class as the VQA
classifiers train it). `accuracy`: the VQA accuracy of the argmax class, over the rows trained on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs
import torch
import torch.nn.functional as F

from mmgen.api import JointTokenSpace, ObjectiveOutput, Part, StepInput
from mmgen.plugins.metrics.vqa_normalise import normalise_prediction
from mmgen.plugins.metrics.vqa_text import answer_from_text
from mmgen.plugins.metrics.vqa_vocabulary import soft_targets
from mmgen.plugins.models.answer_head import question_sequence
from mmgen.plugins.tasks.vqa import known_prefix

from .task_layout import batch_segments

log = logging.getLogger(__name__)

HUMANS = 10  # VQA's human answers per question: the text's one answer stands for each
NO_HEAD = (
    "objective 'vqa_classify' trains an answer head, and the model has none (its loss is 0):"
    " give the finetune stage answer_head: {top: N}"
)
CACHE_ROWS = 200_000  # parsed texts kept (a token cache has a few per record); beyond it the cache starts over


def prefix_length(ids: Sequence[int], *, tokenizer: Any) -> int | None:
    """How many of a text's ids `ids` (EOS and padding allowed at the end) spell its `question: ... answer:`;
    None when the text is no VQA text, the prefix is not its first ids, or nothing follows the prefix."""
    eos = tokenizer.token_space.eos_id
    content = list(ids)
    if eos is not None and eos in content:
        content = content[: content.index(eos)]
    try:
        prefix = known_prefix(tokenizer.decode_ids(content))
    except ValueError:
        return None
    encoded = tokenizer.encode([prefix])
    prefix_ids = encoded.tokens[0, : int(encoded.lengths[0])].tolist()
    if eos is not None and prefix_ids and prefix_ids[-1] == eos:
        prefix_ids = prefix_ids[:-1]
    n = len(prefix_ids)
    return n if 0 < n < len(content) and content[:n] == prefix_ids else None


def text_tokenizer(modality: str, tokenizers: Any) -> Any:
    candidates = tokenizers.values() if isinstance(tokenizers, Mapping) else (tokenizers or ())
    for tokenizer in candidates:
        if getattr(tokenizer, "modality", None) == modality:
            return tokenizer
    raise ValueError(f"objective 'vqa_classify' needs the {modality!r} tokenizer to find each question")


def class_index(model: Any, tokenizer: Any) -> dict[str, int]:
    """{answer: class} of the model's head, each answer read back from its `answer_tokens`."""
    classes: dict[str, int] = {}
    for index, row in enumerate(model.answer_head.answer_tokens.tolist()):
        classes.setdefault(normalise_prediction(tokenizer.decode_ids(row)), index)
    return classes


class VqaClassify:
    name: ClassVar[str] = "vqa_classify"

    @attrs.frozen(kw_only=True)
    class Config:
        weight: float = 1.0
        text: str = "text"  # the modality holding `question: ... answer: ...`

    @classmethod
    def from_config(
        cls, config: Config, *, token_space: JointTokenSpace, tokenizers: Any = None, **_deps: Any
    ) -> VqaClassify:
        return cls(
            token_space=token_space,
            tokenizer=text_tokenizer(config.text, tokenizers),
            weight=config.weight,
            text=config.text,
        )

    def __init__(self, *, token_space: JointTokenSpace, tokenizer: Any, weight: float = 1.0, text: str = "text"):
        self.token_space = token_space
        self.tokenizer = tokenizer
        self.weight = weight
        self.text = text
        self._parsed: dict[tuple[int, ...], tuple[int | None, str]] = {}
        self._classes: dict[str, int] | None = None
        self._warned = False

    def parse(self, ids: Sequence[int]) -> tuple[int | None, str]:
        """(prefix length or None, answer) of one row's text ids; remembered, as a cache repeats its texts."""
        key = tuple(ids)
        found = self._parsed.get(key)
        if found is None:
            if len(self._parsed) >= CACHE_ROWS:
                self._parsed.clear()
            n = prefix_length(key, tokenizer=self.tokenizer)
            answer = answer_from_text(self.tokenizer.decode_ids(key)) if n is not None else ""
            found = self._parsed[key] = (n, answer)
        return found

    def __call__(self, model: Any, inputs: StepInput) -> ObjectiveOutput:
        task = inputs.task
        if getattr(model, "answer_head", None) is None:
            # Nothing to train: an exact zero. The finetune stage refuses this before training (answer_head.py).
            if not self._warned:
                log.warning(NO_HEAD)
                self._warned = True
            return ObjectiveOutput(loss=torch.zeros((), device=inputs.batch.segments[0].tokens.device))
        if self.text not in task.target or not task.context:
            return ObjectiveOutput(loss=self._idle_loss(model))
        if self._classes is None:
            self._classes = class_index(model, self.tokenizer)
        text = inputs.batch.modality(self.text)
        rows = [self.parse(ids[:n]) for ids, n in zip(text.tokens.tolist(), text.lengths.tolist())]
        keep = [i for i, (n, _) in enumerate(rows) if n is not None]
        skipped = float(len(rows) - len(keep))
        if not keep:
            return ObjectiveOutput(loss=self._idle_loss(model), metrics={"skipped": skipped})
        device = text.tokens.device
        index = torch.tensor(keep, device=device)
        batch = inputs.batch.select(index)
        segments = batch_segments(task, batch)
        packed, bog = question_sequence(
            self.token_space,
            [Part(segment=segments[m]) for m in task.context],
            tokens=batch.modality(self.text).tokens,
            prefix_lengths=torch.tensor([rows[i][0] for i in keep], device=device),
            text=self.text,
        )
        logits = model.answer_logits(model(packed)[:, bog]).float()
        targets = self.targets([rows[i][1] for i in keep], classes=logits.shape[-1]).to(device)
        loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / len(keep)
        with torch.no_grad():
            accuracy = targets.gather(1, logits.argmax(dim=-1, keepdim=True)).mean()
            unknown = (targets.sum(dim=1) == 0).float().mean()
        return ObjectiveOutput(
            loss=loss, metrics={"accuracy": float(accuracy), "unknown_answer": float(unknown), "skipped": skipped}
        )

    def targets(self, answers: Sequence[str], *, classes: int) -> torch.Tensor:
        """[rows, classes] soft targets, each row's answer standing for all ten human answers."""
        table = torch.zeros(len(answers), classes)
        for row, answer in enumerate(answers):
            for cls, score in soft_targets([answer] * HUMANS, self._classes or {}).items():
                table[row, cls] = score
        return table

    def _idle_loss(self, model: Any) -> torch.Tensor:
        """Zero that still reaches the head, so data-parallel reduction sees it every step."""
        head = model.answer_head
        state = torch.zeros(head.dense.in_features, device=head.dense.weight.device)
        return 0.0 * model.answer_logits(state).sum()
