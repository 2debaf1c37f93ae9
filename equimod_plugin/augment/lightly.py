"""lightly's transforms as parameter-recording augmentations: :func:`from_lightly`.

A lightly multi-view transform (``SimCLRTransform``, ``BYOLTransform``, ``MoCoV2Transform``,
``VICRegTransform``, ...) becomes one :class:`~equimod_plugin.augment.pipeline.ParamAugment`
per view, and a view transform (``BYOLView1Transform``, ``SimCLRViewTransform``, ...) one
``ParamAugment``: the same operations in the same order, drawing from the same distributions,
recording what each sample received in the fields the presets use. The views of one
transform share one parameter layout (an operation one view lacks is added to it with
probability 0, as :func:`~equimod_plugin.augment.presets.byol_views` does), so
``attach(model, from_lightly(BYOLTransform(...)))`` keeps the user's recipe.

lightly and torchvision are never imported here: their objects are recognised by their class
name and module, so the core package does not depend on them.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

from equimod_plugin.augment.adapt import as_range, assemble, check_encoding, check_fields
from equimod_plugin.augment.layout import Encoding, Standardization
from equimod_plugin.augment.normalize import IMAGENET_NORMALIZE
from equimod_plugin.augment.ops import GaussianBlur, ParamOp, RandomResizedCrop, RandomSolarize
from equimod_plugin.augment.pipeline import ParamAugment
from equimod_plugin.augment.torchvision import (
    TORCHVISION,
    Converter,
    _Context,
    _convert_crop,
    _convert_steps,
    _family,
    _flatten,
    _normalize_values,
)

__all__ = ["from_lightly"]


def _convert_sized_crop(
    m: Any, where: str, p: float, scale: float | None, ctx: _Context
) -> ParamOp:
    """torchvision's crop, noting the views' size (the default blur kernel must fit it)."""
    op = _convert_crop(m, where, p, scale, ctx)
    ctx.notes["size"] = op.size
    return op


def _convert_blur(m: Any, where: str, p: float, scale: float | None, ctx: _Context) -> ParamOp:
    """lightly's ``GaussianBlur(prob, sigmas)``: PIL's blur, approximated by a Gaussian kernel."""
    sigmas = as_range(m.sigmas)
    kernel = ctx.options["blur_kernel"]
    if kernel is None:  # three sigmas either side, within what the views can pad
        kernel = 2 * math.ceil(3 * sigmas[1]) + 1
        if ctx.notes["size"] is not None:
            kernel = min(kernel, 2 * min(ctx.notes["size"]) - 1)
        ctx.notes.setdefault("blur", (where, kernel, sigmas[1]))
    return GaussianBlur(p * float(m.prob), kernel, sigmas)


def _convert_solarize(m: Any, where: str, p: float, scale: float | None, ctx: _Context) -> ParamOp:
    """lightly's ``RandomSolarization(prob, threshold)``: PIL's, on the 0-255 scale."""
    threshold = float(m.threshold)
    if not 0 <= threshold <= 255:
        raise ValueError(f"threshold={threshold} is outside PIL's range [0, 255]")
    return RandomSolarize(p * float(m.prob), threshold / 255)


def _note_normalize(m: Any, where: str, p: float, scale: float | None, ctx: _Context) -> None:
    """lightly's views end with a ``Normalize``: noted, for :func:`_check_normalization`."""
    mean, std = _normalize_values(m)
    ctx.notes["normalize"] = (where, mean, std)
    ctx.notes["normalized_at"] = f"{where} (Normalize)"
    return None


#: lightly's own operations, by class name; torchvision's come from its adapter.
LIGHTLY: dict[str, Converter] = {
    "GaussianBlur": _convert_blur,
    "RandomSolarization": _convert_solarize,
}
_CONVERTERS: dict[tuple[str, str], Converter] = {
    **{("torchvision", name): c for name, c in TORCHVISION.items()},
    ("torchvision", "RandomResizedCrop"): _convert_sized_crop,
    ("torchvision", "Normalize"): _note_normalize,
    **{("lightly", name): c for name, c in LIGHTLY.items()},
}


#: What to do about operations lightly's view transforms hold that never encode.
_HINTS = {
    "RandomVerticalFlip": "build lightly's view transform with vf_prob=0.0",
    "RandomRotate": "build lightly's view transform with rr_prob=0.0",
    "RandomRotation": "build lightly's view transform with rr_prob=0.0",
}


