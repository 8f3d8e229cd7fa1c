"""Read a PyTorch Lightning 1.x checkpoint file with `torch.load(weights_only=True)`, running nothing in it.

taming-transformers saved its released VQ-GANs (e.g. `vqgan_imagenet_f16_16384`
`last.ckpt`) with Lightning 1.0.8 (its environment.yaml). Besides `state_dict`
such a file holds `epoch`, `global_step`, `pytorch-lightning_version`,
`optimizer_states` (Adam state dicts), `lr_schedulers` and `callbacks`: a dict
keyed by the callback's CLASS (`type(callback)`, e.g.
`pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint`) whose value holds
`monitor`, `best_model_score` (a tensor), `best_model_path`, `current_score`,
`dirpath`. taming's VQModel saves no hyperparameters, so there is no `hparams`.

`weights_only=True` refuses the class key. Here each Lightning callback class
name resolves to an inert stand-in class (never Lightning's own, even where
Lightning is installed), allowed only for the duration of the load; numpy
scalars (a logged metric may be one) are allowed too. Everything else the pickle
names is refused, with one line naming the file and the global.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmgen.api import UserError

try:  # numpy >= 2; numpy 1.x pickles name it `numpy.core.multiarray.scalar`
    from numpy._core.multiarray import scalar as numpy_scalar
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import scalar as numpy_scalar


class CheckpointError(UserError, ValueError):
    """A checkpoint file that cannot be read safely, or is not what the reader expects."""


class ModelCheckpointKey:
    """Stands for `pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint`, a key of a 1.x `callbacks` dict."""


class EarlyStoppingKey:
    """Stands for `pytorch_lightning.callbacks.early_stopping.EarlyStopping`, the other 1.x callback with a state."""


# A numpy scalar unpickles as scalar(dtype(...), bytes); the dtype's state is then set, which
# the unpickler allows only for listed classes: those of the numeric dtypes.
NUMERIC_DTYPE_CLASSES = tuple(
    type(np.dtype(kind))
    for kind in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)
    + (np.float16, np.float32, np.float64)
)

# (object the name resolves to, the name a pickle uses). Lightning 1.0-1.4 keyed callback states
# by class; from 1.5 by a string, which needs nothing here.
ALLOWED_GLOBALS: tuple[tuple[Any, str], ...] = (
    (ModelCheckpointKey, "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),
    (EarlyStoppingKey, "pytorch_lightning.callbacks.early_stopping.EarlyStopping"),
    (numpy_scalar, "numpy.core.multiarray.scalar"),
    (numpy_scalar, "numpy._core.multiarray.scalar"),
    (np.dtype, "numpy.dtype"),
    *((cls, f"{cls.__module__}.{cls.__qualname__}") for cls in NUMERIC_DTYPE_CLASSES),
)
NOTHING_RUN = "(read with torch.load(weights_only=True); nothing in it was run)"
REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+)")
UNPICKLER_PROBLEM = re.compile(r"WeightsUnpickler error:\s*([^\n]+)")


def read_lightning_checkpoint(path: Path | str) -> Any:
    """The unpickled file (a dict for a Lightning checkpoint); CheckpointError, one line, when it cannot be read."""
    try:
        with torch.serialization.safe_globals(list(ALLOWED_GLOBALS)):
            return torch.load(Path(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: {_refusal(str(exc))}") from None
    except Exception as exc:  # noqa: BLE001 - a missing, truncated or foreign file fails in many ways
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint: {first_line}") from None


def _refusal(message: str) -> str:
    """One line out of torch's several-line weights_only refusal."""
    found = REFUSED_GLOBAL.search(message)
    if found:
        return (
            f"refused: it names the Python global `{found.group(1)}`, which is not a tensor"
            f" nor a PyTorch Lightning 1.x checkpoint entry {NOTHING_RUN}"
        )
    problem = UNPICKLER_PROBLEM.search(message)
    detail = problem.group(1).strip() if problem else message.strip().splitlines()[0]
    return f"cannot be read as a PyTorch checkpoint: {detail} {NOTHING_RUN}"
