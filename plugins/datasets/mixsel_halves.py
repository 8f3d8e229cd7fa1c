"""MixSel's squeezed image halves, encoded once per training image beside the token cache (MAGVLT sec. 3.2).

MixSel (objectives/mixsel.py) mixes two images by resizing each to half its
width (then joining them left|right) or half its height (top/bottom). Encoding
pixels in the training step would need the image tokenizer there; instead the
cache stage squeezes every image of the split both ways and encodes each with
the image tokenizer's `encode_grid`. A 64x64 image with 8x8-pixel codes (an 8x8
grid) gives an 8x4 grid for its 64x32 half and a 4x8 grid for its 32x64 half;
the mixed grid is two images' half grids side by side or stacked. A grid with an
odd side has no halves of whole codes: `half_grids` says so in one line.

Per image modality m of split s, in the cache folder (so DONE.json hashes them):

- `<s>.<m>.mixsel_halves.npy`: codes [N, 2, H * W / 2], row N the cache's item N;
  [:, 0] the half-width grid (H x W/2, row by row), [:, 1] the half-height grid
  (H/2 x W).
- `<s>.<m>.mixsel_halves.json`: format, modality, both grid shapes, count, the
  tokenizer's content hash and the token cache's key; a reader refuses halves
  made for another cache.

`with_halves` wraps the split's dataset so each batch carries its rows' halves
in `TokenBatch.extras` under `halves_extra(m)`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mmgen.api import ArtefactError
from mmgen.objectives.mixsel import HalvesError, half_grids, halves_extra

from .lmdb_store import LmdbStore

log = logging.getLogger(__name__)

FORMAT = "mmgen.mixsel_halves/1"
SUFFIX = ".mixsel_halves"


def halves_paths(split_path: Path, modality: str) -> tuple[Path, Path]:
    """(codes .npy, description .json) beside the split's token cache `<s>.lmdb`."""
    split_path = Path(split_path)
    stem = split_path.name[: -len(".lmdb")] if split_path.name.endswith(".lmdb") else split_path.name
    base = split_path.with_name(f"{stem}.{modality}{SUFFIX}")
    return base.with_suffix(base.suffix + ".npy"), base.with_suffix(base.suffix + ".json")