def _wraps(obj: Any) -> bool:
    """Whether ``obj`` is a lightly object that only applies its ``.transform``: a view
    transform (``BYOLView1Transform``, ...), ``RandomRotateDegrees`` or ``ToTensor``."""
    name = type(obj).__name__
    return (
        _family(obj) == "lightly"
        and (name.endswith("Transform") or name in ("RandomRotateDegrees", "ToTensor"))
        and hasattr(obj, "transform")
    )


def _expand(obj: Any) -> tuple[str, Any] | None:
    """The ``.transform`` a lightly wrapper applies (see :func:`_wraps`); ``None`` otherwise."""
    return (".transform", obj.transform) if _wraps(obj) else None


def _views(transform: Any) -> tuple[list[tuple[str, Any]], bool]:
    """``([(position, view transform)], several views?)`` of what :func:`from_lightly` takes."""
    if isinstance(transform, list | tuple):
        views, many = [(f"transform[{i}]", v) for i, v in enumerate(transform)], True
        if not views:
            raise ValueError("transform is an empty sequence; give one view transform per view")
    elif _family(transform) == "lightly" and isinstance(
        getattr(transform, "transforms", None), list | tuple
    ):
        views = [(f"transform.transforms[{i}]", v) for i, v in enumerate(transform.transforms)]
        many = True
    else:
        views, many = [("transform", transform)], False
    for where, view in views:
        family = _family(view)
        if family == "torchvision" or _wraps(view):
            continue
        hint = {"kornia": " (a Kornia pipeline: use equimod_plugin.augment.from_kornia)"}
        raise TypeError(
            f"{where} must be a lightly transform (e.g. BYOLTransform, SimCLRTransform, or a "
            "view transform such as BYOLView1Transform), a torchvision Compose of a view's "
            f"operations, or a list of those (one per view); got {type(view).__name__}"
            + hint.get(family, "")
        )
    return views, many


def _disabled(op: ParamOp) -> ParamOp:
    """A copy of ``op`` that never applies: the same fields, probability 0."""
    off = copy.deepcopy(op)
    off.p = 0.0
    return off


def _unify(views: list[tuple[str, list[tuple[str, ParamOp]]]]) -> list[list[ParamOp]]:
    """The operations of every view with one layout: the union of their fields, in the order
    the views apply them; a view lacking an operation gets it with probability 0."""
    merged: list[str] = []  # the first field of each operation, in order
    for where, ops in views:
        cursor = 0
        for _, op in ops:
            key = op.fields[0].name
            if key not in merged:
                merged.insert(cursor, key)
            elif merged.index(key) < cursor:
                raise ValueError(
                    f"{where} applies {key!r} after {merged[cursor - 1]!r} and another view "
                    "applies it before: the views of one branch share one parameter layout, so "
                    "their operations must come in one order"
                )
            cursor = merged.index(key) + 1
    source = {op.fields[0].name: op for _, ops in reversed(views) for _, op in ops}
    out = []
    for _, ops in views:
        own = {op.fields[0].name: op for _, op in ops}
        out.append([own[k] if k in own else _disabled(source[k]) for k in merged])
    return out


def _check_sizes(views: list[tuple[str, list[tuple[str, ParamOp]]]]) -> None:
    """Raise a ``ValueError`` unless every view crops to one size (no multi-crop)."""
    sizes = {
        where: next((op.size for _, op in ops if isinstance(op, RandomResizedCrop)), None)
        for where, ops in views
    }
    missing = [where for where, size in sizes.items() if size is None]
    if len(views) > 1 and missing:
        raise ValueError(
            f"{missing[0]} has no RandomResizedCrop: every view of a multi-view transform needs "
            "one, as it sets the views' size"
        )
    if len(set(sizes.values())) > 1:
        groups: dict[tuple[int, int] | None, list[str]] = {}
        for where, size in sizes.items():
            groups.setdefault(size, []).append(where)
        listed = "; ".join(
            f"{len(ws)} view{'s' if len(ws) > 1 else ''} of {s[0]} x {s[1]} (first {ws[0]})"
            for s, ws in groups.items()
            if s is not None
        )
        raise ValueError(
            f"the views crop to different sizes ({listed}). A multi-crop recipe (SwaV, DINO's "
            "local views) is not supported: the views of one branch must share one size, as "
            "they go through the backbone in one batch with the originals (resized to that "
            "size) and their parameters are stacked in one (V, B, P) tensor. Converting only "
            "the views of one size (e.g. from_lightly(transform.transforms[:2])) makes a "
            "different recipe, without the other crops"
        )


