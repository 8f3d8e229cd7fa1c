"""A trained model carried over to refitted tokenizers (plugins/models/token_transfer.py): rows by meaning."""

from __future__ import annotations

import torch

from mmgen.batch import Segment
from mmgen.layout import Part, pack
from mmgen.plugins.models.magvlt import MagvltModel
from mmgen.plugins.models.presets import Architecture
from mmgen.plugins.models.token_transfer import transfer_state
from mmgen.token_space import JointTokenSpace, TokenSpace
from mmgen.tokenizers.sentencepiece_bpe import SentencePieceBPE

from objective_helpers import MARKERS, one_thread  # noqa: F401  (fixture)

CAPTIONS = [
    "a large red circle in the top left",
    "a small blue square in the center",
    "a green cross below a yellow triangle",
    "a purple square to the left of an orange circle",
] * 4
QUESTIONS = [
    "question: what colour is the circle? answer: red",
    "question: how many squares are there? answer: 2",
    "question: is there a cross? answer: yes",
] * 4
IMAGE = TokenSpace(name="image", vocab_size=8, shape=(4, 4))


class ImageTokenizer:
    """The image side stays the same tokenizer: only its content hash is read."""

    def content_hash(self) -> str:
        return "image-codes"


def bpe(texts: list[str], *, vocab_size: int, max_length: int) -> SentencePieceBPE:
    tokenizer = SentencePieceBPE(vocab_size=vocab_size, max_length=max_length)
    tokenizer.train(texts)
    return tokenizer


def model_for(text: SentencePieceBPE, *, seed: int = 0) -> MagvltModel:
    torch.manual_seed(seed)
    space = JointTokenSpace(spaces=(IMAGE, text.token_space), extra_specials=MARKERS)
    model = MagvltModel(token_space=space, architecture=Architecture(width=32, depth=2, heads=2))
    for parameter in model.parameters():  # larger than init's N(0, 0.02), so a wrong row shows
        torch.nn.init.normal_(parameter, std=0.5)
    return model.eval()


def carried(old_model: MagvltModel, old: SentencePieceBPE, new: SentencePieceBPE) -> MagvltModel:
    new_model = model_for(new, seed=1)
    tokenizers = {"image": ImageTokenizer()}
    new_model.load_state_dict(
        transfer_state(
            old_model, new_model, old_tokenizers={**tokenizers, "text": old}, new_tokenizers={**tokenizers, "text": new}
        )
    )
    return new_model.eval()


def i2t_hidden(model: MagvltModel, text: SentencePieceBPE, captions: list[str]) -> tuple[torch.Tensor, object]:
    """Hidden states of `[BOC] image [BOG] text` with the caption's second token masked."""
    generator = torch.Generator().manual_seed(0)
    image = Segment.full("image", torch.randint(0, 8, (len(captions), 16), generator=generator))
    caption = text.encode(captions)
    mask = torch.zeros_like(caption.tokens, dtype=torch.bool)
    mask[:, 1] = True
    packed = pack(model.token_space, ["BOC", Part(segment=image), "BOG", Part(segment=caption, mask=mask)])
    with torch.no_grad():
        return model(packed), packed


def test_a_longer_text_computes_exactly_what_the_model_did():
    old = bpe(CAPTIONS, vocab_size=64, max_length=12)
    longer = SentencePieceBPE(vocab_size=64, max_length=16, model_proto=old._proto)
    assert longer.content_hash() != old.content_hash() and longer.pieces() == old.pieces()
    old_model = model_for(old)
    new_model = carried(old_model, old, longer)

    captions = ["a red circle", "a small blue square", "a cross"]  # shorter than 12 tokens: padding follows
    assert all(n < 12 for n in old.encode(captions).lengths.tolist())
    old_hidden, old_packed = i2t_hidden(old_model, old, captions)
    new_hidden, new_packed = i2t_hidden(new_model, longer, captions)
    # Image span, text BEGIN and the 12 old text slots: the extra 4 are padding, which nobody attends to.
    shared = old_packed.span("text").stop
    torch.testing.assert_close(new_hidden[:, :shared], old_hidden, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        new_model.logits(new_hidden[:, :shared], "text"), old_model.logits(old_hidden, "text"), rtol=1e-5, atol=1e-5
    )
    begin = old_packed.span("text").begin
    torch.testing.assert_close(
        new_model.length_logits(new_hidden[:, begin])[:, :12], old_model.length_logits(old_hidden[:, begin])
    )


def test_longer_tables_repeat_their_last_trained_row():
    old = bpe(CAPTIONS, vocab_size=64, max_length=12)
    longer = SentencePieceBPE(vocab_size=64, max_length=16, model_proto=old._proto)
    old_model = model_for(old)
    new_model = carried(old_model, old, longer)
    old_rows, new_rows = old_model.positions.weight, new_model.positions.weight
    # Tables: specials (16 + 12 + 4 = 32 rows, now 16 + 16 + 4 = 36), image (16), text (12, now 16).
    assert new_model.table_sizes.tolist() == [36, 16, 16]
    assert torch.equal(new_rows[:32], old_rows[:32])
    assert torch.equal(new_rows[32:36], old_rows[31:32].expand(4, -1))
    assert torch.equal(new_rows[36:52], old_rows[32:48])
    assert torch.equal(new_rows[52:64], old_rows[48:60])
    assert torch.equal(new_rows[64:68], old_rows[59:60].expand(4, -1))
    old_head, new_head = old_model.length_heads["text"].weight, new_model.length_heads["text"].weight
    assert torch.equal(new_head[:12], old_head) and torch.equal(new_head[12:], old_head[11:12].expand(4, -1))


def test_refitted_pieces_take_the_rows_of_what_they_mean():
    old = bpe(CAPTIONS, vocab_size=64, max_length=12)
    new = bpe(CAPTIONS + QUESTIONS, vocab_size=88, max_length=24)
    old_model = model_for(old)
    new_model = carried(old_model, old, new)
    old_space, new_space = old_model.token_space, new_model.token_space
    old_rows, new_rows = old_model.embedding.weight, new_model.embedding.weight
    old_text, new_text = old_space.offset("text"), new_space.offset("text")
    old_pieces, new_pieces = old.pieces(), new.pieces()

    assert torch.equal(new_rows[:8], old_rows[:8])  # image codes: the same tokenizer
    for name in new_space.special_names:  # BOC, BOG, BEGIN_x, MASK_x, the MixSel markers
        assert torch.equal(new_rows[new_space.special(name)], old_rows[old_space.special(name)])
    shared = [piece for piece in new_pieces if piece in old_pieces]
    assert len(shared) > 20
    for piece in shared:
        assert torch.equal(new_rows[new_text + new_pieces.index(piece)], old_rows[old_text + old_pieces.index(piece)])

    question = new_pieces.index("\u2581question")
    assert "\u2581question" not in old_pieces
    spelling = [i for i in old.encode_ids("question") if i != 1]
    assert len(spelling) > 1 and old.decode_ids(spelling) == "question"
    expected = old_rows[[old_text + i for i in spelling]].mean(dim=0)
    torch.testing.assert_close(new_rows[new_text + question], expected)
    bias = old_model.output_bias[[old_text + i for i in spelling]].mean()
    torch.testing.assert_close(new_model.output_bias[new_text + question], bias)

    # `?` never appears in a caption: the old tokenizer cannot spell it, so it starts from every old text row.
    mark = new_pieces.index("?")
    torch.testing.assert_close(
        new_rows[new_text + mark], old_rows[old_text : old_text + old.token_space.vocab_size].mean(dim=0)
    )
