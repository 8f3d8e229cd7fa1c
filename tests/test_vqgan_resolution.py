"""`resolution`: the vqgan tokenizer's pixel side as one option, for a preset or a taming checkpoint.

The network is fully convolutional: another resolution keeps every layer and
weight and changes only the token grid, resolution / downsampling per side.
"""

from __future__ import annotations

import attrs
import pytest
import torch
from click.testing import CliRunner
from recipe_helpers import TINY
from test_taming_checkpoint import random_taming_state, ref_encode

from mmgen.cli import main
from mmgen.tokenizers.vqgan.architecture import ArchitectureConfig
from mmgen.tokenizers.vqgan.autoencoder import VQAutoencoder
from mmgen.tokenizers.vqgan.presets import PRESETS
from mmgen.tokenizers.vqgan.taming_checkpoint import TamingCheckpointError
from mmgen.tokenizers.vqgan.tokenizer import VQGANTokenizer


@pytest.fixture
def taming_file(tmp_path):
    """A tiny taming VQ-GAN (downsampling 2, attention at its second level)."""
    state = random_taming_state()
    torch.save({"state_dict": state, "epoch": 1}, tmp_path / "last.ckpt")
    return tmp_path / "last.ckpt", state


def test_resolution_changes_only_the_token_grid(taming_file):
    path, state = taming_file
    config = VQGANTokenizer.Config(taming_checkpoint=str(path), resolution=32)  # no preset needed
    tokenizer = VQGANTokenizer.from_config(config)
    assert tokenizer.token_space.shape == (16, 16) and tokenizer.architecture.attn_resolutions == (16,)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = ref_encode(state, images.float() / 127.5 - 1)
    assert torch.equal(tokenizer.encode(images).tokens, expected.flatten(1))


def test_resolution_on_a_preset_keeps_the_layers():
    f16 = VQGANTokenizer.Config(preset="f16_16384", resolution=384).resolved_architecture()
    assert (f16.resolution, f16.grid, f16.attn_resolutions) == (384, 24, (24,))
    assert attrs_except(f16, "resolution", "attn_resolutions") == attrs_except(
        PRESETS["f16_16384"], "resolution", "attn_resolutions"
    )
    tiny = VQGANTokenizer.Config(preset="tiny", resolution=32).resolved_architecture()
    with torch.device("meta"):
        resized, original = VQAutoencoder(tiny).state_dict(), VQAutoencoder(PRESETS["tiny"]).state_dict()
    assert {k: v.shape for k, v in resized.items()} == {k: v.shape for k, v in original.items()}
    assert VQGANTokenizer.Config(preset="tiny").resolved_architecture() == PRESETS["tiny"]


def attrs_except(architecture: ArchitectureConfig, *names: str) -> dict:
    return {k: v for k, v in attrs.asdict(architecture).items() if k not in names}


def test_a_resolution_the_network_cannot_take():
    with pytest.raises(
        ValueError,
        match=r"^resolution: 200 is not a multiple of preset f16_16384's downsampling factor 16"
        r" \(the token grid side is resolution / 16\); e.g. 192 or 208$",
    ):
        VQGANTokenizer.Config(preset="f16_16384", resolution=200)
    with pytest.raises(ValueError, match="^resolution: must be > 0, got 0$"):
        VQGANTokenizer.Config(preset="tiny", resolution=0)


def test_a_taming_checkpoint_at_a_resolution_it_cannot_take(taming_file):
    path, _ = taming_file
    with pytest.raises(TamingCheckpointError) as caught:
        VQGANTokenizer.from_config(VQGANTokenizer.Config(taming_checkpoint=str(path), resolution=33))
    assert str(caught.value) == (
        f"{path}: resolution 33 is not a positive multiple of this checkpoint's downsampling factor 2"
        " (the token grid side is resolution / 2)"
    )


def test_a_taming_checkpoint_alone_needs_its_resolution(taming_file):
    path, _ = taming_file
    with pytest.raises(ValueError, match="or a taming_checkpoint with its resolution$"):
        VQGANTokenizer.Config(taming_checkpoint=str(path))


def test_a_recipe_with_such_a_resolution_is_one_line_naming_the_option(tmp_path, monkeypatch):
    monkeypatch.delenv("MMGEN_PLUGINS", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipe.yaml").write_text(TINY.replace("preset: tiny, train:", "preset: tiny, resolution: 30, train:"))
    result = CliRunner().invoke(main, ["run", "recipe.yaml", "--dry-run"])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: recipe.yaml: stages.tokenizers.tokenizers[0].resolution: 30 is not a multiple of preset tiny's"
        " downsampling factor 4 (the token grid side is resolution / 4); e.g. 28 or 32\n"
    )
