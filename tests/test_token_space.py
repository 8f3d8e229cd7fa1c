import pytest

from mmgen.token_space import JointTokenSpace, TokenSpace

IMAGE = TokenSpace(name="image", vocab_size=16, shape=(2, 2))
TEXT = TokenSpace(name="text", vocab_size=10, shape=(5,), variable_length=True, pad_id=9, eos_id=9)


def test_lengths():
    assert IMAGE.length == 4
    assert TEXT.length == 5


def test_joint_offsets_and_specials_follow_declared_order():
    joint = JointTokenSpace(spaces=(IMAGE, TEXT), extra_specials=("BOG_LEFT",))
    assert joint.offset("image") == 0
    assert joint.offset("text") == 16
    assert joint.content_range("text") == (16, 26)
    assert joint.special_names == ("BOC", "BOG", "BEGIN_image", "MASK_image", "BEGIN_text", "MASK_text", "BOG_LEFT")
    assert joint.special("BOC") == 26
    assert joint.begin_id("text") == 30
    assert joint.mask_id("image") == 29
    assert joint.special("BOG_LEFT") == 32
    assert joint.vocab_size == 33


def test_a_third_modality_needs_no_change():
    audio = TokenSpace(name="audio", vocab_size=7, shape=(3,))
    joint = JointTokenSpace(spaces=(IMAGE, TEXT, audio))
    assert joint.offset("audio") == 26
    # content 16 + 10 + 7 = 33 ids; then BOC, BOG, BEGIN/MASK for image, text, audio
    assert joint.mask_id("audio") == 40
    assert joint.modality_index("audio") == 2


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="duplicate modality"):
        JointTokenSpace(spaces=(IMAGE, IMAGE))
    with pytest.raises(ValueError, match="needs a pad_id"):
        TokenSpace(name="t", vocab_size=3, shape=(4,), variable_length=True)
    with pytest.raises(ValueError, match="pad_id=5 outside"):
        TokenSpace(name="t", vocab_size=3, shape=(4,), variable_length=True, pad_id=5)
    with pytest.raises(KeyError, match="no special token 'BOX'"):
        JointTokenSpace(spaces=(IMAGE,)).special("BOX")
    with pytest.raises(KeyError, match="no modality 'audio'"):
        JointTokenSpace(spaces=(IMAGE,)).offset("audio")
