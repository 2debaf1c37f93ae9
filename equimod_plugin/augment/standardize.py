"""The official EquiMod code's parameter standardisation constants, per dataset and method.

Before its parameter projector the official code (``src/main.py`` of the branches
``SimCLR+EquiMod`` and ``BYOL+EquiMod``) computes ``p = (p - p_mean) / p_std`` with
hard-coded per-dataset constants. They are copied here, number for number, from
``PAPERS.md`` §1 "Standardisation in the official code" (the project's record of the
official code), in the official column order, which is this library's (``"field.column"``
names of :attr:`~equimod_plugin.augment.layout.ParamLayout.columns`).

The BYOL runs reuse statistics that do not match BYOL's own probabilities (e.g. the
solarize mean 0.050149 where the two views' average is 0.1, and the blur ones): they are
replicated as they are, because they are what the official projector received. They are
*constants of the official recipes*: at other image sizes (the crop columns are in pixels of
the input) or with other probabilities, the standardised columns are not zero-mean
unit-variance.

Example:
    >>> from equimod_plugin.augment.standardize import official_standardization
    >>> table = official_standardization("byol", "cifar")
    >>> len(table), table["crop.height"], table["solarize.applied"]
    (18, (23.369, 4.9544), (0.050149, 0.064719))
"""

from __future__ import annotations

from typing import Literal

__all__ = ["COLUMNS", "official_standardization"]

#: The official column order (PAPERS.md §1 "Augmentation parameters"), as this library names
#: the columns; the first 15 are shared by every recipe.
COLUMNS: tuple[str, ...] = (
    "crop.top",
    "crop.left",
    "crop.height",
    "crop.width",
    "flip.applied",
    "color_jitter.applied",
    "jitter_order.step0",
    "jitter_order.step1",
    "jitter_order.step2",
    "jitter_order.step3",
    "jitter_factors.brightness",
    "jitter_factors.contrast",
    "jitter_factors.saturation",
    "jitter_factors.hue",
    "grayscale.applied",
    "blur.applied",
    "blur.sigma",
    "solarize.applied",
)

# PAPERS.md §1, table "constants", row "CIFAR-10 p_mean (15 SimCLR / 18 BYOL)".
_CIFAR_MEAN = (
    4.3122, 4.3216, 23.369, 23.374, 0.49998, 0.80087, 1.2025, 1.4007, 1.5964, 1.8004,
    0.99993, 1.0002, 0.99986, 2.2321e-07, 0.19965,
)  # fmt: skip
# PAPERS.md §1, row "CIFAR-10 p_std".
_CIFAR_STD = (
    3.9740, 3.9851, 4.9544, 4.9539, 0.5000, 0.3993, 1.1651, 1.0210, 1.0200, 1.1669,
    0.2066, 0.2068, 0.2066, 0.0517, 0.3997,
)  # fmt: skip
# PAPERS.md §1, row "ImageNet p_mean (17 SimCLR / 18 BYOL)".
_IMAGENET_MEAN = (
    68.162, 99.199, 269.33, 274.57, 0.49905, 0.80054, 1.1998, 1.3994, 1.6014, 1.7995,
    1.0001, 1.0000, 1.0005, 1.5640e-04, 0.20018,
)  # fmt: skip
# PAPERS.md §1, row "ImageNet p_std".
_IMAGENET_STD = (
    77.370, 98.681, 136.86, 143.49, 0.5000, 0.39959, 1.1661, 1.0201, 1.0201, 1.1657,
    0.41347, 0.41323, 0.41349, 0.10333, 0.40013,
)  # fmt: skip
# PAPERS.md §1: "SimCLR adds 0.50030, 0.52507" (mean) and "0.5000, 0.65251" (std): the blur
# columns of SimCLR ImageNet (the CIFAR recipe has no blur).
_SIMCLR_BLUR_MEAN, _SIMCLR_BLUR_STD = (0.50030, 0.52507), (0.5000, 0.65251)
# PAPERS.md §1: "BYOL adds 0.27256, 0.52507, 0.050149" (mean) and "0.30381, 0.65251,
# 0.064719" (std), on both datasets: blur applied, blur sigma, solarize.
_BYOL_EXTRA_MEAN, _BYOL_EXTRA_STD = (0.27256, 0.52507, 0.050149), (0.30381, 0.65251, 0.064719)

_TABLES: dict[tuple[str, str], tuple[tuple[float, ...], tuple[float, ...]]] = {
    ("simclr", "cifar"): (_CIFAR_MEAN, _CIFAR_STD),
    ("simclr", "imagenet"): (_IMAGENET_MEAN + _SIMCLR_BLUR_MEAN, _IMAGENET_STD + _SIMCLR_BLUR_STD),
    ("byol", "cifar"): (_CIFAR_MEAN + _BYOL_EXTRA_MEAN, _CIFAR_STD + _BYOL_EXTRA_STD),
    ("byol", "imagenet"): (_IMAGENET_MEAN + _BYOL_EXTRA_MEAN, _IMAGENET_STD + _BYOL_EXTRA_STD),
}


def official_standardization(
    method: Literal["simclr", "byol"], variant: Literal["cifar", "imagenet"]
) -> dict[str, tuple[float, float]]:
    """The official ``(p_mean, p_std)`` of each column for ``method`` on ``variant``'s dataset.

    Args:
        method: ``"simclr"`` (15 columns on CIFAR-10, 17 on ImageNet) or ``"byol"`` (18).
        variant: ``"cifar"`` (CIFAR-10) or ``"imagenet"``.

    Returns:
        ``{"field.column": (mean, std)}`` in the official column order.

    Example:
        >>> list(official_standardization("simclr", "cifar"))[-1]
        'grayscale.applied'
    """
    if (method, variant) not in _TABLES:
        raise ValueError(
            "the official constants exist for method 'simclr' or 'byol' and variant 'cifar' "
            f"or 'imagenet', got method={method!r}, variant={variant!r}"
        )
    mean, std = _TABLES[(method, variant)]
    return {c: (m, s) for c, m, s in zip(COLUMNS[: len(mean)], mean, std, strict=True)}
