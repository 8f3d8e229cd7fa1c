"""The `vqgan` tokenizer plugin: images <-> a grid of VQ-GAN codes.

MAGVLT uses a frozen VQ-GAN (taming-transformers `vqgan_imagenet_f16_16384`;
preset `f16_16384`, loadable with `taming_checkpoint`) turning 256x256 pixels into
16x16 codes (another `resolution` gives another grid). A token is the code's index in the codebook, row by row.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Sequence

import attrs
import numpy as np
import torch
from PIL import Image

from mmgen.api import FieldError, MissingSplitError, Segment, TokenSpace, existing_file, structure_attrs, to_data

from ..storage import content_hash, read_json, read_tensors, write_json, write_tensors
from .architecture import ArchitectureConfig
from .autoencoder import VQAutoencoder, pixels_to_unit, unit_to_pixels
from .losses import LossConfig
from .presets import PRESETS
from .training import ImageItems, PrefixedTracker, TrainConfig, train_autoencoder

log = logging.getLogger(__name__)

CONFIG_FILE = "vqgan.json"
WEIGHTS_FILE = "weights.pt"
FORMAT = "mmgen.vqgan/1"
# Training-only state that is not part of a saved tokenizer.
TRAINING_BUFFERS = ("quantizer.steps_unused",)


class VQGANTokenizer:
    name: ClassVar[str] = "vqgan"

    @attrs.frozen(kw_only=True)
    class Config:
        """`preset` names an architecture (presets.py); `architecture` replaces it when given.

        `resolution` sets the pixel side (images are centre-cropped and resized to
        it) without spelling out a whole architecture: the network is fully
        convolutional, so the layers and weights stay the same and only the token
        grid changes, to resolution / downsampling per side (f16: 256 -> 16x16). It
        must be a multiple of the downsampling factor. Unset: the preset's.

        With `taming_checkpoint` (a taming-transformers VQ-GAN .ckpt) the weights
        come from that file and nothing is trained; its architecture is read from
        the checkpoint, at `resolution` (or, unset, the preset's), so a preset is
        not needed. The file must exist when the recipe loads (a relative path is
        read from the working directory); nothing is downloaded.
        """

        modality: str = "image"
        # No default: sizes are an experiment's choice, named in its recipe.
        preset: Literal["tiny", "shapes", "f16_16384"] | None = None
        architecture: ArchitectureConfig | None = None
        resolution: int | None = None
        taming_checkpoint: str | None = attrs.field(default=None, validator=existing_file)
        loss: LossConfig = LossConfig()
        train: TrainConfig = TrainConfig()

        def __attrs_post_init__(self) -> None:
            taming_only = self.taming_checkpoint is not None and self.resolution is not None
            if self.preset is None and self.architecture is None and not taming_only:
                presets = ", ".join(PRESETS)
                raise ValueError(
                    f"vqgan: give a preset ({presets}), an architecture, or a taming_checkpoint with its resolution"
                )
            if self.resolution is not None:
                self._check_resolution(self.resolution)

        def _check_resolution(self, resolution: int) -> None:
            """Positive, and a multiple of the downsampling factor (of the preset / architecture when one is given)."""
            if resolution <= 0:
                raise FieldError("resolution", f"must be > 0, got {resolution}")
            base = self._base_architecture()
            if base is None or resolution % base.downsampling == 0:
                return  # a taming checkpoint alone: its factor is checked when the file is read
            factor = base.downsampling
            what = "the architecture" if self.architecture is not None else f"preset {self.preset}"
            below = max(resolution // factor, 1) * factor
            raise FieldError(
                "resolution",
                f"{resolution} is not a multiple of {what}'s downsampling factor {factor}"
                f" (the token grid side is resolution / {factor}); e.g. {below} or {below + factor}",
            )

        def _base_architecture(self) -> ArchitectureConfig | None:
            if self.architecture is not None:
                return self.architecture
            return PRESETS[self.preset] if self.preset is not None else None

        def resolved_architecture(self) -> ArchitectureConfig:
            """The architecture to build (untrained): the preset's or the given one, at `resolution` when set."""
            base = self._base_architecture()
            if base is None:
                raise ValueError("vqgan: without a preset or an architecture only a taming_checkpoint can be loaded")
            return base if self.resolution is None else base.with_resolution(self.resolution)

        def taming_resolution(self) -> int:
            """The pixel side a taming checkpoint is loaded at."""
            return self.resolution if self.resolution is not None else self.resolved_architecture().resolution

    def __init__(
        self,
        *,
        autoencoder: VQAutoencoder,
        modality: str = "image",
        batch_size: int = 64,
        loss: LossConfig = LossConfig(),
        train: TrainConfig = TrainConfig(),
        pretrained: bool = False,
    ) -> None:
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.merged_twins = self.autoencoder.quantizer.merge_twins()
        self.modality = modality
        self.batch_size = batch_size
        self.loss = loss
        self.train_config = train
        self.pretrained = pretrained
        self.train_metrics: dict[str, float] = {}

    # ---- construction ----------------------------------------------------------

    @classmethod
    def from_config(cls, config: Config, **_deps: Any) -> VQGANTokenizer:
        """Untrained (random weights), or the taming checkpoint's weights when one is named."""
        options = dict(modality=config.modality, loss=config.loss, train=config.train)
        if config.taming_checkpoint is not None:
            from .taming_checkpoint import load_taming_checkpoint

            autoencoder = load_taming_checkpoint(config.taming_checkpoint, resolution=config.taming_resolution())
            return cls(autoencoder=autoencoder, pretrained=True, **options)
        return cls(autoencoder=VQAutoencoder(config.resolved_architecture()), **options)

    def fit(
        self,
        records: Callable[[str], Sequence[Any]],
        *,
        out_dir: Path,
        tracker: Any = None,
        device: str = "cpu",
        seed: int = 0,
        on_eval: Callable[[VQAutoencoder, int, dict[str, float]], None] | None = None,
    ) -> None:
        """Train from scratch on the images of `records("train")`, evaluating on `records("val")` if it exists.

        `records(split)` gives a map-style sequence of Records whose `data` holds
        PNG / JPEG bytes. A pretrained (taming) tokenizer is left as it is.
        `on_eval(autoencoder, step, metrics)` runs after each evaluation (e.g. a
        dataset's own oracle), outside the measured training time.
        """
        if self.pretrained:
            return
        torch.manual_seed(seed)  # the initial weights
        autoencoder = VQAutoencoder(self.architecture)
        val_images = None
        try:
            val = records("val")
        except MissingSplitError:  # no val split: no held-out metrics
            val = None
        if val is not None and len(val) > 0:
            val_images = torch.stack([self.load_item(val[i].data) for i in range(min(len(val), self.train_config.eval_images))])
        trained, self.train_metrics = train_autoencoder(
            autoencoder,
            loss=self.loss,
            train=self.train_config,
            seed=seed,
            train_images=ImageItems(records("train"), self.load_item),
            val_images=val_images,
            out_dir=Path(out_dir),
            tracker=PrefixedTracker(tracker, f"{self.modality}/") if tracker is not None else None,
            device=device,
            on_eval=on_eval,
        )
        self.autoencoder = trained.cpu().eval().requires_grad_(False)
        self.merged_twins = self.autoencoder.quantizer.merge_twins()
        self.train_metrics["merged_twins"] = float(self.merged_twins)
        log.info("vqgan: %d of %d codes are twins of a lower id, merged into it", self.merged_twins, self.architecture.codebook_size)
        if tracker is not None:
            tracker.log_metrics({f"{self.modality}/merged_twins": float(self.merged_twins)})

    # ---- the Tokenizer protocol ------------------------------------------------

    @property
    def architecture(self) -> ArchitectureConfig:
        return self.autoencoder.architecture

    @property
    def token_space(self) -> TokenSpace:
        grid = self.architecture.grid
        return TokenSpace(name=self.modality, vocab_size=self.architecture.codebook_size, shape=(grid, grid))

    @property
    def device(self) -> torch.device:
        return next(self.autoencoder.parameters()).device

    def to(self, device: str | torch.device) -> VQGANTokenizer:
        self.autoencoder.to(device)
        return self

    def load_item(self, data: bytes) -> torch.Tensor:
        """PNG / JPEG bytes -> uint8 [3, R, R] at the tokenizer's resolution R (centre crop, then resize)."""
        image = Image.open(io.BytesIO(data)).convert("RGB")
        size = self.architecture.resolution
        if image.size != (size, size):
            side = min(image.size)
            left, top = (image.width - side) // 2, (image.height - side) // 2
            image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).contiguous()

    def _as_batch(self, items: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        batch = items if isinstance(items, torch.Tensor) else torch.stack(list(items))
        size = self.architecture.resolution
        if batch.dtype != torch.uint8 or batch.ndim != 4 or tuple(batch.shape[1:]) != (self.architecture.in_channels, size, size):
            raise ValueError(
                f"vqgan expects uint8 images [B, {self.architecture.in_channels}, {size}, {size}],"
                f" got {batch.dtype} {tuple(batch.shape)}"
            )
        return batch

    @torch.no_grad()
    def encode(self, items: torch.Tensor | Sequence[torch.Tensor]) -> Segment:
        """uint8 images [B, 3, R, R] (or a list of [3, R, R]) -> codes [B, grid * grid], row by row."""
        batch = self._as_batch(items)
        codes = [self._encode_block(batch[i : i + self.batch_size]) for i in range(0, len(batch), self.batch_size)]
        tokens = torch.cat(codes) if codes else torch.zeros(0, self.token_space.length, dtype=torch.long)
        return Segment.full(self.modality, tokens)

    def _encode_block(self, images: torch.Tensor) -> torch.Tensor:
        """Codes of up to `batch_size` images, always encoded as a full block of `batch_size` (padded with
        blank images). Why: which of two nearly equal entries a latent gets follows the float path of the
        convolutions, which changes with the batch size. Twins are merged (quantizer.merge_twins); in full
        blocks an image gets the same codes alone as in the token cache's batches even for the entries
        that are close but not twins (before twins were merged, 84% of one image's codes on the Shapes
        VQ-GAN of commit 831e02e differed otherwise)."""
        rows = len(images)
        if rows < self.batch_size:
            images = torch.cat([images, images.new_zeros(self.batch_size - rows, *images.shape[1:])])
        return self.autoencoder.encode(pixels_to_unit(images.to(self.device))).codes.flatten(1)[:rows].cpu()

    @torch.no_grad()
    def encode_grid(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images [B, 3, H, W] of any size the downsampling f divides -> codes [B, H / f, W / f].

        For images that are not the square the token space describes: MixSel's
        squeezed halves (plugins/datasets/mixsel_halves.py).
        """
        factor = self.architecture.downsampling
        channels = self.architecture.in_channels
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != channels:
            raise ValueError(f"vqgan expects uint8 images [B, {channels}, H, W], got {images.dtype} {tuple(images.shape)}")
        height, width = images.shape[2:]
        if height % factor or width % factor:
            raise ValueError(f"vqgan encodes {factor}x{factor} pixels per code; {height}x{width} pixels do not divide")
        codes = [
            self.autoencoder.encode(pixels_to_unit(images[i : i + self.batch_size].to(self.device))).codes.cpu()
            for i in range(0, len(images), self.batch_size)
        ]
        return torch.cat(codes) if codes else torch.zeros(0, height // factor, width // factor, dtype=torch.long)

    def code_vectors(self) -> torch.Tensor:
        """The codebook as the quantizer looks codes up: [codebook_size, codebook_dim] (models may start from it)."""
        return self.autoencoder.quantizer.entries().detach().cpu().clone()

    @torch.no_grad()
    def decode_pixels(self, tokens: torch.Tensor) -> torch.Tensor:
        """Codes [B, grid * grid] -> uint8 images [B, 3, R, R]."""
        grid = self.architecture.grid
        if tokens.ndim != 2 or tokens.shape[1] != grid * grid:
            raise ValueError(f"vqgan expects tokens [B, {grid * grid}], got {tuple(tokens.shape)}")
        if tokens.numel() and not 0 <= int(tokens.min()) <= int(tokens.max()) < self.architecture.codebook_size:
            raise ValueError(f"vqgan tokens must lie in [0, {self.architecture.codebook_size})")
        images = [
            unit_to_pixels(self.autoencoder.decode_codes(tokens[i : i + self.batch_size].view(-1, grid, grid).to(self.device))).cpu()
            for i in range(0, len(tokens), self.batch_size)
        ]
        size = self.architecture.resolution
        return torch.cat(images) if images else torch.zeros(0, 3, size, size, dtype=torch.uint8)

    def decode(self, segment: Segment) -> list[torch.Tensor]:
        if segment.modality != self.modality:
            raise ValueError(f"vqgan tokenizer for {self.modality!r} got a {segment.modality!r} segment")
        return list(self.decode_pixels(segment.tokens))

    def present(self, item: torch.Tensor) -> np.ndarray:
        """An image as a Generation holds it: uint8 [3, H, W] tensor -> numpy uint8 [H, W, 3]."""
        return item.detach().to("cpu", torch.uint8).permute(1, 2, 0).contiguous().numpy()

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> their uint8 reconstructions through the codes."""
        return self.decode_pixels(self.encode(images).tokens)

    # ---- files -----------------------------------------------------------------

    def _config_data(self) -> dict[str, Any]:
        return {"format": FORMAT, "modality": self.modality, "architecture": to_data(self.architecture)}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.autoencoder.state_dict().items() if k not in TRAINING_BUFFERS}

    def save(self, directory: Path | str) -> None:
        directory = Path(directory)
        write_tensors(directory / WEIGHTS_FILE, self._tensors())
        write_json(directory / CONFIG_FILE, self._config_data())

    @classmethod
    def load(cls, directory: Path | str) -> VQGANTokenizer:
        directory = Path(directory)
        data = read_json(directory / CONFIG_FILE)
        if data.get("format") != FORMAT:
            raise ValueError(f"{directory}: not a saved vqgan tokenizer (format {data.get('format')!r}, expected {FORMAT!r})")
        autoencoder = VQAutoencoder(structure_attrs(ArchitectureConfig, data["architecture"], path="architecture"))
        missing, unexpected = autoencoder.load_state_dict(read_tensors(directory / WEIGHTS_FILE), strict=False)
        if unexpected or set(missing) - set(TRAINING_BUFFERS):
            raise ValueError(f"{directory}: weights do not fit the architecture (missing {missing}, unexpected {unexpected})")
        return cls(autoencoder=autoencoder, modality=data["modality"])

    def content_hash(self) -> str:
        return content_hash(self._config_data(), self._tensors())
