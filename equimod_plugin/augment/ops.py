"""Augmentation operations: draw named raw parameters, apply them.

Each operation draws its parameters with torchvision's distributions as *raw* values in
natural units (a dict: crop box in pixels, flip flag, jitter factors and order, blur sigma)
and applies raw values; it declares them as fields of the parameter vector (see
:class:`~equimod_plugin.augment.layout.ParamLayout`), whose codecs write them in the
layout's encoding and read them back. The views are always computed from the *decoded*
encoding, so passing the encoded parameters back reproduces them bit for bit. The base class
writes once what every operation shares: the probability gate (a gated-off sample gets the
identity values), encoding, decoding and the checks of replayed values.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from equimod_plugin.augment import functional as AF
from equimod_plugin.augment.layout import (
    BASE_ENCODINGS,
    STANDARDIZED,
    Codec,
    Encoding,
    Field,
    FieldSpec,
    Standardization,
    Value,
)

__all__ = [
    "ColorJitter",
    "GaussianBlur",
    "HorizontalFlip",
    "Knob",
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


class Batch(NamedTuple):
    """The shape of a batch parameters are drawn for: ``size`` images ``height x width``."""

    size: int
    height: int
    width: int
    device: torch.device

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self.height, self.width


def batch_shape(
    batch_size: int, image_size: tuple[int, int] | int, device: torch.device | str | None
) -> Batch:
    """The checked :class:`Batch` of ``batch_size`` images of ``image_size`` on ``device``.

    ``device`` ``None`` is torch's default device.
    """
    b = check_int(batch_size, "batch_size", minimum=0)
    height, width = check_size(image_size, "image_size")
    dev = torch.device(device) if device is not None else torch.get_default_device()
    return Batch(b, height, width, dev)


class ParamSampler:
    """:meth:`sample_params`, shared by operations and pipelines (their ``_sample_batch``)."""

    def _sample_batch(self, batch: Batch, generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError  # pragma: no cover - interface

    def sample_params(
        self,
        batch_size: int,
        image_size: tuple[int, int] | int,
        *,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw encoded parameters ``(batch_size, P)`` for images of ``image_size``.

        The draws are those of ``sample`` on a ``(batch_size, 3, *image_size)`` batch on
        ``device`` with the same ``generator`` state (or global RNG state), at the memory
        cost of the parameters only.

        Args:
            batch_size: number of parameter rows, an int >= 0.
            image_size: ``(H, W)`` (or one int for square images) of the images the
                parameters are for: crop boxes depend on it.
            device: device of the parameters (default: torch's default device).
            generator: optional ``torch.Generator`` for the draws.

        Returns:
            ``(batch_size, P)`` float32 parameters (``P``: the operation's ``param_dim``).

        Example:
            >>> import torch
            >>> from equimod_plugin import augment
            >>> augment.HorizontalFlip(p=1.0).sample_params(3, (32, 32)).tolist()
            [[1.0], [1.0], [1.0]]
            >>> aug = augment.byol(32, view=2, variant="cifar")
            >>> p = aug.sample_params(4, (32, 32), generator=torch.Generator().manual_seed(0))
            >>> x = torch.zeros(4, 3, 32, 32)
            >>> torch.equal(p, aug.sample(x, generator=torch.Generator().manual_seed(0)))
            True
        """
        return self._sample_batch(batch_shape(batch_size, image_size, device), generator)


def _check_encoding(encoding: str) -> Encoding:
    if encoding == STANDARDIZED:
        raise ValueError(
            f"encoding {STANDARDIZED!r} needs per-column constants: build the operation with "
            "encoding='official' and call its standardize(constants), or use a preset "
            f"(augment.simclr / augment.byol with encoding={STANDARDIZED!r})"
        )
    if encoding not in BASE_ENCODINGS:
        raise ValueError(f"encoding must be one of {BASE_ENCODINGS}, got {encoding!r}")
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


