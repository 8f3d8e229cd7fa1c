"""Test-suite setup: helper modules in this folder import by plain name.

pytest runs with --import-mode=importlib (so the repo's tokenizers/ folder never
shadows an installed package), which does not put this folder on sys.path.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
# Tests never write MLflow data into the repo: each test that tracks sets its own URI.
os.environ.setdefault("MMGEN_NO_PROGRESS", "1")

import torch  # noqa: E402

# Test models are tiny: one thread is faster than two and leaves a core free.
torch.set_num_threads(1)