def squeeze(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 [B, 3, H, W] resized to `size` (h, w) pixels: bilinear with antialiasing (torchvision's Resize)."""
    resized = F.interpolate(images.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8)


def encode_halves(tokenizer: Any, images: torch.Tensor) -> np.ndarray:
    """uint8 [B, 3, R, R] -> codes [B, 2, H * W / 2]: each image squeezed to half width, then to half height."""
    narrow, flat = half_grids(tokenizer.token_space.shape, modality=tokenizer.modality)
    rows, cols = images.shape[2:]
    out = []
    for grid, size in ((narrow, (rows, cols // 2)), (flat, (rows // 2, cols))):
        codes = tokenizer.encode_grid(squeeze(images, size))
        if tuple(codes.shape[1:]) != grid:
            raise HalvesError(
                f"MixSel pixel mixing: {tokenizer.modality!r} pixels {size[0]}x{size[1]} encode to a"
                f" {tuple(codes.shape[1:])} grid, not the {grid} half of the token grid"
            )
        out.append(codes.flatten(1).numpy())
    return np.stack(out, axis=1)


def can_halve(tokenizer: Any) -> bool:
    """A fixed-length 2-D image modality with an even grid whose tokenizer can encode other sizes."""
    space = tokenizer.token_space
    shape = tuple(space.shape)
    return (
        not space.variable_length
        and hasattr(tokenizer, "encode_grid")
        and len(shape) == 2
        and shape[0] % 2 == 0
        and shape[1] % 2 == 0
    )


def build_halves(
    source: Path | str,
    split_path: Path | str,
    *,
    tokenizers: Mapping[str, Any],
    batch_size: int = 64,
    progress: bool = True,
) -> list[Path]:
    """Write the halves of every halvable image modality of the token cache at `split_path` (from store `source`).

    Halves already made for this cache and tokenizer are kept. Each file
    appears atomically (written under a hidden name, then renamed).
    """
    from .ingest.pipeline import progress_bar
    from .token_cache import read_header

    header = read_header(Path(split_path))
    if header is None:
        raise ArtefactError(f"{split_path}: no token cache to make MixSel halves for")
    modalities = [m for m in header["modalities"] if m != header["caption_modality"] and can_halve(tokenizers[m])]
    skipped = [m for m in header["modalities"] if m != header["caption_modality"] and m not in modalities]
    if skipped:
        log.info("mixsel halves: %s skipped (no even 2-D grid or no encode_grid)", skipped)
    store = LmdbStore(source)
    written = []
    for modality in modalities:
        tokenizer = tokenizers[modality]
        codes_path, info_path = halves_paths(Path(split_path), modality)
        info = describe(tokenizer, header)
        if codes_path.is_file() and info_path.is_file() and json.loads(info_path.read_text()) == info:
            written += [codes_path, info_path]
            continue
        temporary = codes_path.with_name(f".{codes_path.name}.building-{os.getpid()}")
        half = tokenizer.token_space.length // 2
        dtype = np.dtype(header["dtypes"][modality])
        codes = np.lib.format.open_memmap(temporary, mode="w+", dtype=dtype, shape=(len(store), 2, half))
        with progress_bar(len(store), f"mixsel halves {codes_path.name}", progress) as bar:
            for start in range(0, len(store), batch_size):
                stop = min(start + batch_size, len(store))
                images = torch.stack([tokenizer.load_item(store.record(i).item(modality)) for i in range(start, stop)])
                codes[start:stop] = encode_halves(tokenizer, images).astype(dtype)
                bar.update(stop - start)
        codes.flush()
        del codes
        os.replace(temporary, codes_path)
        info_path.write_text(json.dumps(info, indent=2))
        written += [codes_path, info_path]
    return written


def describe(tokenizer: Any, header: Mapping[str, Any]) -> dict[str, Any]:
    narrow, flat = half_grids(tokenizer.token_space.shape, modality=tokenizer.modality)
    return {
        "format": FORMAT,
        "modality": tokenizer.modality,
        "grids": [list(narrow), list(flat)],
        "count": header["count"],
        "tokenizer": tokenizer.content_hash(),
        "cache_key": header["cache_key"],
    }


def read_halves_info(split_path: Path, modality: str, header: Mapping[str, Any]) -> Path | None:
    """The halves .npy of `modality` when it exists and was made for this cache; None when there are none."""
    codes_path, info_path = halves_paths(split_path, modality)
    if not info_path.is_file():
        return None
    info = json.loads(info_path.read_text())
    if info.get("format") != FORMAT or info.get("cache_key") != header["cache_key"]:
        raise ArtefactError(f"{info_path}: MixSel halves made for another token cache; rebuild the cache stage")
    if not codes_path.is_file():
        raise ArtefactError(f"{codes_path}: missing (its description {info_path.name} is there); rebuild the cache")
    return codes_path


OWN_FIELDS = frozenset({"dataset", "halves", "_maps", "_pid"})


class HalvesDataset:
    """A token cache dataset whose batches also carry their rows' MixSel halves (`TokenBatch.extras`).

    Everything else (length, epochs, keys, captions) is the wrapped dataset's.
    The .npy files are memory-mapped lazily, in whichever process collates.
    """

    def __init__(self, dataset: Any, halves: Mapping[str, Path]) -> None:
        self.dataset = dataset
        self.halves = dict(halves)
        self._maps: dict[str, np.ndarray] = {}
        self._pid = -1
        for modality, path in self.halves.items():
            count = np.load(path, mmap_mode="r", allow_pickle=False).shape[0]
            if count != len(dataset):
                raise ArtefactError(f"{path}: halves of {count} images for a token cache of {len(dataset)}")

    def __len__(self) -> int:
        return len(self.dataset)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": {}, "_pid": -1}  # a worker maps the files itself

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not yet set (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # A write such as `dataset.epoch = 3` must reach the wrapped dataset, which reads it;
        # only the wrapper's own fields stay here.
        if name in OWN_FIELDS:
            object.__setattr__(self, name, value)
        else:
            setattr(self.dataset, name, value)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index]

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        return self.dataset.__getitems__(indices)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def _codes(self, modality: str) -> np.ndarray:
        if self._pid != os.getpid():
            self._maps, self._pid = {}, os.getpid()
        if modality not in self._maps:
            self._maps[modality] = np.load(self.halves[modality], mmap_mode="r", allow_pickle=False)
        return self._maps[modality]

    def collate(self, items: Sequence[Any]) -> Any:
        batch = self.dataset.collate(items)
        rows = [item.index for item in items]
        extras = {
            halves_extra(m): torch.from_numpy(self._codes(m)[rows].astype(np.int64)) for m in self.halves
        }
        return type(batch)(segments=batch.segments, extras={**batch.extras, **extras})


def with_halves(dataset: Any, split_path: Path | str) -> Any:
    """`dataset` with its MixSel halves when the cache folder has any; else `dataset` itself."""
    header = dataset.header
    found = {}
    for modality in header["modalities"]:
        path = read_halves_info(Path(split_path), modality, header)
        if path is not None:
            found[modality] = path
    return HalvesDataset(dataset, found) if found else dataset
