"""The published augmentation recipes of SimCLR and BYOL, as used by EquiMod.

Every probability, range and kernel size is an argument; ``None`` means "the recipe's value
for this ``variant``". Defaults are the official EquiMod code's recipes (``src/dataset.py`` of
its ``SimCLR+EquiMod`` and ``BYOL+EquiMod`` branches, as recorded in the project's PAPERS.md
§1; see ``docs/augmentations.md``). Every crop is bicubic with ratio (3/4, 4/3) and flip
p 0.5:

========================  ==================  ==================  ==================
setting                   SimCLR CIFAR        SimCLR ImageNet     BYOL (view 1 / 2)
========================  ==================  ==================  ==================
crop scale                (0.2, 1)            (0.08, 1)           CIFAR (0.2, 1);
                                                                  ImageNet (0.08, 1)
colour jitter (p = 0.8)   0.4, 0.4, 0.4, 0.1  0.8, 0.8, 0.8, 0.2  0.4, 0.4, 0.2, 0.1
grayscale                 0.2                 0.2                 0.2
blur p (kernel)           none                0.5 (10 %)          1.0 / 0.1 (10 %; CIFAR 3)
solarize p                none                none                0.0 / 0.2
parameter width P         15                  17                  18
========================  ==================  ==================  ==================

``encoding="official_standardized"`` stores what the official parameter projector receives:
the official values standardised with the official constants of the preset's method and
``variant`` (:func:`~equimod_plugin.augment.standardize.official_standardization`).

The blur kernel of the ImageNet recipes is 10 % of the view size, as SimCLR specifies:
:func:`blur_kernel_size` gives the nearest odd size (23 at 224 px, the official value; 3 at
32 px) that the view can hold.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, Literal

from equimod_plugin.augment import ops as op
from equimod_plugin.augment.layout import ENCODINGS, STANDARDIZED, Encoding
from equimod_plugin.augment.ops import ParamOp, check_real, check_size
from equimod_plugin.augment.pipeline import ParamAugment
from equimod_plugin.augment.standardize import official_standardization

Variant = Literal["cifar", "imagenet"]


def _check_variant(variant: str) -> None:
    if variant not in ("cifar", "imagenet"):
        raise ValueError(f"variant must be 'cifar' or 'imagenet', got {variant!r}")


def blur_kernel_size(size: int | tuple[int, int]) -> int:
    """The ImageNet recipes' blur kernel for views of ``size``: odd, about 10 % of the side.

    The odd size nearest to a tenth of the smaller side, at least 3, and at most what the
    blur's reflect padding allows (``2 * side - 1``).

    Example:
        >>> blur_kernel_size(224), blur_kernel_size(96), blur_kernel_size(32), blur_kernel_size(8)
        (23, 9, 3, 3)
    """
    side = min(check_size(size, "size"))
    return min(max(3, 2 * (side // 20) + 1), 2 * side - 1)


def _pipeline(ops: list[ParamOp], encoding: str, method: str, variant: str) -> ParamAugment:
    """``ParamAugment(ops)`` in ``encoding``; the standardised one takes the official
    constants of ``method`` on ``variant``, whose columns the ops must have exactly."""
    if encoding != STANDARDIZED:
        return ParamAugment(ops, encoding)
    constants = official_standardization(method, variant)  # type: ignore[arg-type]
    columns = [f"{f.name}.{c}" for o in ops for f in o.fields for c in f.columns]
    if columns != list(constants):
        raise ValueError(
            f"encoding {STANDARDIZED!r} uses the official constants of {method} {variant}, "
            f"for the columns {list(constants)}; these options give the columns {columns} "
            "(e.g. a blur added to SimCLR CIFAR): use encoding='official' (or 'normalized') "
            "and standardise the parameters yourself"
        )
    return ParamAugment([o.standardize(constants) for o in ops], STANDARDIZED)


def _check_preset_encoding(encoding: str) -> str:
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    return "official" if encoding == STANDARDIZED else encoding


def _common(
    size: int | tuple[int, int],
    scale: tuple[float, float],
    ratio: tuple[float, float],
    interpolation: str,
    hflip_p: float,
    jitter: tuple[float, float, float, float],
    jitter_p: float,
    grayscale_p: float,
    encoding: Encoding,
) -> list[ParamOp]:
    if isinstance(jitter, str) or not isinstance(jitter, Sequence) or len(jitter) != 4:
        raise ValueError(
            f"jitter must be (brightness, contrast, saturation, hue) strengths, got {jitter!r}"
        )
    return [
        op.RandomResizedCrop(size, scale, ratio, interpolation, encoding),
        op.HorizontalFlip(hflip_p),
        op.ColorJitter(*jitter, p=jitter_p, encoding=encoding),
        op.RandomGrayscale(grayscale_p),
    ]


def simclr(
    size: int | tuple[int, int],
    variant: Variant = "imagenet",
    *,
    scale: tuple[float, float] | None = None,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    interpolation: str = "bicubic",
    hflip_p: float = 0.5,
    jitter: tuple[float, float, float, float] | None = None,
    jitter_p: float = 0.8,
    grayscale_p: float = 0.2,
    blur_p: float | None = None,
    blur_kernel: int | None = None,
    blur_sigma: tuple[float, float] = (0.1, 2.0),
    encoding: Encoding = "normalized",
) -> ParamAugment:
    """SimCLR's augmentation (both views use it), recording its parameters.

    Args:
        size: output size of the views.
        variant: ``"cifar"`` (EquiMod's CIFAR-10 recipe: no blur, P = 15) or ``"imagenet"``
            (blur, P = 17).
        scale, ratio: the random resized crop's area fraction and aspect ratio; ``scale``
            ``None``: (0.2, 1) for ``"cifar"``, (0.08, 1) for ``"imagenet"`` (official).
        interpolation: the crop's, ``"bicubic"`` (every official crop) or ``"bilinear"``.
        hflip_p: probability of a horizontal flip.
        jitter: (brightness, contrast, saturation, hue) strengths; ``jitter_p`` its probability.
        grayscale_p: probability of grayscale.
        blur_p: probability of blur; the CIFAR variant has no blur field unless ``blur_p > 0``.
        blur_kernel: odd blur kernel size; ``None``: 10 % of the view size
            (:func:`blur_kernel_size`: 23 at 224 px, 3 at 32 px). A kernel whose reflect
            padding ``blur_kernel // 2`` is not smaller than the view size raises a
            ``ValueError``.
        blur_sigma: range of the blur's sigma, drawn uniformly.
        encoding: parameter encoding, ``"normalized"``, ``"official"`` or
            ``"official_standardized"`` (the official values standardised with the official
            SimCLR constants of ``variant``; needs the official columns: no blur on CIFAR).

    Returns:
        A :class:`~equimod_plugin.augment.pipeline.ParamAugment`; called on ``(B, 3, H, W)``
        images in [0, 1] it returns ``(views (B, 3, size, size), params (B, P))``.

    Example:
        >>> from equimod_plugin import augment
        >>> augment.simclr(32, variant="cifar").layout.param_dim
        15
        >>> augment.simclr(224).layout.param_dim
        17
        >>> aug = augment.simclr(32, variant="cifar", encoding="official_standardized")
        >>> [round(v, 3) for v in aug.identity_params(1)[0, :4].tolist()]  # whole 32 px crop
        [-1.085, -1.084, 1.742, 1.741]
    """
    _check_variant(variant)
    cifar = variant == "cifar"
    ops = _common(
        size,
        scale or ((0.2, 1.0) if cifar else (0.08, 1.0)),
        ratio,
        interpolation,
        hflip_p,
        jitter or ((0.4, 0.4, 0.4, 0.1) if cifar else (0.8, 0.8, 0.8, 0.2)),
        jitter_p,
        grayscale_p,
        _check_preset_encoding(encoding),
    )
    blur_p = (0.0 if cifar else 0.5) if blur_p is None else check_real(blur_p, "blur_p")
    if blur_p > 0 or not cifar:
        kernel = blur_kernel_size(size) if blur_kernel is None else blur_kernel
        ops.append(op.GaussianBlur(blur_p, kernel, blur_sigma))
    return _pipeline(ops, encoding, "simclr", variant)


def byol(
    size: int | tuple[int, int],
    view: int = 1,
    variant: Variant = "imagenet",
    *,
    scale: tuple[float, float] | None = None,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    interpolation: str = "bicubic",
    hflip_p: float = 0.5,
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1),
    jitter_p: float = 0.8,
    grayscale_p: float = 0.2,
    blur_p: float | None = None,
    blur_kernel: int | None = None,
    blur_sigma: tuple[float, float] = (0.1, 2.0),
    solarize_p: float | None = None,
    solarize_threshold: float = 0.5,
    encoding: Encoding = "normalized",
) -> ParamAugment:
    """BYOL's asymmetric augmentation for ``view`` 1 or 2, recording its parameters (P = 18).

    View 1 always blurs and never solarises; view 2 blurs with p = 0.1 and solarises with
    p = 0.2. Both views share one layout, so their parameters can be stacked.

    Args:
        size: output size of the views.
        view: 1 or 2.
        variant: ``"cifar"`` (crop scale (0.2, 1), blur kernel 3) or ``"imagenet"`` (crop scale
            (0.08, 1), blur kernel 10 % of the view size, 23 at 224 px).
        scale: range of the crop area, as a fraction of the image area; ``None``: the
            official value of ``variant``, (0.2, 1) for CIFAR (the official code's, whose
            crop-height mean 23.37 at 32 px shows it) and (0.08, 1) for ImageNet.
        ratio: range of the crop aspect ratio (width / height).
        interpolation: ``"bicubic"`` (every official crop) or ``"bilinear"``.
        hflip_p: probability of a horizontal flip.
        jitter: (brightness, contrast, saturation, hue) strengths of the colour jitter.
        jitter_p: probability of the colour jitter.
        grayscale_p: probability of grayscale.
        blur_p: probability of blur; ``None``: 1.0 for view 1, 0.1 for view 2.
        blur_kernel: odd blur kernel size; ``None``: 3 for ``"cifar"``, 10 % of the view size
            for ``"imagenet"`` (:func:`blur_kernel_size`: 23 at 224 px, 3 at 32 px). A kernel
            whose reflect padding ``blur_kernel // 2`` is not smaller than the view size raises
            a ``ValueError``.
        blur_sigma: range of the blur's sigma, drawn uniformly.
        solarize_p: probability of solarisation; ``None``: 0.0 for view 1, 0.2 for view 2.
        solarize_threshold: pixels ``>= threshold`` are inverted.
        encoding: parameter encoding, ``"normalized"``, ``"official"`` or
            ``"official_standardized"`` (the official values standardised with the official
            BYOL constants of ``variant``, which the official code uses for both views
            although they do not match BYOL's blur and solarize probabilities).

    Returns:
        A :class:`~equimod_plugin.augment.pipeline.ParamAugment`; called on ``(B, 3, H, W)``
        images in [0, 1] it returns ``(views (B, 3, size, size), params (B, 18))``.

    Example:
        >>> from equimod_plugin import augment
        >>> aug1, aug2 = augment.byol(32, view=1), augment.byol(32, view=2)
        >>> aug1.layout == aug2.layout, aug1.layout.param_dim
        (True, 18)
    """
    _check_variant(variant)
    if isinstance(view, bool) or not isinstance(view, numbers.Integral):
        raise TypeError(f"view must be the int 1 or 2, got {view!r}")
    if view not in (1, 2):
        raise ValueError(f"view must be 1 or 2, got {view!r}")
    ops = _common(
        size,
        scale or ((0.2, 1.0) if variant == "cifar" else (0.08, 1.0)),
        ratio,
        interpolation,
        hflip_p,
        jitter,
        jitter_p,
        grayscale_p,
        _check_preset_encoding(encoding),
    )
    if blur_kernel is None:
        blur_kernel = 3 if variant == "cifar" else blur_kernel_size(size)
    ops.append(
        op.GaussianBlur(
            (1.0 if view == 1 else 0.1) if blur_p is None else blur_p, blur_kernel, blur_sigma
        )
    )
    ops.append(
        op.RandomSolarize(
            (0.0 if view == 1 else 0.2) if solarize_p is None else solarize_p, solarize_threshold
        )
    )
    return _pipeline(ops, encoding, "byol", variant)


def byol_views(
    size: int | tuple[int, int], variant: Variant = "imagenet", **kwargs: Any
) -> tuple[ParamAugment, ParamAugment]:
    """Both BYOL views, ``(byol(size, 1, variant, **kwargs), byol(size, 2, variant, **kwargs))``.

    Example:
        >>> from equimod_plugin import augment
        >>> view_1, view_2 = augment.byol_views(32, variant="cifar")
        >>> view_1.ops[4].p, view_2.ops[4].p  # blur probabilities
        (1.0, 0.1)
    """
    return byol(size, 1, variant, **kwargs), byol(size, 2, variant, **kwargs)