def _check_normalization(normalizations: list[tuple[str, Any]]) -> None:
    """Warn unless the views normalise as the branch does by default (ImageNet's statistics);
    raise a ``ValueError`` if they normalise differently from one another."""
    values = {None if n is None else (tuple(n[1]), tuple(n[2])) for _, n in normalizations}
    if len(values) > 1:
        listed = ", ".join(
            f"{where}: {'none' if n is None else f'mean {n[1]}, std {n[2]}'}"
            for where, n in normalizations
        )
        raise ValueError(
            f"the views normalise differently ({listed}); the branch normalises the originals "
            "and every view alike after augmenting: build the views with one normalisation"
        )
    (value,) = values
    if value is None:
        where = normalizations[0][0]
        warnings.warn(
            f"{where} has no Normalize (lightly's normalize=None): the branch normalises the "
            "views with ImageNet's statistics unless told otherwise; pass normalize=None to "
            "attach / make_branch to keep them unnormalised",
            UserWarning,
            stacklevel=3,
        )
        return
    if not all(
        len(v) == len(ref) and all(abs(a - b) <= 1e-6 for a, b in zip(v, ref, strict=True))
        for v, ref in zip(value, IMAGENET_NORMALIZE, strict=True)
    ):
        where, mean, std = normalizations[0][1]
        warnings.warn(
            f"{where} (Normalize) normalises with mean {mean}, std {std}; the branch normalises "
            "the originals and the views after augmenting, with ImageNet's statistics unless "
            f"told otherwise: pass normalize=augment.Normalize({mean}, {std}) to attach / "
            "make_branch",
            UserWarning,
            stacklevel=3,
        )