def sweep_grid(low: float, high: float, steps: int, identity: float | None) -> list[float]:
    """``steps`` values evenly spaced over [low, high], plus ``identity`` if not among them.

    Example:
        >>> sweep_grid(0.6, 1.4, 3, 1.0), sweep_grid(0.1, 2.0, 3, None)
        ([0.6, 1.0, 1.4], [0.1, 1.05, 2.0])
    """
    values = torch.linspace(low, high, steps, dtype=torch.float64).tolist() if high > low else [low]
    values = [round(v, 12) for v in values]  # 0.8, not 0.7999999999999999
    if identity is not None:
        values = [identity if abs(v - identity) < 1e-9 else v for v in values] + [identity]
    return sorted(set(values))


@dataclass(frozen=True, eq=False)
class Knob:
    """One knob of an operation varied over a grid, as raw values (everything else identity).

    Attributes:
        name: e.g. ``"brightness"``.
        unit: what :attr:`values` measure, e.g. ``"factor (1 = identity)"``.
        values: the K grid values, in that unit.
        raw: raw values ``(K,)`` / ``(K, k)`` (float64 where continuous) that differ from the
            operation's identity; the missing ones are identity.
        image_size: ``(H, W)`` of the image the raw values are in pixels of (``None``: no
            value depends on it).
    """

    name: str
    unit: str
    values: tuple[float, ...]
    raw: dict[str, Tensor]
    image_size: tuple[int, int] | None = None


def _flag(name: str = "applied") -> Value:
    """A 0 / 1 raw flag, stored as is in every encoding."""
    return Value(name, ("applied",), "flag", (0.0,), {e: Codec() for e in BASE_ENCODINGS})


#: How far a standardised flag or crop pixel may decode from a whole number (float32
#: round-off of ``x * std + mean``; the official constants keep it below 1e-4).
_FLAG_TOLERANCE = 1e-3


