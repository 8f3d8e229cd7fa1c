"""mmgen: unified multimodal generation (MAGVLT and friends) as plugins.

Importing mmgen is light (no torch, no mlflow): plugins load when a command runs.
"""

from .hookspecs import hookimpl
from .version import __version__

__all__ = ["__version__", "hookimpl"]
