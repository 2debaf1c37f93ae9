"""torchvision pipelines as parameter-recording augmentations: :func:`from_torchvision`.

A user's ``torchvision.transforms`` (v1) or ``torchvision.transforms.v2`` ``Compose`` becomes a
:class:`~equimod_plugin.augment.pipeline.ParamAugment` with the same operations, in the same
order, drawing from the same distributions, and recording what each sample received in the
fields the presets use (``crop``, ``flip``, ``color_jitter``, ``jitter_order``,
``jitter_factors``, ``grayscale``, ``blur``, ``solarize``). The operations of this library
follow torchvision's tensor formulas already; what differs is listed in
:func:`from_torchvision`.

torchvision is never imported here: its objects are recognised by their class name and
module (``torchvision.transforms...``), so the core package does not depend on it. The same
machinery converts lightly's recipes (:func:`~equimod_plugin.augment.lightly.from_lightly`).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from equimod_plugin.augment.adapt import as_range, assemble, check_encoding, check_fields
from equimod_plugin.augment.layout import Encoding, Standardization
from equimod_plugin.augment.ops import (
    ColorJitter,
    GaussianBlur,
    HorizontalFlip,
    ParamOp,
    RandomGrayscale,
    RandomResizedCrop,
    RandomSolarize,
    _check_range,
)
from equimod_plugin.augment.pipeline import ParamAugment

__all__ = ["TorchvisionColorJitter", "from_torchvision"]


class TorchvisionColorJitter(ColorJitter):
    """torchvision's ``ColorJitter`` with any factor ranges, one order per sample.

    The fields, encodings, formulas (torchvision's) and checks are those of
    :class:`~equimod_plugin.augment.ops.ColorJitter`; the factors are drawn uniformly from
    ``ranges``, the ``(min, max)`` torchvision's ``ColorJitter`` keeps (its ``brightness``,
    ``contrast``, ``saturation`` and ``hue`` attributes), exactly, instead of the base class's
    symmetric ``strengths``.

    Args:
        ranges: ``(min, max)`` of the brightness, contrast and saturation factors (1 =
            identity) and of the hue shift in turns (0 = identity, within [-0.5, 0.5]).
        p: probability of jittering a sample.
        encoding: ``"normalized"`` or ``"official"``.

    Example:
        >>> import torch
        >>> jitter = TorchvisionColorJitter([(0.6, 1.4), (0.8, 1.5), (1.0, 1.0), (-0.1, 0.05)])
        >>> x = torch.rand(4, 3, 8, 8)
        >>> params = jitter.sample(x)  # (4, 9): applied, order (4), factors (4)
        >>> jitter.apply(x, params).shape
        torch.Size([4, 3, 8, 8])
    """

    def __init__(
        self,
        ranges: Sequence[tuple[float, float]],
        p: float = 1.0,
        encoding: Encoding = "normalized",
    ) -> None:
        super().__init__(0.0, 0.0, 0.0, 0.0, p=p, encoding=encoding)
        del self.strengths  # the symmetric form; the ranges replace it
        names = ("brightness", "contrast", "saturation", "hue")
        if isinstance(ranges, str) or not isinstance(ranges, Sequence) or len(ranges) != 4:
            raise ValueError(f"ranges must be four (min, max) pairs ({names}), got {ranges!r}")
        checked = [_check_range(r, n) for r, n in zip(ranges[:3], names, strict=False)]
        hue = _check_range(ranges[3], "hue", low=-0.5)
        if hue[1] > 0.5:
            raise ValueError(f"hue must lie in [-0.5, 0.5] (turns), got {ranges[3]!r}")
        self.ranges: tuple[tuple[float, float], ...] = (*checked, hue)

    def _ranges(self) -> list[tuple[float, float]]:
        return list(self.ranges)


# --- walking a pipeline --------------------------------------------------------------------


def _family(obj: Any) -> str:
    """``"torchvision"``, ``"lightly"``, ``"kornia"`` or ``""``: where ``obj``'s class is from."""
    module = type(obj).__module__
    if module.startswith("torchvision.transforms"):
        return "torchvision"
    if module.startswith("lightly.transforms"):
        return "lightly"
    return "kornia" if module.partition(".")[0] == "kornia" else ""


