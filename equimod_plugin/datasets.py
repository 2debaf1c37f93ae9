"""Moved to :mod:`equimod_plugin.eval.datasets` (the research toolkit); this alias will go away."""

import warnings

from equimod_plugin.eval.datasets import *  # noqa: F403
from equimod_plugin.eval.datasets import __all__  # noqa: F401

warnings.warn(
    "equimod_plugin.datasets moved to equimod_plugin.eval.datasets: import it from there",
    FutureWarning,
    stacklevel=2,
)