class ParamOp(ParamSampler, nn.Module):
    """Base class: an operation that draws named raw parameters and applies them.

    A subclass declares its fields (:meth:`_declare`, with the raw :class:`Value` each column
    stores and the codecs of every encoding), implements :meth:`_draw` (raw values for a
    batch shape, in natural units) and :meth:`apply_transform` (apply raw values), and
    optionally :meth:`check_raw` (the domain of replayed values) and :meth:`sweeps` (how the
    per-augmentation report varies it). With a probability :attr:`p` the base class draws the
    gate first and gives the samples it leaves out the identity values; it encodes the raw
    values in the layout's encoding and decodes them before applying, so sampled and replayed
    views are the same computation. Parameters are float32 on the images' device. Operations
    are composed with :class:`~equimod_plugin.augment.pipeline.ParamAugment`, whose layout
    concatenates their fields in order.

    Example:
        >>> import torch
        >>> from equimod_plugin.augment import ParamAugment
        >>> aug = ParamAugment([RandomResizedCrop(16), HorizontalFlip(), RandomGrayscale(0.5)])
        >>> views, params = aug(torch.rand(4, 3, 32, 32))
        >>> views.shape, list(aug.layout.fields), params.shape
        (torch.Size([4, 3, 16, 16]), ['crop', 'flip', 'grayscale'], torch.Size([4, 6]))
        >>> flip = HorizontalFlip(p=1.0)
        >>> flip.draw(Batch(2, 8, 8, torch.device("cpu")), None)
        {'applied': tensor([True, True])}
    """

    fields: tuple[Field, ...]
    #: probability of applying the operation; ``None``: always applied (no gate is drawn).
    p: float | None = None
    #: the encoding the operation's fields are in; ``None``: the same in every encoding.
    encoding: Encoding | None = None
    #: ``(H, W)`` its identity row is encoded for (the crop's output size); ``None``: any.
    identity_size: tuple[int, int] | None = None
    #: per-column ``(mean, std)`` of the ``"official_standardized"`` encoding, else ``None``.
    standardization: Standardization | None = None

    def _declare(self, *specs: FieldSpec) -> None:
        """Set :attr:`fields` from ``specs`` in :attr:`encoding` (normalized when ``None``)."""
        self._specs = specs
        self.fields = tuple(
            s.field(self.encoding or "normalized", self.identity_size, self.standardization)
            for s in specs
        )

    def standardize(self, constants: Standardization) -> ParamOp:
        """Switch to the ``"official_standardized"`` encoding, in place; returns ``self``.

        The official values of each column ``c`` are stored as ``(x - mean) / std`` with
        ``(mean, std) = constants["field.column"]`` (the official code's constants:
        :func:`equimod_plugin.augment.standardize.official_standardization`). The operation
        must be in the ``"official"`` encoding (or have the same fields in every encoding).

        Example:
            >>> flip = HorizontalFlip(p=1.0).standardize({"flip.applied": (0.5, 0.5)})
            >>> flip.encoding, flip.sample_params(2, 8).tolist()
            ('official_standardized', [[1.0], [1.0]])
        """
        if self.encoding not in (None, "official"):
            raise ValueError(
                f"only an operation in the 'official' encoding can be standardised; "
                f"{type(self).__name__} uses {self.encoding!r}"
            )
        self.encoding, self.standardization = STANDARDIZED, dict(constants)
        self._declare(*self._specs)
        return self

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
        return self._sample_batch(Batch(b, height, width, x.device), generator)

    def _sample_batch(self, batch: Batch, generator: torch.Generator | None) -> Tensor:
        return self.encode(self.draw(batch, generator), batch.image_size)

    def draw(self, batch: Batch, generator: torch.Generator | None) -> dict[str, Tensor]:
        """Named raw values for ``batch``: the gate, then :meth:`_draw`.

        With a probability :attr:`p`, ``"applied"`` ``(B,)`` is drawn first and the samples
        it leaves out get the identity of every other value.
        """
        if self.p is None:
            return self._draw(batch, generator)
        applied = _uniform(batch.size, batch.device, generator) < self.p
        raw = self._draw(batch, generator)
        identity = self.identity_raw(batch.image_size, batch.device)
        for name, value in raw.items():
            gate = applied.view(-1, *(1,) * (value.ndim - 1))
            raw[name] = torch.where(gate, value, identity[name])
        return {"applied": applied, **raw}

    def _draw(self, batch: Batch, generator: torch.Generator | None) -> dict[str, Tensor]:
        """Raw values other than the gate, ``(B,)`` / ``(B, k)`` each, in natural units.

        Depends only on its arguments (and the state of ``generator``, or of the global RNG
        of ``device`` when it is ``None``); the draws must come in a fixed order. Default:
        nothing (an operation whose only parameter is its gate).
        """
        return {}

    def identity_raw(
        self, image_size: tuple[int, int] | None, device: torch.device | str = "cpu"
    ) -> dict[str, Tensor]:
        """The raw values of "do nothing" on images of ``image_size``, one sample each."""
        return {
            v.name: v.identity_tensor(image_size, device) for f in self.fields for v, _ in f.parts
        }

    def encode(
        self, raw: dict[str, Tensor], size: tuple[int, int] | None, dtype=torch.float32
    ) -> Tensor:
        """Encoded parameters ``(B, param_dim)`` of raw values drawn for images of ``size``."""
        return torch.cat([f.encode(raw, size, dtype) for f in self.fields], dim=1)

    def decode(self, params: Tensor, image_size: tuple[int, int]) -> dict[str, Tensor]:
        """The raw values of encoded ``params`` ``(B, param_dim)`` for images ``image_size``."""
        raw, start = {}, 0
        for f in self.fields:
            raw.update(f.decode(params[:, start : start + f.width], image_size))
            start += f.width
        return raw

    def codec(self, name: str) -> Codec:
        """The codec of the raw value ``name`` in this operation's encoding."""
        return next(c for f in self.fields for v, c in f.parts if v.name == name)

    def apply(self, x: Tensor, params: Tensor) -> Tensor:
        """Apply encoded parameters ``(B, param_dim)`` to ``x`` ``(B, 3, H, W)`` in [0, 1]."""
        return self.apply_transform(x, self.decode(params, (x.shape[2], x.shape[3])))

    def apply_transform(
        self, x: Tensor, raw: dict[str, Tensor]
    ) -> Tensor:  # pragma: no cover - interface
        """Apply raw values (:meth:`draw`'s names) to ``x`` ``(B, 3, H, W)`` in [0, 1]."""
        raise NotImplementedError

    def check_values(self, params: Tensor, image_size: tuple[int, int]) -> None:
        """Raise a ``ValueError`` when replayed ``params`` are outside this op's domain.

        Flags must hold 0 or 1; then :meth:`check_raw` checks the decoded values.
        ``image_size`` is the ``(H, W)`` of the images the parameters are applied to.
        """
        start = 0
        for f in self.fields:
            for v, c in f.parts:
                if v.kind == "flag":
                    flags = c.decode(params[:, start : start + 1], image_size)[:, 0]
                    # raw flags exactly; standardised ones up to float32 round-off
                    tol = 0.0 if c.is_raw else _FLAG_TOLERANCE
                    if not bool((((flags).abs() <= tol) | ((flags - 1).abs() <= tol)).all()):
                        what = "hold 0 or 1" if c.is_raw else f"encode 0 or 1 ({f.description})"
                        raise ValueError(
                            f"params column '{f.name}.{v.columns[0]}' must {what}, got "
                            f"{params[:, start].unique()}"
                        )
                start += len(v.columns)
        self.check_raw(params, self.decode(params, image_size), image_size)

    def check_raw(
        self, params: Tensor, raw: dict[str, Tensor], image_size: tuple[int, int]
    ) -> None:
        """Raise a ``ValueError`` when the decoded ``raw`` of ``params`` are out of domain."""

    def sweeps(self, steps: int) -> list[Knob]:
        """The knobs the per-augmentation report varies, ``steps`` values per continuous one.

        Raises:
            TypeError: the operation declares no sweep.
        """
        raise TypeError(
            f"{type(self).__name__} declares no sweeps; pass "
            "sweeps=[Sweep(name, unit, values, params)] built from augment.identity_params"
        )

    def sweep_params(self, knob: Knob) -> Tensor:
        """Encoded parameters ``(K, param_dim)`` of ``knob``: identity but for its raw values.

        Encoded in float64 and rounded once to float32.
        """
        raw = {
            name: value.expand(len(knob.values), *value.shape)
            for name, value in self.identity_raw(knob.image_size).items()
        }
        raw.update(knob.raw)
        return self.encode(raw, knob.image_size, torch.float64).float()