@dataclass(frozen=True)
class _Step:
    """One operation of a pipeline, with where it sits and the gates around it.

    Attributes:
        where: its position, as the attribute path that reaches it (``pipeline.transforms[3]``).
        op: the torchvision or lightly object.
        p: the probability of the ``RandomApply`` containers around it (1 outside any).
        group: position of the outermost ``RandomApply`` with ``0 < p < 1`` around it, whose
            operations are applied together or not at all; ``None`` outside any.
    """

    where: str
    op: Any
    p: float = 1.0
    group: str | None = None

    @property
    def name(self) -> str:
        return type(self.op).__name__


#: Expands an object into ``(attribute path suffix, contents)``, or ``None`` for an operation.
Expand = Callable[[Any], "tuple[str, Any] | None"]


def _flatten(
    obj: Any, where: str, expand: Expand | None, p: float = 1.0, group: str | None = None
) -> Iterator[_Step]:
    """The operations of ``obj`` in order: ``Compose``, lists and ``RandomApply`` expanded."""
    family, name = _family(obj), type(obj).__name__
    if isinstance(obj, list | tuple):
        for i, child in enumerate(obj):
            yield from _flatten(child, f"{where}[{i}]", expand, p, group)
    elif family == "torchvision" and name == "Compose":
        for i, child in enumerate(obj.transforms):
            yield from _flatten(child, f"{where}.transforms[{i}]", expand, p, group)
    elif family == "torchvision" and name == "RandomApply":
        q = float(obj.p)
        inner = where if group is None and 0 < q < 1 else group
        for i, child in enumerate(obj.transforms):
            yield from _flatten(child, f"{where}.transforms[{i}]", expand, p * q, inner)
    elif family == "torchvision" and name in ("RandomChoice", "RandomOrder"):
        what = "one of its operations at random" if name == "RandomChoice" else "its operations"
        order = "" if name == "RandomChoice" else " in a random order"
        raise ValueError(
            f"{where} ({name}) applies {what}{order}; the adapter applies every operation in "
            "the order written, each with its own probability: write them in a Compose (a "
            "probability as RandomApply([op], p))"
        )
    elif expand is not None and (inner_obj := expand(obj)) is not None:
        suffix, contents = inner_obj
        yield from _flatten(contents, f"{where}{suffix}", expand, p, group)
    else:
        yield _Step(where, obj, p, group)


def _probability(m: Any) -> float | None:
    """The probability of applying ``m`` if it has one (torchvision's ``p``, lightly's ``prob``)."""
    value = getattr(m, "p", getattr(m, "prob", None))
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def _is_float_dtype(dtype: Any) -> bool:
    """Whether ``dtype`` (a ``torch.dtype`` or torchvision's per-type dict) gives floats."""
    if isinstance(dtype, dict):
        return any(_is_float_dtype(d) for d in dtype.values() if d is not None)
    return isinstance(dtype, torch.dtype) and dtype.is_floating_point


def _to_unit_floats(step: _Step) -> bool:
    """Whether ``step`` converts PIL / ``uint8`` images to floats in [0, 1]."""
    if _family(step.op) != "torchvision":
        return False
    if step.name == "ToTensor":
        return True
    if step.name == "ToDtype":
        return bool(step.op.scale) and _is_float_dtype(step.op.dtype)
    return step.name == "ConvertImageDtype" and _is_float_dtype(step.op.dtype)


# --- converters: one torchvision (or lightly) operation -> one operation here -----------------


@dataclass
class _Context:
    """What the converters of one call share.

    Attributes:
        adapter: ``"from_torchvision"`` or ``"from_lightly"``, named in messages.
        encoding: the operations' encoding (``"official"`` for the standardised one).
        options: the adapter's own options (e.g. lightly's ``blur_kernel``; ``hints``: what
            to do about an operation that cannot be encoded, by class name).
        notes: what a converter records for the adapter (e.g. the normalisation it found).
    """

    adapter: str
    encoding: Encoding
    options: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


#: ``(operation, position, probability, value scale, context) -> operation here or None``.
#: The probability is that of the ``RandomApply`` containers around it; the value scale is
#: 255 where the images are PIL / ``uint8``, 1 where they are floats in [0, 1], ``None`` when
#: the pipeline does not say. ``None``: nothing to encode (a type conversion).
Converter = Callable[[Any, str, float, "float | None", _Context], "ParamOp | None"]


def _interpolation(m: Any) -> str:
    """torchvision's ``interpolation`` (an ``InterpolationMode`` or its value) as a name."""
    mode = m.interpolation
    return str(getattr(mode, "value", mode)).lower()


