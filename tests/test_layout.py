import torch

from mmgen.batch import Segment
from mmgen.layout import Part, pack
from mmgen.token_space import JointTokenSpace, TokenSpace

IMAGE = TokenSpace(name="image", vocab_size=16, shape=(2, 2))
TEXT = TokenSpace(name="text", vocab_size=10, shape=(3,), variable_length=True, pad_id=9, eos_id=9)
JOINT = JointTokenSpace(spaces=(IMAGE, TEXT))
# ids: image 0-15, text 16-25, BOC 26, BOG 27, BEGIN_image 28, MASK_image 29, BEGIN_text 30, MASK_text 31


def test_t2i_layout_tokens_positions_and_padding():
    text = Segment(modality="text", tokens=torch.tensor([[1, 9, 9], [2, 3, 9]]), lengths=torch.tensor([2, 3]))
    image = Segment.full("image", torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]]))
    mask = torch.tensor([[True, False, False, True], [False, False, False, False]])
    packed = pack(JOINT, ["BOC", Part(segment=text), "BOG", Part(segment=image, mask=mask)])
    assert packed.tokens.tolist() == [
        [26, 30, 17, 25, 25, 27, 28, 29, 1, 2, 29],
        [26, 30, 18, 19, 25, 27, 28, 4, 5, 6, 7],
    ]
    assert packed.table.tolist() == [0, 0, 2, 2, 2, 0, 0, 1, 1, 1, 1]
    assert packed.position.tolist() == [0, 1, 0, 1, 2, 2, 3, 0, 1, 2, 3]
    assert packed.key_padding[0].tolist() == [False] * 4 + [True] + [False] * 6
    assert not packed.key_padding[1].any()
    assert [(s.modality, s.start, s.length, s.begin) for s in packed.spans] == [("text", 2, 3, 1), ("image", 7, 4, 6)]
    # Padding is never attended to; a padding query attends only to itself.
    assert not packed.attn_mask[0, :, 4][torch.arange(11) != 4].any()
    assert packed.attn_mask[0, 4].tolist() == [True] * 4 + [True] + [True] * 6
    assert packed.attn_mask[1].all()


def test_length_query_sees_only_what_precedes_it():
    image = Segment.full("image", torch.tensor([[0, 1, 2, 3]]))
    text = Segment(modality="text", tokens=torch.tensor([[5, 6, 9]]), lengths=torch.tensor([3]))
    packed = pack(JOINT, ["BOC", Part(segment=image), "BOG", Part(segment=text, predict_length=True)])
    begin = packed.span("text").begin
    assert begin == 7
    assert packed.attn_mask[0, begin].tolist() == [True] * 8 + [False] * 3
    assert packed.attn_mask[0, begin + 1].all()


def test_no_mask_needed_without_padding():
    image = Segment.full("image", torch.tensor([[0, 1, 2, 3]]))
    assert pack(JOINT, ["BOG", Part(segment=image)]).attn_mask is None
