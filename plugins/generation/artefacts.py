"""Loading what generation needs from a trained run's stage folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import attrs

DONE_FILE = "DONE.json"  # written by the runner when a stage folder is finished


@attrs.frozen(kw_only=True)
class Loaded:
    model: Any
    tokenizers: Mapping[str, Any]
    reranker: Any = None


def load_for_generation(
    *, tokenizers_dir: Path, model_dir: Path, clip_dir: Path | None, registry: Any, device: str = "cpu"
) -> Loaded:
    """The trained model (eval mode, on `device`), its tokenizers, and a CLIP reranker when `clip_dir` is given."""
    from mmgen.plugins.models.saved import load_trained_model

    tokenizers = load_tokenizers(tokenizers_dir, registry)
    model = load_trained_model(Path(model_dir), registry, device=device)
    reranker = None
    if clip_dir is not None:
        from mmgen.plugins.clip.model import load_clip
        from mmgen.plugins.clip.reranker import ClipReranker

        reranker = ClipReranker(load_clip(Path(clip_dir), device=device))
    return Loaded(model=model, tokenizers=tokenizers, reranker=reranker)


def load_tokenizers(tokenizers_dir: Path, registry: Any) -> Mapping[str, Any]:
    """The tokenizers stage's tokenizers, by modality."""
    from mmgen.tokenizers.saved import load_saved_tokenizers

    return load_saved_tokenizers(Path(tokenizers_dir), registry)


def latest_artefact(workdir: Path, stage: str) -> Path:
    """The newest finished `<workdir>/artefacts/<stage>-<hash>` folder."""
    root = Path(workdir) / "artefacts"
    done = sorted(root.glob(f"{stage}-*/{DONE_FILE}"), key=lambda p: p.stat().st_mtime)
    if not done:
        raise FileNotFoundError(f"no finished {stage!r} stage under {root}")
    return done[-1].parent