def from_lightly(
    transform: Any,
    *,
    blur_kernel: int | None = None,
    encoding: Encoding = "normalized",
    standardization: Standardization | None = None,
) -> ParamAugment | list[ParamAugment]:
    """The parameter-recording augmentation(s) that sample and apply what ``transform`` does.

    ``transform`` is a lightly multi-view transform (one augmentation per view) or one view's
    transform. Each operation becomes an operation of this library, in the order written, with
    the same probabilities and ranges, recording its values in the fields of the presets:

    ==================================  ===================================================
    lightly's view transforms hold      fields of the ``(B, P)`` parameters
    ==================================  ===================================================
    ``RandomResizedCrop``               ``crop``
    ``RandomHorizontalFlip``            ``flip``
    ``RandomApply([ColorJitter], p)``   ``color_jitter``, ``jitter_order``, ``jitter_factors``
    ``RandomGrayscale``                 ``grayscale``
    ``GaussianBlur`` (lightly's)        ``blur``
    ``RandomSolarization`` (lightly's)  ``solarize``
    ==================================  ===================================================

    The torchvision operations are read as
    :func:`~equimod_plugin.augment.torchvision.from_torchvision` reads them, with its
    differences (no antialiasing of the crop; float images where lightly's are PIL ``uint8``
    ones, rounded after each operation). An operation that never applies (lightly's defaults
    ``vf_prob=0.0`` and ``rr_prob=0.0``: ``RandomVerticalFlip(p=0.0)``, ``RandomRotate``) is
    skipped, and so is ``ToTensor``. lightly's own operations:

    - ``GaussianBlur(prob, sigmas)``: blurs with probability ``prob`` and a sigma drawn
      uniformly from ``sigmas``, as lightly does. lightly blurs with PIL's
      ``ImageFilter.GaussianBlur(radius=sigma)``, a three-pass box approximation of a
      Gaussian with no kernel size; here the blur is a Gaussian kernel of ``blur_kernel``
      taps, by default ``2 * ceil(3 * sigma_max) + 1`` (13 for lightly's sigmas (0.1, 2),
      within what the views can pad), with a ``UserWarning`` (once per call) that says so.
    - ``RandomSolarization(prob, threshold)``: PIL's solarisation of pixels ``>= threshold``
      on the 0-255 scale: the threshold here is ``threshold / 255`` (128 -> 0.502), which
      inverts the same pixels of a ``uint8`` image.
    - the final ``Normalize`` is the branch's job, not an augmentation's: ImageNet's
      statistics (lightly's default) are also the branch's default, so nothing is to be done;
      other statistics, or none (``normalize=None``), give a ``UserWarning`` with the
      ``normalize=`` to pass to ``attach`` / ``make_branch``.

    The views of a multi-view transform share one layout: an operation one view lacks is
    added to it with probability 0 (at its place in the other views' order). They must
    share one size: a multi-crop transform (SwaV, DINO with local views) is rejected.

    Args:
        transform: a lightly ``MultiViewTransform`` (``SimCLRTransform``, ``BYOLTransform``,
            ``MoCoV2Transform``, ``VICRegTransform``, ...) or a list / tuple of view
            transforms (one per view); or one view transform (``BYOLView1Transform``,
            ``SimCLRViewTransform``, ...) or a torchvision ``Compose`` holding lightly's
            operations.
        blur_kernel: odd number of taps of the Gaussian blur replacing lightly's PIL blur;
            ``None``: ``2 * ceil(3 * sigma_max) + 1``, with a warning.
        encoding: ``"normalized"``, ``"official"`` or ``"official_standardized"``.
        standardization: the per-column ``(mean, std)`` of ``"official_standardized"``,
            keyed ``"field.column"`` (e.g.
            :func:`~equimod_plugin.augment.standardize.official_standardization`); only with
            that encoding.

    Returns:
        a list of :class:`~equimod_plugin.augment.pipeline.ParamAugment`, one per view, for
        a multi-view transform or a list; one ``ParamAugment`` for a single view. Pass either
        to ``attach`` / ``make_branch``.

    Raises:
        TypeError: an operation without an equivalent here (named with its position, e.g.
            ``transform.transforms[0].transform.transforms[3] (RandomRotate)``: build the
            transform with its probability 0), or a ``transform`` of another type.
        ValueError: views of different sizes (multi-crop) or with operations in different
            orders or different normalisations; what
            :func:`~equimod_plugin.augment.torchvision.from_torchvision` rejects (but the
            final ``Normalize``).

    Example:
        >>> import torch
        >>> from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform
        >>> transform = BYOLTransform(
        ...     BYOLView1Transform(input_size=32), BYOLView2Transform(input_size=32)
        ... )
        >>> view_1, view_2 = from_lightly(transform, blur_kernel=13)
        >>> list(view_1.layout.fields)  # doctest: +NORMALIZE_WHITESPACE
        ['crop', 'flip', 'color_jitter', 'jitter_order', 'jitter_factors', 'grayscale',
         'blur', 'solarize']
        >>> view_1.layout == view_2.layout, view_1.ops[4].p, view_2.ops[4].p  # blur
        (True, 1.0, 0.1)
        >>> x = torch.rand(4, 3, 32, 32)
        >>> views, params = view_2(x)
        >>> torch.equal(view_2(x, params=params)[0], views)
        True
    """
    op_encoding = check_encoding(encoding, standardization)
    if blur_kernel is not None and (
        isinstance(blur_kernel, bool)
        or not isinstance(blur_kernel, int)
        or blur_kernel < 1
        or blur_kernel % 2 == 0
    ):
        raise ValueError(f"blur_kernel must be a positive odd int or None, got {blur_kernel!r}")
    views, many = _views(transform)
    ctx = _Context("from_lightly", op_encoding, {"blur_kernel": blur_kernel, "hints": _HINTS})
    converted, normalizations = [], []
    for where, view in views:
        ctx.notes.update(size=None, normalize=None, normalized_at=None)
        ops = _convert_steps(list(_flatten(view, where, _expand)), _CONVERTERS, ctx)
        if not ops:
            raise ValueError(f"{where} has no operation to convert")
        check_fields(ops, "from_lightly")
        converted.append((where, ops))
        normalizations.append((where, ctx.notes["normalize"]))
    _check_sizes(converted)
    unified = _unify(converted)
    _check_normalization(normalizations)
    if "blur" in ctx.notes:
        where, kernel, sigma_max = ctx.notes["blur"]
        warnings.warn(
            f"{where} (GaussianBlur): lightly blurs with PIL's ImageFilter.GaussianBlur, a "
            "three-pass box approximation of a Gaussian without a kernel size; from_lightly "
            f"blurs with a Gaussian kernel of {kernel} taps (three times its largest sigma, "
            f"{sigma_max:g}, either side, within what the views can pad). Pass "
            f"blur_kernel={kernel} to keep it without the warning, or another odd size",
            UserWarning,
            stacklevel=2,
        )
    augments = [assemble(ops, encoding, standardization) for ops in unified]
    return augments if many else augments[0]