class RandomResizedCrop(ParamOp):
    """torchvision's ``RandomResizedCrop``, batched: field ``crop`` = (top, left, height, width).

    The box is sampled exactly as torchvision does (10 tries of area ``scale`` and log-uniform
    aspect ``ratio``, integer pixels, central-crop fallback), then resampled for the whole
    batch in one ``grid_sample`` call. Raw value: ``box`` ``(B, 4)`` in pixels of the input.

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
        self.identity_size = self.size  # the official identity assumes input size = output
        pixels = "pixels of the input image (identity assumes input size = output size)"
        codecs = {
            "normalized": Codec(scale=("height", "width", "height", "width")),
            "official": Codec(whole=True),
        }
        box = Value(
            "box",
            ("top", "left", "height", "width"),
            "pixels",
            (0.0, 0.0, "height", "width"),
            codecs,
        )
        self._declare(
            FieldSpec(
                "crop",
                (box,),
                {
                    "normalized": "crop box, fractions of the input height/width",
                    "official": f"crop box, {pixels}",
                },
            )
        )

    def _draw(self, batch: Batch, generator: torch.Generator | None) -> dict[str, Tensor]:
        (b, height, width, device), tries = batch, 10
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
        return {"box": torch.where(found[:, None], boxes, fallback)}

    def apply_transform(self, x: Tensor, raw: dict[str, Tensor]) -> Tensor:
        return AF.resized_crop(x, raw["box"], self.size, self.interpolation)

    def check_raw(
        self, params: Tensor, raw: dict[str, Tensor], image_size: tuple[int, int]
    ) -> None:
        # the box in the encoding's own terms, so that no rounding decides: inside the encoded
        # whole image, positive height and width, whole numbers where the encoding stores them;
        # standardised pixels: the decoded box, whole up to float32 round-off
        codec = self.codec("box")
        box, whole_image = params, self.encode(self.identity_raw(image_size), image_size)[0]
        whole = box == box.round()
        if codec.whole and not codec.is_raw:
            box = codec.decode(params, image_size)
            whole = (box - box.round()).abs() <= _FLAG_TOLERANCE
            box, whole_image = box.round(), box.new_tensor((0, 0, *image_size))
        top, left, h, w = box.unbind(-1)
        ok = (h > 0) & (w > 0) & (top >= 0) & (left >= 0)
        ok &= (top + h <= whole_image[2]) & (left + w <= whole_image[3])
        if codec.whole:
            ok &= whole.all(dim=1)
        if not bool(ok.all()):
            row = int((~ok).nonzero()[0, 0])
            field = self.fields[0]
            raise ValueError(
                "params field 'crop' (columns crop.top, crop.left, crop.height, crop.width) "
                "must be boxes inside the input image of (height, width) "
                f"{tuple(image_size)}, with positive height and width (encoding "
                f"{self.encoding!r}: {field.description}); got {params[row].tolist()} in row "
                f"{row}. Boxes in pixels are pixels of the image they were sampled for: replay "
                "them at that image size"
            )

    def sweeps(self, steps: int) -> list[Knob]:
        """``crop_scale``: centred boxes of growing area; ``crop_x`` / ``crop_y``: a box of the
        mid-range area moved along x and y.

        The boxes are in pixels of an image of the output size (whole pixels) when the
        encoding stores whole pixels, else of a 1 x 1 image (the encoding stores fractions of
        the image, exactly).
        """
        whole = self.codec("box").whole
        image = self.size if whole else (1, 1)
        height, width = (float(v) for v in image)

        def box(side: float, length: float, centre: float) -> tuple[float, float]:
            """(start, size) of a box of ``side`` (fraction of ``length``) centred at ``centre``."""
            size = float(max(1, round(side * length))) if whole else side * length
            start = min(max(centre * length - size / 2, 0.0), length - size)
            return (float(round(start)) if whole else start), size

        def knob(name: str, unit: str, values: list[float], rows: list[tuple]) -> Knob:
            """``rows``: per value, ``((top, height), (left, width))``."""
            boxes = [(t, left, h, w) for (t, h), (left, w) in rows]
            raw = {"box": torch.tensor(boxes, dtype=torch.float64)}
            return Knob(name, unit, tuple(values), raw, image)

        scales = sweep_grid(self.scale[0], 1.0, steps, 1.0)
        side = (sum(self.scale) / 2) ** 0.5
        shifts = sweep_grid(-(1 - side) / 2, (1 - side) / 2, steps, None)
        unit = f"box centre - image centre, fraction of the {{}} (box area {side**2:.2f})"
        centred = (box(side, height, 0.5), box(side, width, 0.5))
        return [
            knob(
                "crop_scale",
                "area fraction of a centred box (1 = identity)",
                scales,
                [(box(v**0.5, height, 0.5), box(v**0.5, width, 0.5)) for v in scales],
            ),
            knob(
                "crop_x",
                unit.format("width"),
                shifts,
                [(centred[0], box(side, width, 0.5 + d)) for d in shifts],
            ),
            knob(
                "crop_y",
                unit.format("height"),
                shifts,
                [(box(side, height, 0.5 + d), centred[1]) for d in shifts],
            ),
        ]

    def sweep_params(self, knob: Knob) -> Tensor:
        """:meth:`ParamOp.sweep_params`, with each box kept inside the image after rounding."""
        p = super().sweep_params(knob)
        if self.codec("box").whole:  # whole pixels: decoded exactly, nothing to keep inside
            return p
        whole_image = self.encode(self.identity_raw(knob.image_size), knob.image_size)[0]
        p[:, 0] = torch.minimum(p[:, 0], whole_image[2] - p[:, 2])
        p[:, 1] = torch.minimum(p[:, 1], whole_image[3] - p[:, 3])
        return p


class _FlagOp(ParamOp):
    """An operation whose only parameter is its gate: one field, ``applied`` (0 / 1)."""

    field_name: str
    description: str
    unit = "0 / 1"

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = _check_probability(p, "p")
        self._declare(FieldSpec(self.field_name, (_flag(),), self.description))

    def sweeps(self, steps: int) -> list[Knob]:
        """The gate off and on: values 0, 1."""
        return [
            Knob(self.field_name, self.unit, (0.0, 1.0), {"applied": torch.tensor([False, True])})
        ]


class HorizontalFlip(_FlagOp):
    """Random horizontal flip with probability ``p``; field ``flip`` = 1 when flipped.

    Example:
        >>> import torch
        >>> x = torch.rand(2, 3, 8, 8)
        >>> torch.equal(HorizontalFlip().apply(x, torch.ones(2, 1)), x.flip(-1))
        True
    """

    field_name, description, unit = "flip", "1 if mirrored left-right", "0 / 1 (mirrored)"

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(p)

    def apply_transform(self, x: Tensor, raw: dict[str, Tensor]) -> Tensor:
        return AF.hflip(x, raw["applied"])


class ColorJitter(ParamOp):
    """torchvision's ``RandomApply([ColorJitter(...)], p)`` with a random order per sample.

    Fields: ``color_jitter`` (1 if applied), ``jitter_order`` (the permutation of brightness 0,
    contrast 1, saturation 2, hue 3: operation applied at each step) and ``jitter_factors``
    (brightness, contrast, saturation, hue). Factors are drawn like torchvision's:
    ``U[max(0, 1 - s), 1 + s]`` for the first three, ``U[-hue, hue]`` for the hue (in turns).
    Raw values: ``applied`` ``(B,)``, ``order`` ``(B, 4)`` int64, ``factors`` ``(B, 4)``.

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
        ids = (1.0, 1.0, 1.0, 0.0)
        order = Value(
            "order",
            ("step0", "step1", "step2", "step3"),
            "index",
            (0.0, 1.0, 2.0, 3.0),
            {
                "normalized": Codec(shift=(1.5,) * 4, scale=(1.5,) * 4),
                "official": Codec(),
            },
        )
        factors = Value(
            "factors",
            ("brightness", "contrast", "saturation", "hue"),
            "real",
            ids,
            {"normalized": Codec(shift=ids), "official": Codec()},
        )
        self._declare(
            FieldSpec("color_jitter", (_flag(),), "1 if colour jitter was applied"),
            FieldSpec(
                "jitter_order",
                (order,),
                {
                    "normalized": "op at each step, (k - 1.5) / 1.5 for k in 0..3",
                    "official": "op at each step, 0 brightness 1 contrast 2 saturation 3 hue",
                },
            ),
            FieldSpec(
                "jitter_factors",
                (factors,),
                {
                    "normalized": "factor - 1 (hue: shift in turns)",
                    "official": "raw factors (hue: shift in turns)",
                },
            ),
        )

    def _ranges(self) -> list[tuple[float, float]]:
        """The sampling range of each factor (torchvision's)."""
        bs, cs, ss, hs = self.strengths
        return [(max(0.0, 1 - s), 1 + s) for s in (bs, cs, ss)] + [(-hs, hs)]

    def _draw(self, batch: Batch, generator: torch.Generator | None) -> dict[str, Tensor]:
        b, dev = batch.size, batch.device
        order = _uniform((b, 4), dev, generator).argsort(dim=1)
        factors = torch.stack([_uniform(b, dev, generator, *r) for r in self._ranges()], dim=1)
        return {"order": order, "factors": factors}

    def apply_transform(self, x: Tensor, raw: dict[str, Tensor]) -> Tensor:
        return AF.color_jitter(x, raw["applied"], raw["order"], raw["factors"])

    def check_raw(
        self, params: Tensor, raw: dict[str, Tensor], image_size: tuple[int, int]
    ) -> None:
        order, factors = raw["order"], raw["factors"]
        if not bool((order.sort(dim=1).values == torch.arange(4, device=order.device)).all()):
            raise ValueError("params field 'jitter_order' must encode a permutation of 0, 1, 2, 3")
        if not bool((factors[:, :3] >= 0).all()):
            raise ValueError("params field 'jitter_factors' must give non-negative factors")

    def sweeps(self, steps: int) -> list[Knob]:
        """Each factor over its sampling range, the jitter applied in the identity order (a
        factor of strength 0 has no sweep)."""
        names = ("brightness", "contrast", "saturation", "hue")
        units = ["factor (1 = identity)"] * 3 + ["shift in turns (0 = identity)"]
        identity = self.identity_raw(None)["factors"].double()
        out = []
        for k, (name, unit, (low, high)) in enumerate(
            zip(names, units, self._ranges(), strict=True)
        ):
            values = sweep_grid(low, high, steps, float(identity[k]))
            if len(values) < 2:
                continue  # strength 0: the factor never varies
            factors = identity.repeat(len(values), 1)
            factors[:, k] = torch.tensor(values, dtype=torch.float64)
            applied = factors[:, k] != identity[k]
            out.append(Knob(name, unit, tuple(values), {"applied": applied, "factors": factors}))
        return out


