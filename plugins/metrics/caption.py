"""The `caption` metric: COCO caption scores of generated texts against the records' reference captions.

BLEU-1..4, METEOR, ROUGE-L and CIDEr-D as the COCO caption evaluation computes them (pycocoevalcap, the
package of its official code), on captions lower-cased and tokenised by its Stanford PTB tokenizer.
The tokenizer and METEOR run on Java; pycocoevalcap comes with `pip install 'mmgen[caption]'`.

SPICE is not offered: pycocoevalcap's SPICE downloads Stanford CoreNLP on first use (a zip of several
hundred MB, over plain http) and starts Java with an 8 GB heap, which an offline, laptop-sized run cannot
promise; a number it cannot always give is worse than none.

Results per task: `<task>/bleu_1` ... `bleu_4`, `meteor`, `rouge_l`, `cider_d` (the corpus scores
pycocoevalcap reports) and `<task>/n`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Mapping, Sequence

import attrs

from mmgen.api import Generation, UserError, existing_file, upstream

from .references import records_by_key

SCORE_NAMES = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider_d")


def check_caption_tools() -> None:
    """pycocoevalcap installed and Java on the PATH, or one line saying what to install."""
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError:
        raise UserError("caption: the caption metric needs pycocoevalcap: pip install 'mmgen[caption]'") from None
    if shutil.which("java") is None:
        raise UserError(
            "caption: the caption metric needs Java (pycocoevalcap's PTB tokenizer and METEOR run on it): "
            "install a JRE, e.g. apt-get install default-jre-headless"
        )


def coco_scores(references: Mapping[str, Sequence[str]], candidates: Mapping[str, str]) -> dict[str, float]:
    """Corpus BLEU-1..4, METEOR, ROUGE-L and CIDEr-D of `candidates` (id -> caption) against `references`
    (id -> captions), after the PTB tokenizer, as pycocoevalcap's COCOEvalCap computes them."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    check_caption_tools()
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": c} for c in references[i]] for i in candidates})
    res = tokenizer.tokenize({i: [{"caption": candidates[i]}] for i in candidates})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    meteor = Meteor()
    try:
        meteor_score, _ = meteor.compute_score(gts, res)
    finally:
        meteor.meteor_p.stdin.close()  # the METEOR Java process ends with its input
        meteor.meteor_p.wait()
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)  # pycocoevalcap's Cider is CIDEr-D (sigma 6, clipped counts)
    return dict(zip(SCORE_NAMES, [*map(float, bleu), float(meteor_score), float(rouge), float(cider)]))


class CaptionScores:
    name: ClassVar[str] = "caption"

    @attrs.frozen(kw_only=True)
    class Config:
        references_file: str | None = attrs.field(default=None, validator=existing_file)  # JSON: key -> captions
        data_stage: str | None = upstream("data")  # else the records' captions, by generation key
        split: str = "test"  # the data stage's split the prompts came from (the generate stage's `split`)
        text_modality: str = "text"

    def __init__(
        self, *, references: Callable[[Sequence[Generation]], Mapping[str, Sequence[str]]], text_modality: str = "text"
    ) -> None:
        """`references` gives the reference captions of each generation's key."""
        self.references, self.text_modality = references, text_modality

    @classmethod
    def from_config(cls, config: Config, *, inputs: Any = None, **_deps: Any) -> CaptionScores:
        def references(generations: Sequence[Generation]) -> Mapping[str, Sequence[str]]:
            if config.references_file is not None:
                return read_references(Path(config.references_file))
            keys = [g.key for g in generations]
            records = records_by_key(
                inputs,
                stage=config.data_stage,
                split=config.split,
                keys=keys,
                metric="caption",
                instead="references_file",
            )
            return {key: record.captions for key, record in records.items()}

        return cls(references=references, text_modality=config.text_modality)

    def compute(self, generations: Iterable[Generation]) -> dict[str, float]:
        made = [g for g in generations if isinstance(g.outputs.get(self.text_modality), str)]
        if not made:
            return {}
        check_caption_tools()
        references = self.references(made)
        missing = [g.key for g in made if not references.get(g.key)]
        if missing:
            raise UserError(f"caption: {len(missing)} generation(s) have no reference captions (first: {missing[0]!r})")
        results: dict[str, float] = {}
        for task in sorted({g.task for g in made}):
            rows = [g for g in made if g.task == task]
            ids = [str(i) for i in range(len(rows))]  # by row: candidates of one key are scored each
            scores = coco_scores(
                {i: list(references[g.key]) for i, g in zip(ids, rows)},
                {i: g.outputs[self.text_modality] for i, g in zip(ids, rows)},
            )
            results.update({f"{task}/{name}": value for name, value in scores.items()})
            results[f"{task}/n"] = float(len(rows))
        return results


def read_references(path: Path) -> dict[str, list[str]]:
    """A JSON object: generation key -> a list of reference captions."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"caption: cannot read references from {path}: {exc}") from None
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and all(isinstance(c, str) for c in v) for v in data.values()
    ):
        raise UserError(f"caption: {path} must hold a JSON object: generation key -> list of captions")
    return data
