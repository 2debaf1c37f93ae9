"""Per-channel normalisation, applied on the device after augmenting.

One object holds a model's normalisation, so the branch (training views), the test-time
augmentation and every evaluation path apply exactly the same one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["CIFAR10_NORMALIZE", "IMAGENET_NORMALIZE", "Normalize"]

IMAGENET_NORMALIZE = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
"""Mean and std of ImageNet: lightly's transforms and solo-learn's ImageNet-style data."""

CIFAR10_NORMALIZE = ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))
"""Mean and std of CIFAR-10 as solo-learn's validation transform uses them."""


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, for images ``(B, C, H, W)`` in [0, 1].

    The statistics are non-persistent buffers: they follow ``.to(device)`` but add nothing
    to a state dict. The output has the input's dtype and device. Values are not checked
    (a NaN stays a NaN): the branch checks the images before augmenting them.

    Args:
        mean: ``C`` channel means.
        std: ``C`` positive channel standard deviations.

    Example:
        >>> import torch
        >>> norm = Normalize.imagenet()
        >>> norm(torch.full((2, 3, 4, 4), 0.485))[0, 0, 0, 0].item()
        0.0
        >>> Normalize((0.5,), (0.25,))(torch.ones(1, 1, 2, 2)).flatten().tolist()
        [2.0, 2.0, 2.0, 2.0]
    """

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        values = []
        for name, v in (("mean", mean), ("std", std)):
            if isinstance(v, (str, bytes)) or not isinstance(v, Sequence | Tensor):
                raise TypeError(f"{name} must be a sequence of per-channel floats, got {v!r}")
            floats = [float(x) for x in v]
            if not floats or not all(math.isfinite(x) for x in floats):
                raise ValueError(f"{name} must be non-empty and finite, got {list(v)}")
            values.append(floats)
        if len(values[0]) != len(values[1]):
            raise ValueError(
                f"mean and std must have one value per channel each, got {len(values[0])} "
                f"means and {len(values[1])} stds"
            )
        if min(values[1]) <= 0:
            raise ValueError(f"std must be positive, got {values[1]}")
        c = len(values[0])
        self.register_buffer("mean", torch.tensor(values[0]).view(1, c, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(values[1]).view(1, c, 1, 1), persistent=False)

    @classmethod
    def imagenet(cls) -> Normalize:
        """ImageNet's statistics (lightly's default)."""
        return cls(*IMAGENET_NORMALIZE)

    @classmethod
    def cifar10(cls) -> Normalize:
        """CIFAR-10's statistics (solo-learn's CIFAR datasets)."""
        return cls(*CIFAR10_NORMALIZE)

    @property
    def channels(self) -> int:
        """Number of channels ``C``."""
        return self.mean.shape[1]

    def forward(self, x: Tensor) -> Tensor:
        """Normalise ``x`` ``(B, C, H, W)``; returns a new tensor of ``x``'s dtype."""
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a tensor (B, {self.channels}, H, W), got {type(x)}")
        if x.ndim != 4 or x.shape[1] != self.channels or not x.is_floating_point():
            raise ValueError(
                f"x must be float images (B, {self.channels}, H, W), got shape "
                f"{tuple(x.shape)}, dtype {x.dtype}"
            )
        mean, std = (t.to(device=x.device, dtype=x.dtype) for t in (self.mean, self.std))
        return (x - mean) / std

    def extra_repr(self) -> str:
        mean = [round(v, 4) for v in self.mean.flatten().tolist()]
        std = [round(v, 4) for v in self.std.flatten().tolist()]
        return f"mean={mean}, std={std}"
