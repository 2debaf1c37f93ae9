"""A user's recipe, whatever its framework, as this library's augmentations.

``attach``, ``make_branch`` and the branch take a Kornia pipeline, a lightly transform or a
torchvision pipeline directly and convert it here with :func:`~equimod_plugin.augment.from_kornia`,
:func:`~equimod_plugin.augment.from_lightly` or :func:`~equimod_plugin.augment.from_torchvision`.
Frameworks are recognised by module name: lightly and torchvision are never imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from equimod_plugin.augment.kornia import from_kornia
from equimod_plugin.augment.lightly import from_lightly
from equimod_plugin.augment.pipeline import ParamAugment
from equimod_plugin.augment.torchvision import from_torchvision

__all__ = ["as_param_augment", "recipe_framework"]

_PIPELINES = ("AugmentationSequential", "ImageSequential", "Compose")


def recipe_framework(obj: object) -> str | None:
    """``"kornia"``, ``"lightly"`` or ``"torchvision"`` for an object of that framework (a
    torchvision ``Compose`` holding one of lightly's operations is a lightly recipe), else
    ``None``."""
    framework = type(obj).__module__.partition(".")[0]
    if framework == "torchvision":
        inner = getattr(obj, "transforms", None)
        if isinstance(inner, list | tuple) and any(
            type(t).__module__.partition(".")[0] == "lightly" for t in inner
        ):
            return "lightly"
    return framework if framework in ("kornia", "lightly", "torchvision") else None


def _is_view_recipe(obj: object) -> bool:
    """One view's whole recipe (rather than one operation of a pipeline)."""
    framework = recipe_framework(obj)
    return (
        isinstance(obj, ParamAugment)
        or framework == "lightly"
        or (framework is not None and type(obj).__name__ in _PIPELINES)
    )


def as_param_augment(augment: Any) -> ParamAugment | list[ParamAugment] | Any:
    """``augment`` as parameter-recording augmentation(s), converting a framework's recipe.

    - a :class:`ParamAugment`: returned as is;
    - a Kornia pipeline (``AugmentationSequential``, a list of Kornia operations, or one
      operation): :func:`from_kornia`;
    - a lightly transform (``BYOLTransform``, a view transform, or a ``Compose`` holding lightly
      operations): :func:`from_lightly` (a multi-view transform gives one augmentation per view);
    - a torchvision ``Compose`` (v1 or v2) or operation: :func:`from_torchvision`;
    - a list or tuple of whole view recipes (one per view, e.g. two Kornia pipelines): each
      converted.

    Anything else is returned unchanged, for the caller's checks to reject with its own
    message. The converters' warnings (e.g. Kornia's per-batch jitter order) and errors (an
    operation that cannot be encoded) reach the caller.

    Example:
        >>> import kornia.augmentation as K
        >>> crop, grey = K.RandomResizedCrop((16, 16)), K.RandomGrayscale(p=0.2)
        >>> pipeline = K.AugmentationSequential(crop, grey)
        >>> aug = as_param_augment(pipeline)
        >>> type(aug).__name__, list(aug.layout.fields)
        ('ParamAugment', ['crop', 'grayscale'])
    """
    if isinstance(augment, ParamAugment):
        return augment
    framework = recipe_framework(augment)
    if framework is None and isinstance(augment, Sequence) and not isinstance(augment, str):
        items = list(augment)
        if items and all(recipe_framework(item) == "lightly" for item in items):
            return from_lightly(items)  # one layout for all views
        if items and all(_is_view_recipe(item) for item in items):
            converted = [as_param_augment(item) for item in items]
            return [a for item in converted for a in (item if isinstance(item, list) else [item])]
        frameworks = {recipe_framework(item) for item in items}
        framework = frameworks.pop() if len(frameworks) == 1 else None
    if framework == "kornia":
        return from_kornia(augment)
    if framework == "lightly":
        return from_lightly(augment)
    if framework == "torchvision":
        return from_torchvision(augment)
    return augment
