"""Moved to :mod:`equimod_plugin.eval.probes` (the research toolkit); this alias will go away."""

import warnings

from equimod_plugin.eval.probes import *  # noqa: F403
from equimod_plugin.eval.probes import __all__  # noqa: F401

warnings.warn(
    "equimod_plugin.evaluation moved to equimod_plugin.eval.probes: import it from there",
    FutureWarning,
    stacklevel=2,
)
