"""equimod-plugin: equivariance to augmentations for lightly and solo-learn models.

The core imports only torch and kornia. Framework glue lives in
``equimod_plugin.integrations`` and is imported only by those who use it.
"""

from equimod_plugin import augment
from equimod_plugin._checks import validation
from equimod_plugin.branch import EquivarianceBranch, equimod_branch, steering_branch
from equimod_plugin.heads import EquivarianceHead, EquivarianceOutput
from equimod_plugin.losses import EquiModCosineLoss, EquiModLoss
from equimod_plugin.metrics import equivariance_metrics
from equimod_plugin.steering import SteeringLoss, SteeringOperator
from equimod_plugin.terms import EquiModTerm, SteeringTerm, Term

__version__ = "0.1.0"

__all__ = [
    "EquiModCosineLoss",
    "EquiModLoss",
    "EquiModTerm",
    "EquivarianceBranch",
    "EquivarianceHead",
    "EquivarianceOutput",
    "SteeringLoss",
    "SteeringOperator",
    "SteeringTerm",
    "Term",
    "augment",
    "equimod_branch",
    "equivariance_metrics",
    "steering_branch",
    "validation",
]
