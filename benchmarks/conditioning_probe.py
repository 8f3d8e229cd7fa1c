"""Teacher-forced T2I probe: has the model started to read the caption?

Generation accuracy stays at zero long after a MAGVLT model has begun to use
its text, so the quality benchmark also reports what one forward pass shows,
on held-out pairs with every image token masked (the first sampling step):

- `probe/ce_rare`: cross-entropy at the positions whose true code is not the
  most frequent one (on Shapes: the object tokens, not the white canvas);
- `probe/ce_rare_shuffled`: the same with each image paired with another
  row's caption; `probe/gap` = shuffled - true, in nats per token, is how much
  the caption helps (0 = not read at all);
- `probe/rare_recall`, `probe/rare_precision`: positions where the model gives
  the most frequent code less than half its probability, against the positions
  whose true code is another one (on Shapes: does it put objects where the
  caption says?).
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F

from mmgen.batch import TokenBatch
from mmgen.layout import pack
from mmgen.objectives.task_layout import task_items
from mmgen.task import Task


def image_cross_entropy(model, batch: TokenBatch, *, text_modality: str, image_modality: str):
    """Logits [B, L, V] at every image position with the whole image masked, given the batch's text."""
    image = batch.modality(image_modality)
    task = Task(name="t2i", context=(text_modality,), target=(image_modality,))
    segments = {text_modality: batch.modality(text_modality), image_modality: image}
    everything = torch.ones_like(image.tokens, dtype=torch.bool)
    packed = pack(model.token_space, task_items(model.token_space, task, segments, masks={image_modality: everything}))
    span = packed.span(image_modality)
    return model.logits(model(packed)[:, span.start : span.stop], image_modality)


@torch.no_grad()
def conditioning_probe(model, batch: TokenBatch, *, text_modality: str = "text", image_modality: str = "image"):
    was_training = model.training
    model.eval()
    try:
        target = batch.modality(image_modality).tokens
        frequent = int(torch.mode(target.flatten()).values)
        rare = target != frequent
        logits = image_cross_entropy(model, batch, text_modality=text_modality, image_modality=image_modality)
        text = batch.modality(text_modality)
        shuffled_text = attrs.evolve(text, tokens=text.tokens.roll(1, 0), lengths=text.lengths.roll(1, 0))
        shuffled = TokenBatch(segments=[shuffled_text if s.modality == text_modality else s for s in batch.segments])
        logits_shuffled = image_cross_entropy(
            model, shuffled, text_modality=text_modality, image_modality=image_modality
        )
    finally:
        model.train(was_training)
    ce = float(F.cross_entropy(logits[rare], target[rare]))
    ce_shuffled = float(F.cross_entropy(logits_shuffled[rare], target[rare]))
    predicted_rare = logits.softmax(-1)[..., frequent] < 0.5
    hits = int((predicted_rare & rare).sum())
    return {
        "probe/ce_rare": ce,
        "probe/ce_rare_shuffled": ce_shuffled,
        "probe/gap": ce_shuffled - ce,
        "probe/rare_recall": hits / max(1, int(rare.sum())),
        "probe/rare_precision": hits / max(1, int(predicted_rare.sum())),
    }