class RandomGrayscale(_FlagOp):
    """torchvision's ``RandomGrayscale(p)``; field ``grayscale`` = 1 when applied.

    Example:
        >>> import torch
        >>> grey = RandomGrayscale().apply(torch.rand(2, 3, 8, 8), torch.ones(2, 1))
        >>> torch.equal(grey[:, 0], grey[:, 1])
        True
    """

    field_name, description = "grayscale", "1 if converted to grey"

    def __init__(self, p: float = 0.2) -> None:
        super().__init__(p)

    def apply_transform(self, x: Tensor, raw: dict[str, Tensor]) -> Tensor:
        return AF.random_grayscale(x, raw["applied"])


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
        sigma_value = Value(
            "sigma", ("sigma",), "real", (0.0,), {e: Codec() for e in BASE_ENCODINGS}
        )
        self._declare(
            FieldSpec("blur", (_flag(), sigma_value), "1 if blurred; its sigma in pixels")
        )

    def _draw(self, batch: Batch, generator: torch.Generator | None) -> dict[str, Tensor]:
        return {"sigma": _uniform(batch.size, batch.device, generator, *self.sigma)}

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

    def apply_transform(self, x: Tensor, raw: dict[str, Tensor]) -> Tensor:
        self.check_image_size((x.shape[2], x.shape[3]))
        return AF.gaussian_blur(x, raw["applied"], raw["sigma"], self.kernel_size)

    def check_raw(
        self, params: Tensor, raw: dict[str, Tensor], image_size: tuple[int, int]
    ) -> None:
        if not bool((raw["sigma"][raw["applied"]] > 0).all()):
            raise ValueError("params field 'blur' must have sigma > 0 where applied")

    def sweeps(self, steps: int) -> list[Knob]:
        """``blur_sigma``: 0 (no blur), then sigma over its range."""
        values = [0.0, *sweep_grid(self.sigma[0], self.sigma[1], steps, None)]
        sigma = torch.tensor(values, dtype=torch.float64)
        raw = {"applied": sigma > 0, "sigma": sigma}
        return [Knob("blur_sigma", "sigma in pixels (0 = no blur)", tuple(values), raw)]


class RandomSolarize(_FlagOp):
    """Random solarisation (BYOL): invert pixels ``>= threshold``; field ``solarize``.

    Example:
        >>> import torch
        >>> x = torch.tensor([0.2, 0.7]).view(1, 1, 1, 2).expand(1, 3, 1, 2)
        >>> RandomSolarize().apply(x, torch.ones(1, 1))[0, 0, 0].tolist()
        [0.20000000298023224, 0.30000001192092896]
    """

    field_name, description = "solarize", "1 if solarised"

    def __init__(self, p: float = 0.2, threshold: float = 0.5) -> None:
        super().__init__(p)
        if not 0 <= check_real(threshold, "threshold") <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.threshold = float(threshold)

    def apply_transform(self, x: Tensor, raw: dict[str, Tensor]) -> Tensor:
        return AF.solarize(x, raw["applied"], self.threshold)
