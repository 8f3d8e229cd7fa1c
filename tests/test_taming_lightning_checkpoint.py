"""The released taming VQ-GAN file: a Lightning 1.x checkpoint, read with weights_only=True, running nothing.

The fixture is saved the way Lightning 1.0.8 (taming's pinned version) saved
`last.ckpt`: counters, Adam optimizer states, an empty scheduler list and a
`callbacks` dict keyed by the ModelCheckpoint CLASS. Fake Lightning modules sit
in sys.modules only while saving, so the pickle names
`pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint` as the real file
does, and Lightning itself is not needed to read it.
"""

from __future__ import annotations

import pickle
import re
import shlex
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from test_taming_checkpoint import random_taming_state, ref_decode, ref_encode

from mmgen.api import structure_attrs
from mmgen.cli import main
from mmgen.errors import UserError
from mmgen.tokenizers.vqgan.lightning_checkpoint import CheckpointError, read_lightning_checkpoint
from mmgen.tokenizers.vqgan.perceptual import LPIPS
from mmgen.tokenizers.vqgan.taming_checkpoint import load_taming_checkpoint
from mmgen.tokenizers.vqgan.tokenizer import VQGANTokenizer

NOTHING_RUN = "(read with torch.load(weights_only=True); nothing in it was run)"


def fake_class(module: str, name: str) -> type:
    """A class that pickles as `module.name`, registered in sys.modules (under monkeypatch) for the save only."""
    return type(name, (), {"__module__": module, "__qualname__": name})


def install(patch, *classes: type) -> None:
    for cls in classes:
        parts = cls.__module__.split(".")
        for depth in range(1, len(parts) + 1):
            name = ".".join(parts[:depth])
            if name not in sys.modules:
                patch.setitem(sys.modules, name, types.ModuleType(name))
        patch.setattr(sys.modules[cls.__module__], cls.__qualname__, cls, raising=False)


def adam_states(state: dict[str, torch.Tensor]) -> list[dict]:
    """Real Adam state dicts after one step: taming's two optimizers (autoencoder, discriminator)."""
    states = []
    for prefix in ("encoder.", "loss."):
        params = [torch.nn.Parameter(v.clone()) for k, v in state.items() if k.startswith(prefix)][:3]
        optimizer = torch.optim.Adam(params, lr=4.5e-6, betas=(0.5, 0.9))
        sum(p.sum() for p in params).backward()
        optimizer.step()
        states.append(optimizer.state_dict())
    return states


def save_lightning_1x(
    path: Path, state: dict[str, torch.Tensor], monkeypatch, *, classes=(), pickle_module=pickle, **extra
):
    """`state` inside the top-level layout Lightning 1.0.8 writes, with its class-keyed callback states.

    `classes` (fake globals `extra` refers to) are importable, like ModelCheckpoint, while saving only.
    """
    model_checkpoint = fake_class("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint")
    with monkeypatch.context() as patch:
        install(patch, model_checkpoint, *classes)
        checkpoint = {
            "epoch": 7,
            "global_step": 123456,
            "pytorch-lightning_version": "1.0.8",
            "callbacks": {
                model_checkpoint: {
                    "monitor": "val/rec_loss",
                    "best_model_score": torch.tensor(0.3125),
                    "best_model_path": "/logs/2020-11-09T13-31-51_imagenet_vqgan/checkpoints/epoch=000005.ckpt",
                    "current_score": torch.tensor(0.3311),
                    "dirpath": "/logs/2020-11-09T13-31-51_imagenet_vqgan/checkpoints",
                }
            },
            "optimizer_states": adam_states(state),
            "lr_schedulers": [],
            "state_dict": OrderedDict(state),  # what Module.state_dict() returns
            **extra,
        }
        torch.save(checkpoint, path, pickle_module=pickle_module)
    assert "pytorch_lightning" not in sys.modules  # importable while saving only


@pytest.fixture
def lightning_file(tmp_path, monkeypatch):
    state = random_taming_state()
    path = tmp_path / "last.ckpt"
    save_lightning_1x(path, state, monkeypatch)
    return path, state


def test_the_file_really_carries_what_weights_only_refuses(lightning_file):
    path, _ = lightning_file
    with pytest.raises(pickle.UnpicklingError, match="pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"):
        torch.load(path, weights_only=True)


def safe_globals_now() -> set[str]:
    # torch keeps them in a set: the list it returns may come back in another order after a restore.
    return {repr(entry) for entry in torch.serialization.get_safe_globals()}


def test_a_lightning_1x_checkpoint_loads_and_converts(lightning_file):
    path, state = lightning_file
    before = safe_globals_now()
    autoencoder = load_taming_checkpoint(path, resolution=16)
    assert safe_globals_now() == before  # allowed for that load only
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        codes = autoencoder.encode(x).codes
        assert torch.equal(codes, ref_encode(state, x))
        torch.testing.assert_close(autoencoder.decode_codes(codes), ref_decode(state, codes), rtol=1e-4, atol=1e-5)


def test_the_extras_are_read_and_ignored(lightning_file):
    path, _ = lightning_file
    checkpoint = read_lightning_checkpoint(path)
    assert sorted(checkpoint) == sorted(
        [
            "epoch",
            "global_step",
            "pytorch-lightning_version",
            "callbacks",
            "optimizer_states",
            "lr_schedulers",
            "state_dict",
        ]
    )
    [(key, callback_state)] = checkpoint["callbacks"].items()
    assert f"{key.__module__}.{key.__qualname__}" == "mmgen.tokenizers.vqgan.lightning_checkpoint.ModelCheckpointKey"
    assert callback_state["best_model_score"].item() == 0.3125
    assert [sorted(s["state"][0]) for s in checkpoint["optimizer_states"]] == [["exp_avg", "exp_avg_sq", "step"]] * 2