def _convert_crop(
    m: Any, where: str, p: float, scale: float | None, ctx: _Context
) -> RandomResizedCrop:
    if p != 1:
        raise ValueError(
            f"{where} (RandomResizedCrop) is inside a RandomApply with p={p}; the crop sets the "
            "views' size and always applies: take it out of the RandomApply"
        )
    interpolation = _interpolation(m)
    if interpolation not in ("bilinear", "bicubic"):
        raise ValueError(
            f"{where} (RandomResizedCrop): interpolation={interpolation!r} is not supported; use "
            "'bilinear' or 'bicubic'"
        )
    return RandomResizedCrop(
        tuple(int(s) for s in m.size),
        as_range(m.scale),
        as_range(m.ratio),
        interpolation,
        ctx.encoding,
    )


def _convert_flip(m: Any, where: str, p: float, scale: float | None, ctx: _Context) -> ParamOp:
    return HorizontalFlip(p * float(m.p))


def _convert_jitter(
    m: Any, where: str, p: float, scale: float | None, ctx: _Context
) -> ParamOp | None:
    attrs = (m.brightness, m.contrast, m.saturation, m.hue)
    if all(a is None for a in attrs):
        return None  # ColorJitter() changes nothing
    neutral = ((1.0, 1.0),) * 3 + ((0.0, 0.0),)
    ranges = [n if a is None else as_range(a) for a, n in zip(attrs, neutral, strict=True)]
    return TorchvisionColorJitter(ranges, p=p, encoding=ctx.encoding)


def _convert_grayscale(m: Any, where: str, p: float, scale: float | None, ctx: _Context) -> ParamOp:
    return RandomGrayscale(p * float(m.p))


def _convert_blur(m: Any, where: str, p: float, scale: float | None, ctx: _Context) -> ParamOp:
    size = tuple(int(k) for k in m.kernel_size)
    if len(size) != 2 or size[0] != size[1]:
        raise ValueError(
            f"{where} (GaussianBlur): kernel_size={size!r} is not square; the adapter encodes "
            "a square kernel (an odd int)"
        )
    return GaussianBlur(p, size[0], as_range(m.sigma))


def _threshold(value: float, scale: float | None) -> float:
    """A solarize threshold in [0, 1], from one given on ``scale`` (see :data:`Converter`)."""
    value = float(value)
    if scale is None:  # no type conversion in the pipeline: read from the value
        scale = 255.0 if value > 1 else 1.0
    if not 0 <= value / scale <= 1:
        raise ValueError(f"threshold={value} is outside the images' range [0, {scale:g}] there")
    return value / scale


def _convert_solarize(m: Any, where: str, p: float, scale: float | None, ctx: _Context) -> ParamOp:
    return RandomSolarize(p * float(m.p), _threshold(m.threshold, scale))


def _convert_dtype(
    m: Any, where: str, p: float, scale: float | None, ctx: _Context
) -> ParamOp | None:
    if not _is_float_dtype(m.dtype):
        raise ValueError(
            f"{where} ({type(m).__name__}): dtype={m.dtype} is not a float type; the views are "
            "made from float images in [0, 1]"
        )
    return None


def _ignore(m: Any, where: str, p: float, scale: float | None, ctx: _Context) -> None:
    """A type conversion: the on-device pipeline takes float images in [0, 1] already."""
    return None


def _normalize_values(m: Any) -> tuple[list[float], list[float]]:
    """``(mean, std)`` of a ``Normalize``, rounded for messages."""
    mean = [round(float(v), 6) for v in torch.as_tensor(m.mean).flatten()]
    std = [round(float(v), 6) for v in torch.as_tensor(m.std).flatten()]
    return mean, std


def _reject_normalize(m: Any, where: str, p: float, scale: float | None, ctx: _Context) -> None:
    mean, std = _normalize_values(m)
    raise ValueError(
        f"{where} (Normalize): Normalize is the normalisation, not an augmentation: the branch "
        "normalises the originals and the views after augmenting. Remove it from the pipeline "
        f"and pass normalize=augment.Normalize({mean}, {std}) to attach / make_branch instead"
    )


#: torchvision's operations (v1 and v2 share the names), by class name.
TORCHVISION: dict[str, Converter] = {
    "RandomResizedCrop": _convert_crop,
    "RandomHorizontalFlip": _convert_flip,
    "ColorJitter": _convert_jitter,
    "RandomGrayscale": _convert_grayscale,
    "GaussianBlur": _convert_blur,
    "RandomSolarize": _convert_solarize,
    "ToTensor": _ignore,
    "PILToTensor": _ignore,
    "ToImage": _ignore,
    "ToPureTensor": _ignore,
    "Identity": _ignore,
    "ToDtype": _convert_dtype,
    "ConvertImageDtype": _convert_dtype,
    "Normalize": _reject_normalize,
}
_CONVERSIONS = ("ToTensor", "PILToTensor", "ToImage", "ToDtype", "ConvertImageDtype")
#: What to do instead of operations users often have in a recipe.
_HINTS = {
    name: "resizing is the originals' transform (attach returns one): remove it from the pipeline"
    for name in ("Resize", "CenterCrop")
}


