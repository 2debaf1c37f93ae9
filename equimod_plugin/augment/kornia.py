"""Kornia pipelines as parameter-recording augmentations: :func:`from_kornia`.

A user's ``kornia.augmentation.AugmentationSequential`` becomes a
:class:`~equimod_plugin.augment.pipeline.ParamAugment` with the same operations, in the same
order, drawing from the same distributions, and recording what each sample received in the
fields the presets use (``crop``, ``flip``, ``color_jitter``, ``jitter_order``,
``jitter_factors``, ``grayscale``, ``blur``, ``solarize``). Where Kornia's image formulas
differ from this library's torchvision ones (the crop's ``align_corners``, the jitters'
formulas, the grey weights), the operations here apply Kornia's: given the same sampled
values, each gives the image the Kornia operation gives. The differences in *sampling* are
listed in :func:`from_kornia`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import kornia.augmentation as K
import torch
from kornia.color import rgb_to_grayscale
from kornia.constants import DataKey
from kornia.enhance import (
    adjust_brightness,
    adjust_brightness_accumulative,
    adjust_contrast,
    adjust_contrast_with_mean_subtraction,
    adjust_hue,
    adjust_saturation,
    adjust_saturation_with_gray_subtraction,
)
from kornia.geometry.transform import crop_by_indices
from torch import Tensor, nn

from equimod_plugin.augment.adapt import as_range, assemble, check_encoding, check_fields
from equimod_plugin.augment.functional import apply_to_samples
from equimod_plugin.augment.layout import Encoding, Standardization
from equimod_plugin.augment.ops import (
    Batch,
    GaussianBlur,
    HorizontalFlip,
    ParamOp,
    RandomGrayscale,
    RandomResizedCrop,
    RandomSolarize,
    _uniform,
)
from equimod_plugin.augment.pipeline import ParamAugment
from equimod_plugin.augment.torchvision import TorchvisionColorJitter

__all__ = ["KorniaColorJitter", "KorniaGrayscale", "KorniaResizedCrop", "from_kornia"]

#: How :func:`from_kornia` draws the order of a colour jitter's four steps.
JitterOrder = Literal["per_sample", "per_batch"]


class KorniaResizedCrop(RandomResizedCrop):
    """Kornia's ``RandomResizedCrop`` in its default ``cropping_mode="slice"``: field ``crop``.

    The fields, encodings and checks are those of
    :class:`~equimod_plugin.augment.ops.RandomResizedCrop`. Boxes are drawn as Kornia draws
    them: torchvision's 10 tries of area ``scale`` and log-uniform aspect ``ratio``, but a
    fallback box (no try fits) is placed at a uniformly random position, not centred. The box
    is cut out and resized as Kornia does (:func:`kornia.geometry.transform.crop_by_indices`:
    one ``F.interpolate`` per sample, with ``align_corners``); a bicubic overshoot is clamped
    to [0, 1], as this library's crop does (Kornia leaves it).

    Args:
        size: output ``(height, width)``.
        scale, ratio: ranges of the box's area fraction and aspect ratio (width / height).
        interpolation: ``"bilinear"`` or ``"bicubic"``.
        align_corners: Kornia's flag: ``True`` (its default) maps the box's corner pixel
            centres onto the output's; ``False`` resizes on torchvision's half-pixel grid.
        encoding: ``"normalized"`` or ``"official"``.

    Example:
        >>> import torch
        >>> crop = KorniaResizedCrop((16, 16), scale=(0.5, 1.0))
        >>> x = torch.rand(4, 3, 32, 32)
        >>> crop.apply(x, crop.sample(x)).shape
        torch.Size([4, 3, 16, 16])
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        interpolation: str = "bilinear",
        align_corners: bool = True,
        encoding: Encoding = "normalized",
    ) -> None:
        super().__init__(size, scale, ratio, interpolation, encoding)
        if not isinstance(align_corners, bool):
            raise TypeError(f"align_corners must be a bool, got {align_corners!r}")
        self.align_corners = align_corners

    def _fallback(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` of the box used when no try fits: the largest one within ``ratio``."""
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            h, w = round(width / self.ratio[0]), width
        elif in_ratio > self.ratio[1]:
            h, w = height, round(height * self.ratio[1])
        else:
            h, w = height, width
        return min(max(h, 1), height), min(max(w, 1), width)

    def _draw(self, batch: Batch, generator: torch.Generator | None) -> dict[str, Tensor]:
        (b, height, width, device), tries = batch, 10
        target = height * width * _uniform((b, tries), device, generator, *self.scale)
        log_r = _uniform(
            (b, tries), device, generator, math.log(self.ratio[0]), math.log(self.ratio[1])
        )
        aspect = log_r.exp()
        w = (target * aspect).sqrt().round()
        h = (target / aspect).sqrt().round()
        ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = ok.float().argmax(dim=1, keepdim=True)
        found = ok.any(dim=1)
        fallback_h, fallback_w = self._fallback(height, width)
        h = torch.where(found, h.gather(1, first).squeeze(1), float(fallback_h))
        w = torch.where(found, w.gather(1, first).squeeze(1), float(fallback_w))
        left = (_uniform(b, device, generator) * (width - w + 1)).floor()
        top = (_uniform(b, device, generator) * (height - h + 1)).floor()
        return {"box": torch.stack((top, left, h, w), dim=1)}

    def apply_transform(self, x: Tensor, raw: dict[str, Tensor]) -> Tensor:
        top, left, h, w = raw["box"].unbind(-1)
        right, bottom = left + w - 1, top + h - 1
        corners = ((left, top), (right, top), (right, bottom), (left, bottom))
        src = torch.stack([torch.stack(c, dim=-1) for c in corners], dim=1)  # (B, 4, 2): x, y
        out = crop_by_indices(
            x, src, self.size, interpolation=self.interpolation, align_corners=self.align_corners
        )
        return out.clamp(0, 1) if self.interpolation == "bicubic" else out


def _hue(x: Tensor, shift: Tensor) -> Tensor:
    """Kornia's hue step: a shift of ``shift`` ``(B,)`` turns of the HSV hue circle."""
    return adjust_hue(x, shift * (2 * math.pi))


def _additive_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """``ColorJiggle``'s brightness step: adds ``factor - 1``, then clamps."""
    return adjust_brightness(x, factor - 1)


#: The four steps (brightness, contrast, saturation, hue) of each Kornia colour jitter.
_STEPS = {
    # torchvision's blend formulas, with Kornia's grey weights (0.299, 0.587, 0.114)
    "ColorJitter": (
        adjust_brightness_accumulative,
        adjust_contrast_with_mean_subtraction,
        adjust_saturation_with_gray_subtraction,
        _hue,
    ),
    # Kornia's own: additive brightness, contrast scaling the values, HSV saturation
    "ColorJiggle": (_additive_brightness, adjust_contrast, adjust_saturation, _hue),
}
_NEUTRAL = (1.0, 1.0, 1.0, 0.0)


class KorniaColorJitter(TorchvisionColorJitter):
    """Kornia's ``ColorJitter`` or ``ColorJiggle``, one order and factor set per sample.

    The fields, encodings and checks are those of
    :class:`~equimod_plugin.augment.ops.ColorJitter` (``color_jitter``, ``jitter_order``,
    ``jitter_factors``). Factors are drawn uniformly from ``ranges``, any ``(min, max)`` Kornia
    accepts, as :class:`~equimod_plugin.augment.torchvision.TorchvisionColorJitter` draws them.
    The steps are Kornia's functions: for ``"ColorJitter"`` torchvision's blend formulas with
    Kornia's grey weights; for ``"ColorJiggle"`` additive brightness, contrast scaling the
    values and HSV saturation. As in Kornia, the result is clamped to [0, 1] (the images are in
    [0, 1] already, so Kornia's clamp of the input has nothing to do) and a step whose factor is
    neutral is skipped.

    Args:
        ranges: ``(min, max)`` of the brightness, contrast and saturation factors (1 =
            identity) and of the hue shift in turns (0 = identity).
        p: probability of jittering a sample.
        formulas: ``"ColorJitter"`` or ``"ColorJiggle"``, the Kornia class reproduced.
        order: Kornia's fixed ``order`` (indices into brightness 0, contrast 1, saturation 2,
            hue 3; a subset skips the others, whose factors stay neutral), or ``None`` for a
            random order.
        sampling: a random order drawn ``"per_sample"`` (torchvision's) or ``"per_batch"`` (one
            permutation for the whole batch, Kornia's); recorded per sample either way.
        encoding: ``"normalized"`` or ``"official"``.

    Example:
        >>> import torch
        >>> jitter = KorniaColorJitter([(0.6, 1.4), (0.6, 1.4), (0.6, 1.4), (-0.1, 0.1)])
        >>> x = torch.rand(4, 3, 8, 8)
        >>> params = jitter.sample(x)  # (4, 9): applied, order (4), factors (4)
        >>> jitter.apply(x, params).shape
        torch.Size([4, 3, 8, 8])
    """

    def __init__(
        self,
        ranges: Sequence[tuple[float, float]],
        p: float = 1.0,
        formulas: Literal["ColorJitter", "ColorJiggle"] = "ColorJitter",
        order: Sequence[int] | None = None,
        sampling: JitterOrder = "per_sample",
        encoding: Encoding = "normalized",
    ) -> None:
        super().__init__(ranges, p=p, encoding=encoding)
        if formulas not in _STEPS:
            raise ValueError(f"formulas must be one of {sorted(_STEPS)}, got {formulas!r}")
        if sampling not in ("per_sample", "per_batch"):
            raise ValueError(f"sampling must be 'per_sample' or 'per_batch', got {sampling!r}")
        if order is not None:
            order = tuple(order)
            if len(set(order)) != len(order) or not set(order) <= {0, 1, 2, 3}:
                raise ValueError(
                    f"order must be distinct indices among 0 brightness, 1 contrast, "
                    f"2 saturation, 3 hue, got {order!r}"
                )
            # the steps a fixed order leaves out are never applied: their factors stay neutral
            self.ranges = tuple(
                r if k in order else (_NEUTRAL[k],) * 2 for k, r in enumerate(self.ranges)
            )
        self.formulas = formulas
        self.order = order
        self.sampling = sampling

    def _draw(self, batch: Batch, generator: torch.Generator | None) -> dict[str, Tensor]:
        b, dev = batch.size, batch.device
        if self.order is not None:
            fixed = (*self.order, *(k for k in range(4) if k not in self.order))
            order = torch.tensor(fixed, device=dev).expand(b, 4).clone()
        elif self.sampling == "per_batch":
            order = _uniform((1, 4), dev, generator).argsort(dim=1).expand(b, 4).clone()
        else:
            order = _uniform((b, 4), dev, generator).argsort(dim=1)
        factors = torch.stack([_uniform(b, dev, generator, *r) for r in self.ranges], dim=1)
        return {"order": order, "factors": factors}

    def apply_transform(self, x: Tensor, raw: dict[str, Tensor]) -> Tensor:
        steps = _STEPS[self.formulas]

        def jitter(images: Tensor, order: Tensor, factors: Tensor) -> Tensor:
            for step in range(4):
                for k, fn in enumerate(steps):
                    sel = (order[:, step] == k) & (factors[:, k] != _NEUTRAL[k])
                    images = apply_to_samples(images, sel, fn, factors[:, k])
            return images.clamp(0, 1)

        return apply_to_samples(x, raw["applied"], jitter, raw["order"], raw["factors"].to(x.dtype))


class KorniaGrayscale(RandomGrayscale):
    """Kornia's ``RandomGrayscale``: field ``grayscale``, with Kornia's grey weights.

    The weights default to Kornia's ``rgb_to_grayscale`` luma (0.299, 0.587, 0.114), where
    torchvision's (this library's :class:`~equimod_plugin.augment.ops.RandomGrayscale`) are
    (0.2989, 0.587, 0.114).

    Args:
        p: probability of converting a sample to grey.
        rgb_weights: the three channel weights, or ``None`` for Kornia's default.

    Example:
        >>> import torch
        >>> grey = KorniaGrayscale(p=1.0).apply(torch.rand(2, 3, 8, 8), torch.ones(2, 1))
        >>> torch.equal(grey[:, 0], grey[:, 2])
        True
    """

    def __init__(self, p: float = 0.1, rgb_weights: Sequence[float] | Tensor | None = None) -> None:
        super().__init__(p)
        if rgb_weights is not None:
            weights = [float(w) for w in torch.as_tensor(rgb_weights).flatten()]
            if len(weights) != 3:
                raise ValueError(f"rgb_weights must be three channel weights, got {rgb_weights}")
            rgb_weights = tuple(weights)
        self.rgb_weights: tuple[float, ...] | None = rgb_weights

    def apply_transform(self, x: Tensor, raw: dict[str, Tensor]) -> Tensor:
        weights = None if self.rgb_weights is None else x.new_tensor(self.rgb_weights)
        grey = rgb_to_grayscale(x, rgb_weights=weights).expand_as(x)
        return torch.where(raw["applied"][:, None, None, None], grey, x)


def _range(value: Any, center: float, floor: float) -> tuple[float, float]:
    """Kornia's reading of a range argument: a number ``v`` is ``(max(center - v, floor),
    center + v)``, a pair is the range itself."""
    t = torch.as_tensor(value, dtype=torch.float64)
    if t.ndim == 0:
        return max(center - float(t), floor), center + float(t)
    return as_range(t)


def _convert_crop(m: K.RandomResizedCrop, where: str, encoding: Encoding, **_: Any) -> ParamOp:
    flags = m.flags
    if flags["cropping_mode"] != "slice":
        raise ValueError(
            f"{where}: cropping_mode={flags['cropping_mode']!r} warps the box with a different "
            "sampling grid; from_kornia reproduces Kornia's default cropping_mode='slice'"
        )
    resample = flags["resample"].name.lower()
    if resample not in ("bilinear", "bicubic"):
        raise ValueError(
            f"{where}: resample={resample!r} is not supported; use 'bilinear' or 'bicubic'"
        )
    gen = m._param_generator
    return KorniaResizedCrop(
        tuple(flags["size"]),
        as_range(gen.scale),
        as_range(gen.ratio),
        resample,
        bool(flags["align_corners"]),
        encoding,
    )


def _convert_flip(m: K.RandomHorizontalFlip, where: str, **_: Any) -> ParamOp:
    return HorizontalFlip(m.p)


def _convert_jitter(
    m: K.ColorJitter | K.ColorJiggle,
    where: str,
    encoding: Encoding,
    jitter_order: JitterOrder | None,
    **_: Any,
) -> ParamOp:
    ranges = [
        _range(m.brightness, 1.0, 0.0),
        _range(m.contrast, 1.0, 0.0),
        _range(m.saturation, 1.0, 0.0),
        _range(m.hue, 0.0, -0.5),
    ]
    order = getattr(m, "_fixed_order", None)  # Kornia >= 0.8's ``order`` argument
    if order is None and jitter_order is None:
        warnings.warn(
            f"{where}: Kornia's {type(m).__name__} draws one order of its four steps per "
            "batch, torchvision one per sample; from_kornia draws one per sample (recorded in "
            "the jitter_order field). Pass jitter_order='per_sample' to keep this without the "
            "warning, or jitter_order='per_batch' for Kornia's sampling",
            UserWarning,
            stacklevel=3,
        )
    return KorniaColorJitter(
        ranges,
        p=m.p,
        formulas=type(m).__name__,  # type: ignore[arg-type]
        order=order,
        sampling=jitter_order or "per_sample",
        encoding=encoding,
    )


def _convert_grayscale(m: K.RandomGrayscale, where: str, **_: Any) -> ParamOp:
    return KorniaGrayscale(m.p, m.rgb_weights)


def _convert_blur(m: K.RandomGaussianBlur, where: str, **_: Any) -> ParamOp:
    flags = m.flags
    size = flags["kernel_size"]
    side = size if isinstance(size, int) else tuple(size)
    if isinstance(side, tuple):
        if len(side) != 2 or side[0] != side[1]:
            raise ValueError(
                f"{where}: kernel_size={size!r} is not square; from_kornia encodes a square "
                "kernel (an odd int)"
            )
        side = side[0]
    border = flags["border_type"].name.lower()
    if border != "reflect":
        raise ValueError(
            f"{where}: border_type={border!r} is not supported; use the default 'reflect' "
            "(torchvision's)"
        )
    return GaussianBlur(m.p, int(side), as_range(m._param_generator.sigma))


def _convert_solarize(m: K.RandomSolarize, where: str, **_: Any) -> ParamOp:
    (thresholds, *_t), (additions, *_a) = m._param_generator.samplers
    threshold = _range(thresholds, 0.5, 0.0)
    addition = _range(additions, 0.0, -0.5)
    if threshold[0] != threshold[1] or addition != (0.0, 0.0):
        raise ValueError(
            f"{where}: RandomSolarize draws its threshold from {threshold} and adds a value "
            f"from {addition} (Kornia's defaults, thresholds=0.1 and additions=0.1, draw both); "
            "from_kornia encodes torchvision's solarisation, a fixed threshold and no addition: "
            "pass thresholds=0.0 (threshold 0.5) or thresholds=(t, t), and additions=0.0"
        )
    return RandomSolarize(m.p, threshold[0])


def _reject_normalize(m: K.Normalize, where: str, **_: Any) -> ParamOp:
    mean = [round(float(v), 6) for v in torch.as_tensor(m.flags["mean"]).flatten()]
    std = [round(float(v), 6) for v in torch.as_tensor(m.flags["std"]).flatten()]
    raise ValueError(
        f"{where}: Normalize is the normalisation, not an augmentation: the branch normalises "
        "the originals and the views after augmenting. Remove it from the pipeline and pass "
        f"normalize=augment.Normalize({mean}, {std}) to attach / make_branch instead"
    )


_CONVERTERS = {
    K.RandomResizedCrop: _convert_crop,
    K.RandomHorizontalFlip: _convert_flip,
    K.ColorJitter: _convert_jitter,
    K.ColorJiggle: _convert_jitter,
    K.RandomGrayscale: _convert_grayscale,
    K.RandomGaussianBlur: _convert_blur,
    K.RandomSolarize: _convert_solarize,
    K.Normalize: _reject_normalize,
}
_SUPPORTED = ", ".join(t.__name__ for t in _CONVERTERS if t is not K.Normalize)


def _flatten(pipeline: Any, where: str) -> Iterator[tuple[str, Any]]:
    """``(position, module)`` of every operation of ``pipeline``, nested containers expanded."""
    if isinstance(pipeline, (K.PatchSequential, K.VideoSequential)):
        raise TypeError(
            f"{where} is a {type(pipeline).__name__}; from_kornia converts image pipelines "
            "(AugmentationSequential, ImageSequential, a list of Kornia 2D augmentations)"
        )
    if isinstance(pipeline, K.ImageSequential):
        if pipeline.random_apply is not False:
            raise ValueError(
                f"{where}: random_apply={pipeline.random_apply!r} applies a random subset of the "
                "operations; from_kornia applies every operation in order (set "
                "random_apply=False and give each operation its probability p)"
            )
        keys = getattr(pipeline, "data_keys", None) or []
        if any(DataKey.get(k) is not DataKey.INPUT for k in keys):
            raise ValueError(
                f"{where}: data_keys={[DataKey.get(k).name for k in keys]}; from_kornia makes "
                "image views only (data_keys=['input'])"
            )
    if isinstance(pipeline, (nn.Sequential, list, tuple)):
        for i, child in enumerate(pipeline):
            if isinstance(child, (nn.Sequential, list, tuple)):
                yield from _flatten(child, f"{where}[{i}]")
            else:
                yield f"{where}[{i}]", child
    elif isinstance(pipeline, nn.Module):
        yield where, pipeline
    else:
        raise TypeError(
            "pipeline must be a kornia.augmentation.AugmentationSequential or a list of Kornia "
            f"2D augmentations, got {type(pipeline).__name__}"
        )


def _check_options(m: nn.Module, where: str) -> None:
    """Reject Kornia options that change what is drawn: one draw for the batch."""
    name = type(m).__name__
    if getattr(m, "same_on_batch", False):
        raise ValueError(
            f"{where} ({name}): same_on_batch=True draws one parameter set for the whole batch; "
            "from_kornia draws one per sample: set same_on_batch=False (on the operation and on "
            "its container)"
        )
    p_batch = getattr(m, "p_batch", 1.0)
    if p_batch != 1:
        what = "p" if isinstance(m, K.RandomResizedCrop) else "p_batch"
        raise ValueError(
            f"{where} ({name}): {what}={p_batch} applies the operation to the whole batch or "
            f"to none of it; from_kornia encodes a per-sample gate: use {what}=1.0"
            + (" (the crop sets the views' size: it always applies)" if what == "p" else "")
        )


def from_kornia(
    pipeline: K.AugmentationSequential | Sequence[nn.Module] | nn.Module,
    *,
    jitter_order: JitterOrder | None = None,
    encoding: Encoding = "normalized",
    standardization: Standardization | None = None,
) -> ParamAugment:
    """A parameter-recording augmentation that samples and applies what ``pipeline`` does.

    Each Kornia operation becomes an operation of this library, in the order written, with
    the same distributions and options (fields of the ``(B, P)`` parameters in brackets):

    ========================  ===================================================================
    Kornia                    operation here (fields)
    ========================  ===================================================================
    ``RandomResizedCrop``     :class:`KorniaResizedCrop` (``crop``)
    ``RandomHorizontalFlip``  :class:`HorizontalFlip` (``flip``)
    ``ColorJitter``           :class:`KorniaColorJitter` (``color_jitter``, ``jitter_*``)
    ``ColorJiggle``           :class:`KorniaColorJitter` with Kornia's ``ColorJiggle`` formulas
    ``RandomGrayscale``       :class:`KorniaGrayscale` (``grayscale``)
    ``RandomGaussianBlur``    :class:`GaussianBlur` (``blur``)
    ``RandomSolarize``        :class:`RandomSolarize` (``solarize``)
    ========================  ===================================================================

    The options carried over: the crop's size, scale, ratio, bilinear or bicubic resampling
    and ``align_corners`` (at most one crop); the jitters' four ranges, ``p`` and a fixed
    ``order``; the grey ``rgb_weights``; the blur's odd square kernel, sigma range and
    ``separable``; a fixed solarize threshold without addition; every ``p``.

    Given the same sampled values each operation gives Kornia's image (the crop up to the
    clamp of a bicubic overshoot). What differs from Kornia is how some values are drawn:

    - Kornia's ``ColorJitter`` / ``ColorJiggle`` draw one order of their four steps per batch;
      here the order is drawn per sample (as torchvision does) unless
      ``jitter_order="per_batch"``. Left at ``None`` it is per sample with a ``UserWarning``.
    - every operation draws from its own generator or the global RNG of the images' device,
      so the draws are not Kornia's own for a given seed, only from the same distributions.

    Args:
        pipeline: a ``kornia.augmentation.AugmentationSequential`` (or ``ImageSequential``),
            a list or tuple of Kornia 2D augmentations, or one augmentation. Nested sequentials
            are expanded; ``random_apply`` must be ``False`` and ``data_keys`` images only.
        jitter_order: ``"per_sample"`` or ``"per_batch"``, how a random jitter order is drawn;
            ``None``: per sample, with a warning.
        encoding: ``"normalized"``, ``"official"`` or ``"official_standardized"``.
        standardization: the per-column ``(mean, std)`` of ``"official_standardized"``,
            keyed ``"field.column"`` (e.g.
            :func:`~equimod_plugin.augment.standardize.official_standardization`); only with
            that encoding.

    Returns:
        a :class:`~equimod_plugin.augment.pipeline.ParamAugment`: ``aug(x)`` on ``(B, 3, H,
        W)`` images in [0, 1] gives ``(views (B, 3, h, w), params (B, P))``; ``aug(x,
        params=params)`` replays them bit for bit.

    Raises:
        TypeError: an operation without an equivalent here (named with its position), or a
            ``pipeline`` of another type.
        ValueError: an option that changes the semantics (``same_on_batch=True``,
            ``p_batch != 1``, the crop's ``p != 1`` or ``cropping_mode="resample"``, nearest
            resampling, a non-square or non-reflect blur, a random solarize threshold or
            addition, ``random_apply``); a ``Normalize`` (pass it to the branch instead);
            a second crop, or an operation type given twice.

    Example:
        >>> import torch
        >>> import kornia.augmentation as K
        >>> pipeline = K.AugmentationSequential(
        ...     K.RandomResizedCrop((32, 32), scale=(0.2, 1.0)),
        ...     K.RandomHorizontalFlip(),
        ...     K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
        ...     K.RandomGrayscale(p=0.2),
        ... )
        >>> aug = from_kornia(pipeline, jitter_order="per_sample")
        >>> list(aug.layout.fields)
        ['crop', 'flip', 'color_jitter', 'jitter_order', 'jitter_factors', 'grayscale']
        >>> x = torch.rand(4, 3, 32, 32)
        >>> views, params = aug(x)
        >>> views.shape, params.shape
        (torch.Size([4, 3, 32, 32]), torch.Size([4, 15]))
        >>> torch.equal(aug(x, params=params)[0], views)
        True
    """
    op_encoding = check_encoding(encoding, standardization)
    if jitter_order not in (None, "per_sample", "per_batch"):
        raise ValueError(
            f"jitter_order must be 'per_sample', 'per_batch' or None, got {jitter_order!r}"
        )
    ops: list[tuple[str, ParamOp]] = []
    for where, m in _flatten(pipeline, "pipeline"):
        convert = _CONVERTERS.get(type(m))
        if convert is None:
            raise TypeError(
                f"{where} ({type(m).__name__}) cannot be encoded: from_kornia converts "
                f"{_SUPPORTED} (and rejects Normalize: pass it to the branch)"
            )
        if not isinstance(m, K.Normalize):
            _check_options(m, where)
        try:
            op = convert(
                m, f"{where} ({type(m).__name__})", encoding=op_encoding, jitter_order=jitter_order
            )
        except (TypeError, ValueError) as error:
            if str(error).startswith(where):
                raise
            raise type(error)(f"{where} ({type(m).__name__}): {error}") from error
        ops.append((f"{where} ({type(m).__name__})", op))
    if not ops:
        raise ValueError("pipeline has no operation to convert")
    check_fields(ops, "from_kornia")
    return assemble([op for _, op in ops], encoding, standardization)
