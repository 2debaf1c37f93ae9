"""Moved to :mod:`equimod_plugin.eval.report` (the research toolkit); this alias will go away."""

import warnings

from equimod_plugin.eval.report import *  # noqa: F403
from equimod_plugin.eval.report import __all__  # noqa: F401

warnings.warn(
    "equimod_plugin.report moved to equimod_plugin.eval.report: import it from there",
    FutureWarning,
    stacklevel=2,
)