def _supported(converters: dict[tuple[str, str], Converter]) -> str:
    """The operations ``converters`` encode, for messages."""
    names = [n for (_, n), c in converters.items() if c is not _ignore and n != "Normalize"]
    return ", ".join(dict.fromkeys(n for n in names if n not in _CONVERSIONS))


def _unknown(step: _Step, ctx: _Context, converters: dict[tuple[str, str], Converter]) -> Exception:
    """The error for an operation no converter takes."""
    family, adapter = _family(step.op), ctx.adapter
    if family == "lightly" and adapter != "from_lightly":
        return TypeError(
            f"{step.where} ({step.name}) is lightly's operation: convert the recipe with "
            "equimod_plugin.augment.from_lightly(transform)"
        )
    hints = {**_HINTS, **ctx.options.get("hints", {})}
    what = hints.get(step.name, "remove it from the pipeline, or give it probability 0")
    return TypeError(
        f"{step.where} ({step.name}) cannot be encoded: {adapter} converts "
        f"{_supported(converters)} (with RandomApply) and skips type conversions (ToTensor, "
        f"ToImage, ToDtype, ...): {what}"
    )


def _convert_steps(
    steps: Sequence[_Step], converters: dict[tuple[str, str], Converter], ctx: _Context
) -> list[tuple[str, ParamOp]]:
    """``(position, operation here)`` of every step that records parameters, in order."""
    to_unit = next((i for i, s in enumerate(steps) if _to_unit_floats(s)), None)
    ops: list[tuple[str, ParamOp]] = []
    groups: dict[str, list[str]] = {}
    for i, step in enumerate(steps):
        convert = converters.get((_family(step.op), step.name))
        if convert is None:
            own = _probability(step.op)
            if step.p == 0 or own == 0:
                continue  # never applied: nothing to encode
            raise _unknown(step, ctx, converters)
        scale = None if to_unit is None else (255.0 if i < to_unit else 1.0)
        label = f"{step.where} ({step.name})"
        try:
            op = convert(step.op, step.where, step.p, scale, ctx)
        except (TypeError, ValueError) as error:
            if str(error).startswith(step.where):
                raise
            raise type(error)(f"{label}: {error}") from error
        if op is None:
            continue
        if ctx.notes.get("normalized_at") is not None:
            raise ValueError(
                f"{label} comes after the normalisation ({ctx.notes['normalized_at']}): the "
                "branch normalises after augmenting, so the operations must come before it"
            )
        if step.group is not None:
            groups.setdefault(step.group, []).append(label)
        ops.append((label, op))
    for group, labels in groups.items():
        if len(labels) > 1:
            raise ValueError(
                f"{group} (RandomApply) applies {', '.join(labels)} together or not at all; the "
                "adapter gives each operation its own probability: write one RandomApply per "
                "operation (this draws them independently)"
            )
    return ops


