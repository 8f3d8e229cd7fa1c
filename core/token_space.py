"""Token spaces: one per modality, and the joint space a model sees.

Core never names a modality: "image", "text" or "audio" are just names that
tokenizer plugins give their spaces.
"""

from __future__ import annotations

import math

import attrs


@attrs.frozen(kw_only=True)
class TokenSpace:
    """The vocabulary and layout of one modality's tokens.

    `shape` is the token grid (16, 16) for an image or (max_length,) for text.
    A `variable_length` modality pads the tail of its sequence with `pad_id`
    (MAGVLT's text uses end-of-text as the pad, so `pad_id == eos_id`).
    """

    name: str
    vocab_size: int
    shape: tuple[int, ...] = attrs.field(converter=tuple)
    variable_length: bool = False
    pad_id: int | None = None
    eos_id: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.vocab_size < 1:
            raise ValueError(f"token space {self.name!r}: vocab_size must be >= 1, got {self.vocab_size}")
        if not self.shape or any(s < 1 for s in self.shape):
            raise ValueError(f"token space {self.name!r}: shape must be non-empty and positive, got {self.shape}")
        if self.variable_length and self.pad_id is None:
            raise ValueError(f"token space {self.name!r}: a variable-length space needs a pad_id")
        for field_name in ("pad_id", "eos_id"):
            value = getattr(self, field_name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ValueError(f"token space {self.name!r}: {field_name}={value} outside [0, {self.vocab_size})")

    @property
    def length(self) -> int:
        """Number of token slots (the maximum length for a variable-length space)."""
        return math.prod(self.shape)


# Specials every layout uses, independent of modalities: begin-context and
# begin-generation (MAGVLT sec. 3.1). Per-modality specials (BEGIN_x, MASK_x) are
# added for each space; extra markers (MixSel's BOG_LEFT, ...) are passed in.
BOC = "BOC"
BOG = "BOG"


def begin_token(modality: str) -> str:
    return f"BEGIN_{modality}"


def mask_token(modality: str) -> str:
    return f"MASK_{modality}"


@attrs.frozen(kw_only=True)
class JointTokenSpace:
    """Any number of modality spaces laid side by side in one id range.

    Joint ids: each modality's content ids at its offset (in the given order),
    then the special tokens: BOC, BOG, per modality BEGIN_<name> and MASK_<name>,
    then `extra_specials` in order.
    """

    spaces: tuple[TokenSpace, ...] = attrs.field(converter=tuple)
    extra_specials: tuple[str, ...] = attrs.field(default=(), converter=tuple)

    def __attrs_post_init__(self) -> None:
        names = [s.name for s in self.spaces]
        if not names:
            raise ValueError("a JointTokenSpace needs at least one modality")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate modality names in {names}")
        specials = self.special_names
        if len(set(specials)) != len(specials):
            raise ValueError(f"duplicate special tokens in {specials}")

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.spaces)

    def space(self, modality: str) -> TokenSpace:
        for s in self.spaces:
            if s.name == modality:
                return s
        raise KeyError(f"no modality {modality!r} in joint space (has {list(self.modalities)})")

    def modality_index(self, modality: str) -> int:
        return self.modalities.index(self.space(modality).name)

    def offset(self, modality: str) -> int:
        """First joint id of `modality`'s content tokens."""
        start = 0
        for s in self.spaces:
            if s.name == modality:
                return start
            start += s.vocab_size
        raise KeyError(f"no modality {modality!r} in joint space (has {list(self.modalities)})")

    def content_range(self, modality: str) -> tuple[int, int]:
        start = self.offset(modality)
        return start, start + self.space(modality).vocab_size

    @property
    def content_size(self) -> int:
        return sum(s.vocab_size for s in self.spaces)

    @property
    def special_names(self) -> tuple[str, ...]:
        per_modality = tuple(t for m in self.modalities for t in (begin_token(m), mask_token(m)))
        return (BOC, BOG, *per_modality, *self.extra_specials)

    def special(self, name: str) -> int:
        """Joint id of a special token by name (`BOC`, `MASK_image`, `BOG_LEFT`, ...)."""
        try:
            return self.content_size + self.special_names.index(name)
        except ValueError:
            raise KeyError(f"no special token {name!r} (has {list(self.special_names)})") from None

    def begin_id(self, modality: str) -> int:
        return self.special(begin_token(modality))

    def mask_id(self, modality: str) -> int:
        return self.special(mask_token(modality))

    @property
    def vocab_size(self) -> int:
        return self.content_size + len(self.special_names)
