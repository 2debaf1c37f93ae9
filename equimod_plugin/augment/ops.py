"""Augmentation operations that sample, encode and apply their own parameters.

Each operation owns one or more fields of the parameter vector (see
:class:`~equimod_plugin.augment.layout.ParamLayout`). It samples parameters with
torchvision's distributions, writes them in the layout's encoding, and applies them *from
that encoding*, so that passing the encoded parameters back reproduces the view bit for bit.
A gated-off operation (probability not drawn) writes its identity values.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from equimod_plugin.augment import functional as AF
from equimod_plugin.augment.layout import ENCODINGS, Encoding, Field

__all__ = [
    "ColorJitter",
    "GaussianBlur",
    "HorizontalFlip",
    "ParamOp",
    "RandomGrayscale",
    "RandomResizedCrop",
    "RandomSolarize",
]


def check_real(value: float, name: str) -> float:
    """``value`` as a float; a ``TypeError`` naming ``name`` unless it is a real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    return float(value)


def check_int(value: int, name: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; a ``TypeError`` for a float, bool or other type."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_size(size: int | Sequence[int], name: str) -> tuple[int, int]:
    """An ``int`` or a ``(height, width)`` pair of positive ints, as ``(height, width)``."""
    expected = f"{name} must be a positive int or a (height, width) pair of positive ints"
    if isinstance(size, Sequence) and not isinstance(size, str):
        if len(size) != 2:
            raise ValueError(f"{expected}, got {size!r}")
        pair = tuple(size)
    else:
        pair = (size, size)
    for v in pair:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{expected}, got {size!r}")
        if v < 1:
            raise ValueError(f"{expected}, got {size!r}")
    return int(pair[0]), int(pair[1])


def _check_encoding(encoding: str) -> Encoding:
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    return encoding  # type: ignore[return-value]


def _check_probability(p: float, name: str) -> float:
    p = check_real(p, name)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
    return p


def _check_range(r: Sequence[float], name: str, low: float = 0.0) -> tuple[float, float]:
    expected = f"{name} must be a finite (min, max) pair with {low} <= min <= max"
    if not isinstance(r, Sequence) or isinstance(r, str) or len(r) != 2:
        raise ValueError(f"{expected}, got {r!r}")
    lo, hi = check_real(r[0], f"{name}[0]"), check_real(r[1], f"{name}[1]")
    if not (low <= lo <= hi and math.isfinite(hi)):
        raise ValueError(f"{expected}, got {r!r}")
    return lo, hi


def _gate(p: float, batch_size: int, device: torch.device, generator: torch.Generator | None):
    return _uniform(batch_size, device, generator) < p


def _uniform(
    shape: int | tuple[int, ...],
    device: torch.device,
    generator: torch.Generator | None,
    low: float = 0.0,
    high: float = 1.0,
) -> Tensor:
    gen_device = generator.device if generator is not None else device
    u = torch.rand(shape, generator=generator, device=gen_device).to(device)
    return low + (high - low) * u


class ParamOp(nn.Module):
    """Base class: an operation that owns ``fields`` of the parameter vector.

    Subclasses implement :meth:`_draw` (draw encoded parameters for a batch shape) and
    :meth:`apply` (apply encoded parameters); :meth:`check_values` when replayed parameters
    have a restricted domain. Parameters are float32 on the images' device. Operations are
    composed with :class:`~equimod_plugin.augment.pipeline.ParamAugment`, whose layout
    concatenates their fields in order.

    Example:
        >>> import torch
        >>> from equimod_plugin.augment import ParamAugment
        >>> aug = ParamAugment([RandomResizedCrop(16), HorizontalFlip(), RandomGrayscale(0.5)])
        >>> views, params = aug(torch.rand(4, 3, 32, 32))
        >>> views.shape, list(aug.layout.fields), params.shape
        (torch.Size([4, 3, 16, 16]), ['crop', 'flip', 'grayscale'], torch.Size([4, 6]))
    """

    fields: tuple[Field, ...]

    @property
    def param_dim(self) -> int:
        """Number of parameter columns this operation owns (the widths of its fields)."""
        return sum(f.width for f in self.fields)

    def sample(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw encoded parameters ``(B, param_dim)`` for the images ``x`` ``(B, 3, H, W)``.

        Only the batch size, image size and device of ``x`` are used (see
        :meth:`sample_params`); ``generator`` is an optional ``torch.Generator`` for the draws.
        """
        b, _, height, width = x.shape
        return self._draw(b, height, width, x.device, generator)

    def sample_params(
        self,
        batch_size: int,
        image_size: tuple[int, int] | int,
        *,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw encoded parameters ``(batch_size, param_dim)`` for images of ``image_size``.

        The same draws as :meth:`sample` on a batch of that shape on ``device`` (default:
        torch's default device), without allocating images.

        Example:
            >>> import torch
            >>> flip = HorizontalFlip(p=1.0)
            >>> flip.sample_params(3, (32, 32)).tolist()
            [[1.0], [1.0], [1.0]]
        """
        b = check_int(batch_size, "batch_size", minimum=0)
        height, width = check_size(image_size, "image_size")
        dev = torch.device(device) if device is not None else torch.get_default_device()
        return self._draw(b, height, width, dev, generator)

    def _draw(
        self,
        batch_size: int,
        height: int,
        width: int,
        device: torch.device,
        generator: torch.Generator | None,
    ) -> Tensor:  # pragma: no cover - interface
        """Encoded parameters ``(batch_size, param_dim)`` for images ``height x width``.

        Depends only on its arguments (and the state of ``generator``, or of the global RNG
        of ``device`` when it is ``None``); the draws must come in a fixed order.
        """
        raise NotImplementedError

    def apply(self, x: Tensor, params: Tensor) -> Tensor:  # pragma: no cover - interface
        """Apply encoded parameters ``(B, param_dim)`` to ``x`` ``(B, 3, H, W)`` in [0, 1]."""
        raise NotImplementedError

    def check_values(self, params: Tensor, image_size: tuple[int, int]) -> None:
        """Raise a ``ValueError`` when replayed ``params`` are outside this op's domain.

        ``image_size`` is the ``(H, W)`` of the images the parameters are applied to.
        """

    def _check_flags(self, flags: Tensor, column: str) -> None:
        if not bool(((flags == 0) | (flags == 1)).all()):
            raise ValueError(f"params column {column!r} must hold 0 or 1, got {flags.unique()}")


class RandomResizedCrop(ParamOp):
    """torchvision's ``RandomResizedCrop``, batched: field ``crop`` = (top, left, height, width).

    The box is sampled exactly as torchvision does (10 tries of area ``scale`` and log-uniform
    aspect ``ratio``, integer pixels, central-crop fallback), then resampled for the whole
    batch in one ``grid_sample`` call.

    Args:
        size: output size, ``int`` or ``(height, width)``.
        scale: range of the box area as a fraction of the image area.
        ratio: range of the box aspect ratio (width / height).
        interpolation: ``"bilinear"`` (torchvision's default) or ``"bicubic"``.
        encoding: ``"normalized"``: box as fractions of the image height and width;
            ``"official"``: box in pixels of the input image.

    Example:
        >>> import torch
        >>> crop = RandomResizedCrop(16, scale=(0.5, 1.0))
        >>> x = torch.rand(4, 3, 32, 32)
        >>> params = crop.sample(x)  # (4, 4): top, left, height, width as fractions
        >>> crop.apply(x, params).shape
        torch.Size([4, 3, 16, 16])
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        interpolation: str = "bilinear",
        encoding: Encoding = "normalized",
    ) -> None:
        super().__init__()
        self.size = check_size(size, "size")
        self.scale = _check_range(scale, "scale")
        if self.scale[1] > 1 or self.scale[0] <= 0:
            raise ValueError(f"scale must lie in (0, 1], got {scale}")
        self.ratio = _check_range(ratio, "ratio")
        if self.ratio[0] <= 0:
            raise ValueError(f"ratio must be positive, got {ratio}")
        if interpolation not in ("bilinear", "bicubic"):
            raise ValueError(
                f"interpolation must be 'bilinear' or 'bicubic', got {interpolation!r}"
            )
        self.interpolation = interpolation
        self.encoding = _check_encoding(encoding)
        if encoding == "normalized":
            identity, unit = (0.0, 0.0, 1.0, 1.0), "fractions of the input height/width"
        else:
            identity = (0.0, 0.0, float(self.size[0]), float(self.size[1]))
            unit = "pixels of the input image (identity assumes input size = output size)"
        self.fields = (
            Field("crop", ("top", "left", "height", "width"), identity, f"crop box, {unit}"),
        )

    def _boxes(self, params: Tensor, height: int, width: int) -> Tensor:
        if self.encoding == "official":
            return params.round()
        scale = params.new_tensor([height, width, height, width])
        return (params * scale).round()

    def _draw(
        self,
        batch_size: int,
        height: int,
        width: int,
        device: torch.device,
        generator: torch.Generator | None,
    ) -> Tensor:
        b, tries = batch_size, 10
        area = height * width
        target = area * _uniform((b, tries), device, generator, *self.scale)
        log_r = _uniform(
            (b, tries), device, generator, math.log(self.ratio[0]), math.log(self.ratio[1])
        )
        aspect = log_r.exp()
        w = (target * aspect).sqrt().round()
        h = (target / aspect).sqrt().round()
        ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = ok.float().argmax(dim=1, keepdim=True)
        found = ok.any(dim=1)
        h, w = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)
        top = (_uniform(b, device, generator) * (height - h + 1)).floor()
        left = (_uniform(b, device, generator) * (width - w + 1)).floor()
        # torchvision's fallback: the largest central box whose aspect lies within ``ratio``
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            fw, fh = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            fh, fw = height, round(height * self.ratio[1])
        else:
            fw, fh = width, height
        fallback = torch.tensor(
            [(height - fh) // 2, (width - fw) // 2, fh, fw], dtype=h.dtype, device=device
        )
        boxes = torch.stack((top, left, h, w), dim=1)
        boxes = torch.where(found[:, None], boxes, fallback)
        if self.encoding == "official":
            return boxes
        return boxes / boxes.new_tensor([height, width, height, width])

    def apply(self, x: Tensor, params: Tensor) -> Tensor:
        boxes = self._boxes(params, x.shape[2], x.shape[3])
        return AF.resized_crop(x, boxes, self.size, self.interpolation)

    def check_values(self, params: Tensor, image_size: tuple[int, int]) -> None:
        top, left, h, w = params.unbind(-1)
        if self.encoding == "normalized":
            ok = (h > 0) & (w > 0) & (top >= 0) & (left >= 0) & (top + h <= 1) & (left + w <= 1)
            if not bool(ok.all()):
                raise ValueError(
                    "params field 'crop' must be boxes (top, left, height, width) inside the "
                    "image, as fractions in [0, 1] with positive height and width"
                )
            return
        height, width = image_size
        ok = (params == params.round()).all(dim=1) & (h >= 1) & (w >= 1) & (top >= 0)
        ok &= (left >= 0) & (top + h <= height) & (left + w <= width)
        if not bool(ok.all()):
            row = int((~ok).nonzero()[0, 0])
            raise ValueError(
                "params field 'crop' (columns crop.top, crop.left, crop.height, crop.width) "
                "must be boxes in whole pixels inside the input image of (height, width) "
                f"{(height, width)}, with height and width >= 1 (encoding 'official'); got "
                f"{params[row].tolist()} in row {row}. Official boxes are pixels of the image "
                "they were sampled for: replay them at that image size"
            )


class HorizontalFlip(ParamOp):
    """Random horizontal flip with probability ``p``; field ``flip`` = 1 when flipped.

    Example:
        >>> import torch
        >>> x = torch.rand(2, 3, 8, 8)
        >>> torch.equal(HorizontalFlip().apply(x, torch.ones(2, 1)), x.flip(-1))
        True
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = _check_probability(p, "p")
        self.fields = (Field("flip", ("applied",), (0.0,), "1 if mirrored left-right"),)

    def _draw(
        self,
        batch_size: int,
        height: int,
        width: int,
        device: torch.device,
        generator: torch.Generator | None,
    ) -> Tensor:
        return _gate(self.p, batch_size, device, generator).float()[:, None]

    def apply(self, x: Tensor, params: Tensor) -> Tensor:
        return AF.hflip(x, params[:, 0] > 0.5)

    def check_values(self, params: Tensor, image_size: tuple[int, int]) -> None:
        self._check_flags(params[:, 0], "flip.applied")


class ColorJitter(ParamOp):
    """torchvision's ``RandomApply([ColorJitter(...)], p)`` with a random order per sample.

    Fields: ``color_jitter`` (1 if applied), ``jitter_order`` (the permutation of brightness 0,
    contrast 1, saturation 2, hue 3: operation applied at each step) and ``jitter_factors``
    (brightness, contrast, saturation, hue). Factors are drawn like torchvision's:
    ``U[max(0, 1 - s), 1 + s]`` for the first three, ``U[-hue, hue]`` for the hue (in turns).

    Encodings: ``"normalized"`` stores the factors minus their identity (so 0 = no change)
    and the order as ``(k - 1.5) / 1.5`` in [-1, 1]; ``"official"`` stores raw factors and
    integer order. Not applied: identity order and factors.

    Args:
        brightness, contrast, saturation, hue: jitter strengths (torchvision's meaning).
        p: probability of applying the jitter.
        encoding: ``"normalized"`` or ``"official"``.

    Example:
        >>> import torch
        >>> jitter = ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.0)
        >>> params = jitter.sample(torch.rand(4, 3, 8, 8))
        >>> params.shape, params[:, 0].tolist()  # applied, order (4), factors (4)
        (torch.Size([4, 9]), [1.0, 1.0, 1.0, 1.0])
    """

    def __init__(
        self,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.4,
        hue: float = 0.1,
        p: float = 0.8,
        encoding: Encoding = "normalized",
    ) -> None:
        super().__init__()
        for name, value in (
            ("brightness", brightness),
            ("contrast", contrast),
            ("saturation", saturation),
        ):
            value = check_real(value, name)
            if not (value >= 0 and math.isfinite(value)):  # rejects NaN and Inf too
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if not 0 <= check_real(hue, "hue") <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5] (turns), got {hue}")
        self.strengths = (float(brightness), float(contrast), float(saturation), float(hue))
        self.p = _check_probability(p, "p")
        self.encoding = _check_encoding(encoding)
        if encoding == "normalized":
            order_id = tuple((k - 1.5) / 1.5 for k in range(4))
            factor_id, factor_desc = (0.0, 0.0, 0.0, 0.0), "factor - 1 (hue: shift in turns)"
            order_desc = "op at each step, (k - 1.5) / 1.5 for k in 0..3"
        else:
            order_id = (0.0, 1.0, 2.0, 3.0)
            factor_id, factor_desc = (1.0, 1.0, 1.0, 0.0), "raw factors (hue: shift in turns)"
            order_desc = "op at each step, 0 brightness 1 contrast 2 saturation 3 hue"
        self.fields = (
            Field("color_jitter", ("applied",), (0.0,), "1 if colour jitter was applied"),
            Field("jitter_order", ("step0", "step1", "step2", "step3"), order_id, order_desc),
            Field(
                "jitter_factors",
                ("brightness", "contrast", "saturation", "hue"),
                factor_id,
                factor_desc,
            ),
        )

    def _draw(
        self,
        batch_size: int,
        height: int,
        width: int,
        device: torch.device,
        generator: torch.Generator | None,
    ) -> Tensor:
        b, dev = batch_size, device
        applied = _gate(self.p, b, dev, generator)
        order = _uniform((b, 4), dev, generator).argsort(dim=1).float()
        bs, cs, ss, hs = self.strengths
        factors = torch.stack(
            [
                _uniform(b, dev, generator, max(0.0, 1 - bs), 1 + bs),
                _uniform(b, dev, generator, max(0.0, 1 - cs), 1 + cs),
                _uniform(b, dev, generator, max(0.0, 1 - ss), 1 + ss),
                _uniform(b, dev, generator, -hs, hs),
            ],
            dim=1,
        )
        order = torch.where(applied[:, None], order, torch.arange(4.0, device=dev))
        factors = torch.where(applied[:, None], factors, factors.new_tensor([1.0, 1.0, 1.0, 0.0]))
        if self.encoding == "normalized":
            order = (order - 1.5) / 1.5
            factors = factors - factors.new_tensor([1.0, 1.0, 1.0, 0.0])
        return torch.cat([applied.float()[:, None], order, factors], dim=1)

    def _decode(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        applied, order, factors = params[:, 0] > 0.5, params[:, 1:5], params[:, 5:9]
        if self.encoding == "normalized":
            order = order * 1.5 + 1.5
            factors = factors + factors.new_tensor([1.0, 1.0, 1.0, 0.0])
        return applied, order.round().long(), factors

    def apply(self, x: Tensor, params: Tensor) -> Tensor:
        applied, order, factors = self._decode(params)
        return AF.color_jitter(x, applied, order, factors)

    def check_values(self, params: Tensor, image_size: tuple[int, int]) -> None:
        self._check_flags(params[:, 0], "color_jitter.applied")
        _, order, factors = self._decode(params)
        if not bool((order.sort(dim=1).values == torch.arange(4, device=order.device)).all()):
            raise ValueError("params field 'jitter_order' must encode a permutation of 0, 1, 2, 3")
        if not bool((factors[:, :3] >= 0).all()):
            raise ValueError("params field 'jitter_factors' must give non-negative factors")


class RandomGrayscale(ParamOp):
    """torchvision's ``RandomGrayscale(p)``; field ``grayscale`` = 1 when applied.

    Example:
        >>> import torch
        >>> grey = RandomGrayscale().apply(torch.rand(2, 3, 8, 8), torch.ones(2, 1))
        >>> torch.equal(grey[:, 0], grey[:, 1])
        True
    """

    def __init__(self, p: float = 0.2) -> None:
        super().__init__()
        self.p = _check_probability(p, "p")
        self.fields = (Field("grayscale", ("applied",), (0.0,), "1 if converted to grey"),)

    def _draw(
        self,
        batch_size: int,
        height: int,
        width: int,
        device: torch.device,
        generator: torch.Generator | None,
    ) -> Tensor:
        return _gate(self.p, batch_size, device, generator).float()[:, None]

    def apply(self, x: Tensor, params: Tensor) -> Tensor:
        return AF.random_grayscale(x, params[:, 0] > 0.5)

    def check_values(self, params: Tensor, image_size: tuple[int, int]) -> None:
        self._check_flags(params[:, 0], "grayscale.applied")


class GaussianBlur(ParamOp):
    """Random Gaussian blur; field ``blur`` = (applied, sigma), sigma 0 when not applied.

    Args:
        p: probability of blurring.
        kernel_size: odd number of taps (BYOL/SimCLR ImageNet at 224 px: 23; CIFAR: 3). The
            reflect padding of ``kernel_size // 2`` pixels must be smaller than the images'
            height and width: :class:`~equimod_plugin.augment.pipeline.ParamAugment` checks
            it against the views' size when built, :meth:`apply` against the images.
        sigma: range of the standard deviation, drawn uniformly (lightly's default (0.1, 2)).

    Example:
        >>> import torch
        >>> blur = GaussianBlur(p=1.0, kernel_size=3)
        >>> params = blur.sample(torch.rand(4, 3, 8, 8))  # (4, 2): applied, sigma
        >>> bool((params[:, 1] >= 0.1).all() and (params[:, 1] <= 2).all())
        True
    """

    def __init__(
        self, p: float = 0.5, kernel_size: int = 23, sigma: tuple[float, float] = (0.1, 2.0)
    ) -> None:
        super().__init__()
        self.p = _check_probability(p, "p")
        if check_int(kernel_size, "kernel_size") % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size}")
        self.kernel_size = int(kernel_size)
        self.sigma = _check_range(sigma, "sigma")
        if self.sigma[0] <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        self.fields = (
            Field("blur", ("applied", "sigma"), (0.0, 0.0), "1 if blurred; its sigma in pixels"),
        )

    def _draw(
        self,
        batch_size: int,
        height: int,
        width: int,
        device: torch.device,
        generator: torch.Generator | None,
    ) -> Tensor:
        applied = _gate(self.p, batch_size, device, generator)
        sigma = _uniform(batch_size, device, generator, *self.sigma)
        return torch.stack([applied.float(), torch.where(applied, sigma, 0.0)], dim=1)

    def check_image_size(self, size: tuple[int, int], what: str = "images") -> None:
        """Raise a ``ValueError`` unless the kernel's reflect padding fits ``size`` ``(h, w)``.

        Example:
            >>> blur = GaussianBlur(kernel_size=23)
            >>> blur.check_image_size((11, 11), "views")  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            ValueError: GaussianBlur kernel_size 23 does not fit views of size (11, 11): ...
        """
        pad = self.kernel_size // 2
        if pad >= min(size):
            raise ValueError(
                f"GaussianBlur kernel_size {self.kernel_size} does not fit {what} of size "
                f"{tuple(size)}: its reflect padding of {pad} pixels needs a height and width "
                f"of at least {pad + 1}; use an odd kernel_size <= {2 * min(size) - 1}"
            )

    def apply(self, x: Tensor, params: Tensor) -> Tensor:
        self.check_image_size((x.shape[2], x.shape[3]))
        return AF.gaussian_blur(x, params[:, 0] > 0.5, params[:, 1], self.kernel_size)

    def check_values(self, params: Tensor, image_size: tuple[int, int]) -> None:
        self._check_flags(params[:, 0], "blur.applied")
        if not bool((params[params[:, 0] > 0.5, 1] > 0).all()):
            raise ValueError("params field 'blur' must have sigma > 0 where applied")


class RandomSolarize(ParamOp):
    """Random solarisation (BYOL): invert pixels ``>= threshold``; field ``solarize``.

    Example:
        >>> import torch
        >>> x = torch.tensor([0.2, 0.7]).view(1, 1, 1, 2).expand(1, 3, 1, 2)
        >>> RandomSolarize().apply(x, torch.ones(1, 1))[0, 0, 0].tolist()
        [0.20000000298023224, 0.30000001192092896]
    """

    def __init__(self, p: float = 0.2, threshold: float = 0.5) -> None:
        super().__init__()
        self.p = _check_probability(p, "p")
        if not 0 <= check_real(threshold, "threshold") <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.threshold = float(threshold)
        self.fields = (Field("solarize", ("applied",), (0.0,), "1 if solarised"),)

    def _draw(
        self,
        batch_size: int,
        height: int,
        width: int,
        device: torch.device,
        generator: torch.Generator | None,
    ) -> Tensor:
        return _gate(self.p, batch_size, device, generator).float()[:, None]

    def apply(self, x: Tensor, params: Tensor) -> Tensor:
        return AF.solarize(x, params[:, 0] > 0.5, self.threshold)

    def check_values(self, params: Tensor, image_size: tuple[int, int]) -> None:
        self._check_flags(params[:, 0], "solarize.applied")