def from_torchvision(
    pipeline: Any,
    *,
    encoding: Encoding = "normalized",
    standardization: Standardization | None = None,
) -> ParamAugment:
    """A parameter-recording augmentation that samples and applies what ``pipeline`` does.

    Each torchvision operation (``torchvision.transforms`` or ``torchvision.transforms.v2``)
    becomes an operation of this library, in the order written, with the same distributions
    (fields of the ``(B, P)`` parameters in brackets):

    ========================  ================================================================
    torchvision               operation here (fields)
    ========================  ================================================================
    ``RandomResizedCrop``     :class:`RandomResizedCrop` (``crop``)
    ``RandomHorizontalFlip``  :class:`HorizontalFlip` (``flip``)
    ``ColorJitter``           :class:`TorchvisionColorJitter` (``color_jitter``, ``jitter_*``)
    ``RandomGrayscale``       :class:`RandomGrayscale` (``grayscale``)
    ``GaussianBlur``          :class:`GaussianBlur` (``blur``)
    ``RandomSolarize``        :class:`RandomSolarize` (``solarize``)
    ========================  ================================================================

    ``RandomApply([op], p)`` gives ``op`` the probability ``p`` (times its own: a
    ``RandomApply([RandomGrayscale(0.5)], 0.4)`` greys with probability 0.2); a bare
    ``ColorJitter`` or ``GaussianBlur`` has probability 1. ``Compose`` and lists are expanded.
    The type conversions (``ToTensor``, ``PILToTensor``, ``ToImage``, ``ToDtype``,
    ``ConvertImageDtype``, ``ToPureTensor``) are skipped: the views are made from float images
    in [0, 1]. A ``RandomSolarize`` threshold before the conversion to floats is on the 0-255
    scale of PIL / ``uint8`` images and is divided by 255; after it, it is used as is (in a
    pipeline without conversion, a threshold above 1 is read on the 0-255 scale). An
    operation that can never apply (probability 0, e.g. ``RandomVerticalFlip(p=0.0)``) is
    skipped whatever it is, and so is a ``ColorJitter()`` without any strength (it changes
    nothing).

    The options carried over: the crop's size, scale, ratio and bilinear or bicubic
    interpolation (at most one crop); the jitter's four ranges; the blur's odd square kernel
    and sigma range; the solarize threshold; every probability. The draws follow torchvision's
    (ten tries of the crop box then the centred fallback, one jitter order per sample), and
    given the same sampled values each operation gives torchvision's tensor image, except:

    - the crop is not antialiased: a box larger than the views is resampled without
      torchvision's low-pass filter (``antialias=True``, its default), so a view downscaled
      from a much larger box is sharper (and aliased); a bilinear crop of a box no larger
      than the views gives torchvision's image;
    - the bicubic crop uses ``grid_sample``'s cubic kernel (``a = -0.75``, torchvision's with
      ``antialias=False``), where torchvision's default ``antialias=True``, like PIL, uses
      ``a = -0.5`` (a mean gap of about 0.015 on noise images); next to the box's edge its
      taps read the pixels just outside the box (torchvision's stay inside); the result is
      clamped to [0, 1] as torchvision does;
    - a pipeline on PIL images rounds each operation's output to ``uint8`` and uses PIL's
      resampling and grey weights; the views here stay in float.

    Every operation draws from the generator passed to ``aug(x, generator=...)`` or the global
    RNG of the images' device, so the draws are not torchvision's own for a given seed, only
    from the same distributions.

    Args:
        pipeline: a torchvision ``Compose`` (v1 or v2), a list or tuple of torchvision
            transforms, or one transform.
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
        TypeError: an operation without an equivalent here (named with its position, e.g.
            ``pipeline.transforms[2] (RandomRotation)``), a lightly operation (use
            :func:`~equimod_plugin.augment.lightly.from_lightly`), or a ``pipeline`` of another
            type.
        ValueError: an option that changes the semantics (a crop inside a ``RandomApply``,
            nearest interpolation, a non-square blur kernel, ``RandomChoice`` /
            ``RandomOrder``, several operations in one ``RandomApply`` with ``p < 1``); a
            ``Normalize`` (pass it to the branch instead); a second crop, or an operation type
            given twice.

    Example:
        >>> import torch
        >>> from torchvision.transforms import v2
        >>> pipeline = v2.Compose([
        ...     v2.RandomResizedCrop(32, scale=(0.2, 1.0)),
        ...     v2.RandomHorizontalFlip(),
        ...     v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        ...     v2.RandomGrayscale(p=0.2),
        ...     v2.ToImage(),
        ...     v2.ToDtype(torch.float32, scale=True),
        ... ])
        >>> aug = from_torchvision(pipeline)
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
    family = _family(pipeline)
    if not isinstance(pipeline, list | tuple) and family != "torchvision":
        hint = {
            "kornia": " (a Kornia pipeline: use equimod_plugin.augment.from_kornia)",
            "lightly": " (a lightly transform: use equimod_plugin.augment.from_lightly)",
        }.get(family, "")
        raise TypeError(
            "pipeline must be a torchvision Compose (transforms or transforms.v2), or a list of "
            f"torchvision transforms, got {type(pipeline).__name__}{hint}"
        )
    converters = {("torchvision", name): c for name, c in TORCHVISION.items()}
    ctx = _Context("from_torchvision", op_encoding)
    ops = _convert_steps(list(_flatten(pipeline, "pipeline", None)), converters, ctx)
    if not ops:
        raise ValueError("pipeline has no operation to convert")
    check_fields(ops, "from_torchvision")
    return assemble([op for _, op in ops], encoding, standardization)
