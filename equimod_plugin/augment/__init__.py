"""Batched, on-device augmentations that return the parameters they applied.

>>> import torch
>>> from equimod_plugin import augment
>>> aug = augment.simclr(32, variant="cifar")
>>> views, params = aug(torch.rand(4, 3, 32, 32))
>>> list(aug.layout.fields)
['crop', 'flip', 'color_jitter', 'jitter_order', 'jitter_factors', 'grayscale']
"""

from equimod_plugin.augment.kornia import from_kornia
from equimod_plugin.augment.layout import Field, ParamLayout
from equimod_plugin.augment.lightly import from_lightly
from equimod_plugin.augment.normalize import Normalize
from equimod_plugin.augment.ops import (
    ColorJitter,
    GaussianBlur,
    HorizontalFlip,
    ParamOp,
    RandomGrayscale,
    RandomResizedCrop,
    RandomSolarize,
)
from equimod_plugin.augment.pipeline import ParamAugment
from equimod_plugin.augment.presets import byol, byol_views, simclr
from equimod_plugin.augment.torchvision import from_torchvision

__all__ = [
    "ColorJitter",
    "Field",
    "GaussianBlur",
    "HorizontalFlip",
    "Normalize",
    "ParamAugment",
    "ParamLayout",
    "ParamOp",
    "RandomGrayscale",
    "RandomResizedCrop",
    "RandomSolarize",
    "byol",
    "byol_views",
    "from_kornia",
    "from_lightly",
    "from_torchvision",
    "simclr",
]
