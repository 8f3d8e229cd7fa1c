"""The `audio_vq` tokenizer plugin: mono WAV clips <-> a row of VQ codes over log-mel frames.

Encoding: log-mel frames (torch.stft) -> a 1-D conv encoder -> the nearest of
`codebook_size` unit vectors, one token per `downsampling` frames. Decoding:
codes -> log-mel -> STFT magnitudes (the filters' least-squares inverse) ->
a waveform by Griffin-Lim, so no vocoder is trained. Trained by mmgen's shared
Trainer in the `tokenizers` stage (fit).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Sequence

import attrs
import numpy as np
import torch

from mmgen.api import (
    MissingSplitError,
    Segment,
    TokenSpace,
    atomic_write_bytes,
    atomic_write_text,
    positive,
    structure_attrs,
    to_data,
)

from .mel import griffin_lim, log_mel, mel_to_magnitude
from .spectrogram import spectrogram_picture
from .training import ClipItems, TrainConfig, train_vq
from .vq import PRESETS, Architecture, AudioVQ
from .wav import read_wav, wav_bytes

log = logging.getLogger(__name__)

CONFIG_FILE = "audio_vq.json"
WEIGHTS_FILE = "weights.pt"
FORMAT = "mmgen_audio.audio_vq/1"


class AudioTokenizer:
    name: ClassVar[str] = "audio_vq"

    @attrs.frozen(kw_only=True)
    class Config:
        """`preset` names an architecture (vq.py); `architecture` replaces it when given."""

        modality: str = "audio"
        preset: Literal["tiny", "sounds"] | None = None  # no default: sizes are an experiment's choice
        architecture: Architecture | None = None
        griffin_lim_iterations: int = attrs.field(default=32, validator=positive)
        train: TrainConfig = TrainConfig()

        def __attrs_post_init__(self) -> None:
            if self.preset is None and self.architecture is None:
                raise ValueError(f"audio_vq: give a preset ({', '.join(PRESETS)}) or an architecture")

        def resolved_architecture(self) -> Architecture:
            return self.architecture if self.architecture is not None else PRESETS[self.preset]

    def __init__(
        self,
        *,
        model: AudioVQ,
        modality: str = "audio",
        griffin_lim_iterations: int = 32,
        train: TrainConfig = TrainConfig(),
    ) -> None:
        self.model = model.eval().requires_grad_(False)
        self.modality = modality
        self.griffin_lim_iterations = griffin_lim_iterations
        self.train_config = train
        self.train_metrics: dict[str, float] = {}

    @classmethod
    def from_config(cls, config: Config, **_deps: Any) -> AudioTokenizer:
        """Untrained: random weights until `fit`."""
        return cls(
            model=AudioVQ(config.resolved_architecture()),
            modality=config.modality,
            griffin_lim_iterations=config.griffin_lim_iterations,
            train=config.train,
        )

    @property
    def architecture(self) -> Architecture:
        return self.model.architecture

    # ---- training ----------------------------------------------------------------

    def fit(
        self, records: Callable[[str], Sequence[Any]], *, out_dir: Path, tracker: Any = None, device: str = "cpu", seed: int = 0
    ) -> None:
        """Train from scratch on the clips of `records("train")`, evaluating on `records("val")` if it exists."""
        torch.manual_seed(seed)  # the initial weights
        model = AudioVQ(self.architecture)
        load = self.record_item
        val = None
        try:
            val_records = records("val")
        except MissingSplitError:  # no val split: no held-out metrics
            val_records = None
        if val_records is not None and len(val_records) > 0:
            val = torch.stack([load(val_records[i]) for i in range(min(len(val_records), self.train_config.eval_clips))])
        trained, self.train_metrics = train_vq(
            model,
            train=self.train_config,
            seed=seed,
            clips=ClipItems(records("train"), load),
            val_clips=val,
            out_dir=Path(out_dir),
            tracker=tracker,
            device=device,
            prefix=f"{self.modality}/",
        )
        self.model = trained.cpu().eval().requires_grad_(False)
        log.info("audio_vq: %s", ", ".join(f"{k}={v:.4g}" for k, v in self.train_metrics.items()))

    def record_item(self, record: Any) -> torch.Tensor:
        """The clip of this tokenizer's modality in a Record (its main item, or one of its other items)."""
        return self.load_item(record.item(self.modality), what=f"record {record.key!r}")

    # ---- the Tokenizer protocol -------------------------------------------------

    @property
    def token_space(self) -> TokenSpace:
        a = self.architecture
        return TokenSpace(name=self.modality, vocab_size=a.codebook_size, shape=(a.tokens,))

    def load_item(self, data: bytes, *, what: str = "audio item") -> torch.Tensor:
        """Mono WAV bytes at the tokenizer's rate -> float32 [clip_samples] (cut, or padded with silence)."""
        wave = read_wav(data, sample_rate=self.architecture.sample_rate, what=what)
        clip = np.zeros(self.architecture.clip_samples, np.float32)
        clip[: min(len(wave), len(clip))] = wave[: len(clip)]
        return torch.from_numpy(clip)

    def _as_batch(self, items: torch.Tensor | Sequence[Any]) -> torch.Tensor:
        batch = items if isinstance(items, torch.Tensor) else torch.stack([torch.as_tensor(np.asarray(i)) for i in items])
        samples = self.architecture.clip_samples
        if batch.ndim != 2 or batch.shape[1] != samples or not batch.is_floating_point():
            raise ValueError(f"audio_vq expects float waveforms [B, {samples}], got {batch.dtype} {tuple(batch.shape)}")
        return batch.float()

    @torch.no_grad()
    def encode(self, items: torch.Tensor | Sequence[Any]) -> Segment:
        """float waveforms [B, clip_samples] (or a list of [clip_samples]) -> codes [B, tokens]."""
        return Segment.full(self.modality, self.model.encode(self._as_batch(items)))

    @torch.no_grad()
    def decode_waves(self, tokens: torch.Tensor) -> torch.Tensor:
        """codes [B, tokens] -> float32 waveforms [B, clip_samples] in [-1, 1]."""
        a = self.architecture
        if tokens.ndim != 2 or tokens.shape[1] != a.tokens:
            raise ValueError(f"audio_vq expects tokens [B, {a.tokens}], got {tuple(tokens.shape)}")
        if tokens.numel() and not 0 <= int(tokens.min()) <= int(tokens.max()) < a.codebook_size:
            raise ValueError(f"audio_vq tokens must lie in [0, {a.codebook_size})")
        logmel = self.model.decode_codes(tokens.long())
        logmel = torch.cat([logmel, logmel[..., -1:]], dim=-1)  # the centred STFT's last frame, dropped when encoding
        magnitude = mel_to_magnitude(logmel, self.model.filters)
        wave = griffin_lim(magnitude, n_fft=a.n_fft, hop=a.hop, length=a.clip_samples, iterations=self.griffin_lim_iterations)
        return wave.clamp(-1.0, 1.0)

    def decode(self, segment: Segment) -> list[torch.Tensor]:
        if segment.modality != self.modality:
            raise ValueError(f"audio_vq tokenizer for {self.modality!r} got a {segment.modality!r} segment")
        return list(self.decode_waves(segment.tokens))

    def present(self, item: torch.Tensor) -> np.ndarray:
        """A clip as a Generation holds it: float32 numpy [clip_samples]."""
        return np.asarray(item.detach().cpu(), dtype=np.float32)

    def picture(self, item: Any) -> np.ndarray:
        """How grids show a clip: its log-mel spectrogram, uint8 [H, W, 3]."""
        a = self.architecture
        wave = torch.as_tensor(np.asarray(item, dtype=np.float32))[None]
        logmel = log_mel(wave, self.model.filters, n_fft=a.n_fft, hop=a.hop)[0, :, : a.frames]
        return spectrogram_picture(logmel.numpy())

    def files(self, item: Any) -> dict[str, bytes]:
        """A clip as files people open: the WAV and its spectrogram PNG."""
        from PIL import Image

        png = io.BytesIO()
        Image.fromarray(self.picture(item)).save(png, format="PNG")
        return {"wav": wav_bytes(np.asarray(item, dtype=np.float32), self.architecture.sample_rate), "png": png.getvalue()}

    # ---- files -----------------------------------------------------------------------

    def _config_data(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "modality": self.modality,
            "architecture": to_data(self.architecture),
            "griffin_lim_iterations": self.griffin_lim_iterations,
        }

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}, buffer)
        atomic_write_bytes(directory / WEIGHTS_FILE, buffer.getvalue())
        atomic_write_text(directory / CONFIG_FILE, json.dumps(self._config_data(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, directory: Path) -> AudioTokenizer:
        directory = Path(directory)
        try:
            data = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{directory / CONFIG_FILE}: not found; is {directory} a saved audio_vq tokenizer?") from None
        if data.get("format") != FORMAT:
            raise ValueError(f"{directory}: not a saved audio_vq tokenizer (format {data.get('format')!r}, expected {FORMAT!r})")
        model = AudioVQ(structure_attrs(Architecture, data["architecture"], path="architecture"))
        model.load_state_dict(torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True))
        return cls(model=model, modality=data["modality"], griffin_lim_iterations=data["griffin_lim_iterations"])

    def content_hash(self) -> str:
        """sha256 over the config and every weight's name, dtype, shape and bytes."""
        hasher = hashlib.sha256(json.dumps(self._config_data(), sort_keys=True).encode())
        state = self.model.state_dict()
        for name in sorted(state):
            tensor = state[name].detach().cpu().contiguous()
            hasher.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            hasher.update(tensor.view(torch.uint8).numpy().tobytes())
        return hasher.hexdigest()
