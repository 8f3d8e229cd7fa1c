"""The finetune stage's `answer_head` option: grow the pretrained model by a VQA answer head (docs/vqa.md).

`answer_head: {top: N}` builds the answer vocabulary from the train split's VQA records (the N most frequent
normalised human answers in their meta `answers`: metrics/vqa_vocabulary.py), grows the model by a head
over it (plugins/models/answer_head.py: every pretrained tensor unchanged), spells each answer with the
run's text tokenizer into the head's `answer_tokens`, and writes the answers, in class order, to
`answers.json` in the model's folder for people to read.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import attrs

from mmgen.api import Spec, UserError, atomic_write_text, positive, upstream

log = logging.getLogger(__name__)

ANSWERS_FILE = "answers.json"
TRAIN_SPLIT = "train"
CLASSIFY_OBJECTIVE = "vqa_classify"


@attrs.frozen(kw_only=True)
class AnswerHeadOptions:
    """`answer_head:` a head over the `top` most frequent answers of the train split's VQA records."""

    top: int = attrs.field(validator=positive)
    text: str = "text"  # the modality the answers are spelt in
    data_stage: str = upstream("data")  # the records whose meta holds `answers`


def train_answers(records: Any, *, top: int) -> list[str]:
    """The answer vocabulary of the VQA records among `records` (each one's meta `answers`)."""
    from mmgen.plugins.metrics.vqa_vocabulary import answer_vocabulary

    answer_lists = [record.meta["answers"] for record in records if record.meta.get("answers")]
    if not answer_lists:
        raise UserError(
            f"finetune: answer_head: the {TRAIN_SPLIT!r} split has no VQA records (none has meta 'answers')"
        )
    answers = answer_vocabulary(answer_lists, top=top)
    log.info("finetune: answer head over %d answers of %d train questions", len(answers), len(answer_lists))
    return answers


def grow_answer_head(
    spec: Spec, model: Any, config: Any, *, inputs: Any, tokenizers: Any, out_dir: Path, registry: Any
) -> tuple[Spec, Any]:
    """(spec, model) with the answer head `config.answer_head` asks for (a finetune Config); unchanged for null.

    `inputs`: the stage's inputs (ctx.inputs), for the data stage's records.
    """
    from mmgen.plugins.models.answer_head import encode_answers, with_answer_head

    options: AnswerHeadOptions | None = config.answer_head
    if options is None:
        if any(o.use == CLASSIFY_OBJECTIVE for o in config.objectives) and getattr(model, "answer_head", None) is None:
            raise UserError(
                f"finetune: objective {CLASSIFY_OBJECTIVE!r} trains an answer head, and the pretrained model has none:"
                " give the stage answer_head: {top: N}"
            )
        return spec, model
    if config.transfer_from is not None and getattr(spec.config, "answer_classes", 0):
        raise UserError("finetune: answer_head: cannot carry an answer head over to new tokenizers (transfer_from)")
    if inputs is None:
        raise ValueError("finetune: answer_head reads the data stage: pass the stage's inputs")
    if options.text not in tokenizers:
        raise UserError(f"finetune: answer_head: no {options.text!r} tokenizer (there are {list(tokenizers)})")
    answers = train_answers(inputs.load(options.data_stage).records(TRAIN_SPLIT), top=options.top)
    tokenizer = tokenizers[options.text]
    tokens = encode_answers(answers, tokenizer=tokenizer, length=tokenizer.token_space.length)
    spec, model = with_answer_head(spec, model, tokens, registry=registry, seed=config.trainer.run_seed)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(out_dir) / ANSWERS_FILE, json.dumps(answers, indent=2))
    return spec, model
