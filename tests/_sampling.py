"""Helpers shared by the recipe adapters' tests: seeded random images and a two-sample
Kolmogorov-Smirnov statistic for comparing sampled parameter distributions."""

from __future__ import annotations

import torch


def random_images(batch: int, size: int | tuple[int, int], seed: int = 0) -> torch.Tensor:
    """``(batch, 3, H, W)`` uniform images in [0, 1], fixed by ``seed``."""
    h, w = (size, size) if isinstance(size, int) else size
    return torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))


def ks_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = a.double().flatten().sort().values, b.double().flatten().sort().values
    grid = torch.cat([a, b])
    cdf_a = torch.searchsorted(a, grid, right=True) / len(a)
    cdf_b = torch.searchsorted(b, grid, right=True) / len(b)
    return float((cdf_a - cdf_b).abs().max())
