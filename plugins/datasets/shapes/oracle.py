"""The Shapes oracles in one import: image reader, caption parser, T2I / I2T judges."""

from .accuracy import Judgement, i2t_correct, t2i_correct
from .caption_parser import CaptionParseError, StatedObject, parse_caption
from .image_oracle import read_image
from .scene import ObjectSpec

__all__ = [
    "CaptionParseError",
    "Judgement",
    "ObjectSpec",
    "StatedObject",
    "i2t_correct",
    "parse_caption",
    "read_image",
    "t2i_correct",
]
