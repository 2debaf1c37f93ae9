"""Former name of :mod:`equimod_plugin.branch`; kept so that existing imports keep working.

Import from :mod:`equimod_plugin.branch` (or :mod:`equimod_plugin`) instead.
"""

from equimod_plugin.augment.normalize import IMAGENET_NORMALIZE
from equimod_plugin.branch import (
    EquivarianceBranch,
    equimod_branch,
    infer_feature_dim,
    steering_branch,
)

__all__ = [
    "IMAGENET_NORMALIZE",
    "EquivarianceBranch",
    "equimod_branch",
    "infer_feature_dim",
    "steering_branch",
]