def test_numpy_scalars_as_old_and_new_numpy_name_them(tmp_path, monkeypatch):
    state = random_taming_state()
    early_stopping = fake_class("pytorch_lightning.callbacks.early_stopping", "EarlyStopping")
    extra = {"callbacks_extra": {early_stopping: {"wait_count": np.int64(2), "best_score": np.float64(0.25)}}}
    save_lightning_1x(tmp_path / "new.ckpt", state, monkeypatch, classes=[early_stopping], **extra)
    save_lightning_1x(
        tmp_path / "old.ckpt", state, monkeypatch, classes=[early_stopping], pickle_module=OldNumpyNames, **extra
    )
    raw = (tmp_path / "old.ckpt").read_bytes()
    assert b"numpy.core.multiarray\nscalar" in raw and b"numpy._core" not in raw
    assert b"numpy._core.multiarray\nscalar" in (tmp_path / "new.ckpt").read_bytes()
    for name in ("new.ckpt", "old.ckpt"):
        values = next(iter(read_lightning_checkpoint(tmp_path / name)["callbacks_extra"].values()))
        assert values == {"wait_count": 2, "best_score": 0.25} and isinstance(values["best_score"], np.float64)
        load_taming_checkpoint(tmp_path / name, resolution=16)


NUMPY_SCALAR = np.float64(0).__reduce__()[0]  # numpy's scalar constructor, under whatever module this numpy has


class OldNumpyNames:
    """A pickle module for torch.save that names numpy's scalar constructor as numpy 1.x (taming's 1.19) does."""

    class Pickler(pickle._Pickler):
        def save_global(self, obj, name=None):
            if obj is NUMPY_SCALAR:
                self.write(pickle.GLOBAL + b"numpy.core.multiarray\nscalar\n")
                self.memoize(obj)
                return
            super().save_global(obj, name)


def test_an_unknown_global_is_refused_in_one_line(tmp_path, monkeypatch):
    state = random_taming_state()
    setup = fake_class("main", "SetupCallback")  # taming's own callback, in its main.py
    save_lightning_1x(tmp_path / "last.ckpt", state, monkeypatch, classes=[setup], hparams={"callback": setup})
    with pytest.raises(CheckpointError) as caught:
        load_taming_checkpoint(tmp_path / "last.ckpt", resolution=16)
    assert str(caught.value) == (
        f"{tmp_path / 'last.ckpt'}: refused: it names the Python global `main.SetupCallback`, which is not a tensor"
        f" nor a PyTorch Lightning 1.x checkpoint entry {NOTHING_RUN}"
    )
    assert isinstance(caught.value, UserError)


class RunsCode:
    """Unpickling this would run `exec`: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def test_no_code_in_the_file_runs(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    save_lightning_1x(tmp_path / "last.ckpt", random_taming_state(), monkeypatch, hyper_parameters=RunsCode(marker))
    with pytest.raises(CheckpointError) as caught:
        load_taming_checkpoint(tmp_path / "last.ckpt", resolution=16)
    assert str(caught.value) == (
        f"{tmp_path / 'last.ckpt'}: refused: it names the Python global `exec`, which is not a tensor"
        f" nor a PyTorch Lightning 1.x checkpoint entry {NOTHING_RUN}"
    )
    assert not marker.exists()
    # The LPIPS reader takes the same path through the same reader.
    with pytest.raises(CheckpointError, match="`exec`"):
        LPIPS.from_file(tmp_path / "last.ckpt")
    assert not marker.exists()


def test_a_file_that_is_no_checkpoint(tmp_path):
    (tmp_path / "last.ckpt").write_text("<html>Not Found</html>")  # what a failed download leaves
    with pytest.raises(CheckpointError) as caught:
        load_taming_checkpoint(tmp_path / "last.ckpt")
    prefix = f"{tmp_path / 'last.ckpt'}: cannot be read as a PyTorch checkpoint: "
    assert re.fullmatch(re.escape(prefix) + r"[^\n]+ " + re.escape(NOTHING_RUN), str(caught.value))


# ---- docs/taming.md's command ---------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent


def documented_command() -> list[str]:
    """The one command of docs/taming.md, as argv after `mmgen`."""
    section = (REPO / "docs" / "taming.md").read_text()
    [line] = [line for line in section.splitlines() if line.startswith(".venv/bin/mmgen run ")]
    return shlex.split(line)[1:]


def test_the_documented_command_loads_a_downloaded_last_ckpt(tmp_path, monkeypatch):
    monkeypatch.delenv("MMGEN_PLUGINS", raising=False)
    monkeypatch.chdir(tmp_path)
    args = documented_command()
    assert args[:2] == ["run", "recipes/quickstart.yaml"]
    (tmp_path / "vqgan_imagenet_f16_16384").mkdir()
    save_lightning_1x(tmp_path / "vqgan_imagenet_f16_16384" / "last.ckpt", random_taming_state(), monkeypatch)
    result = CliRunner().invoke(main, [args[0], str(REPO / args[1]), *args[2:], "--dry-run"])
    assert result.exit_code == 0, result.output
    [vqgan, bpe] = yaml.safe_load(result.stdout)["stages"]["tokenizers"]["tokenizers"]
    assert (vqgan["use"], vqgan["resolution"], bpe["use"]) == ("vqgan", 256, "sentencepiece_bpe")
    config = structure_attrs(VQGANTokenizer.Config, {k: v for k, v in vqgan.items() if k != "use"})
    tokenizer = VQGANTokenizer.from_config(config)  # the tiny stand-in: downsampling 2, so 128 x 128 codes
    assert tokenizer.pretrained and tokenizer.token_space.shape == (128, 128)
