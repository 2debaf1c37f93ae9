"""EquiMod for solo-learn: add the equivariance term to any method by changing one line.

solo-learn trains a ``BaseMethod`` subclass (``BYOL``, ``SimCLR``, ...) built from an omegaconf
config. :func:`equivariant` returns the same method with EquiMod's term (or the steering term)
added; the dataset yields the original images and the views are made on the device:

.. code-block:: diff

    -model = BYOL(cfg)
    +model = equivariant(BYOL)(cfg)
     ...
    -train_dataset = prepare_datasets("cifar10", transform, ...)      # two CPU-augmented crops
    +train_dataset = prepare_datasets("cifar10", OriginalTransform(32), ...)

What the mixin changes, and nothing else:

- ``training_step`` receives ``[indexes, originals (B, 3, H, W) in [0, 1], targets]``, makes the
  two views and their parameters on the device and runs the backbone once on
  ``cat[originals, view 1, view 2]`` (:class:`~equimod_plugin.branch.EquivarianceBranch`). It
  then calls the method's own ``training_step`` with ``[indexes, [view 1, view 2], targets]``:
  the method's ``self.backbone(view)`` calls return their slices of that pass, so the method's
  loss, online classifier, kNN and momentum branch run unchanged. The views are made in
  ``channels_last`` unless ``no_channel_last`` is set, so solo-learn's own conversion of the
  inputs returns the very views. It returns the method's loss
  plus ``weight`` times the equivariance loss, and logs the term's metrics in solo-learn's
  style: ``train_equimod_loss``, ``train_equimod_absolute``, ``train_equimod_relative``, ...
  (``train_steering_*`` for the steering term).
- ``learnable_params`` gains ``{"name": "equivariance", ...}``, so solo-learn's optimizer trains
  the head; ``momentum_pairs`` is untouched (the head has no momentum copy).

The views are made in ``training_step`` rather than in ``on_after_batch_transfer``: the batch
is on the device by then, and ``training_step`` is the hook that runs inside Lightning's
precision context (autocast) and through the DDP wrapper's ``forward``, which the backbone
pass needs; ``on_after_batch_transfer`` also runs for validation batches.

The views follow the method's own recipe, the config's ``augmentations`` list (one entry per
crop pipeline, as solo-learn's ``scripts/pretrain/*/augmentations/*.yaml``), turned into this
library's parameter-recording operations; ``equimod.preset`` replaces it with one of the
plugin's presets. Settings come from the config's ``equimod`` block (solo-learn does not
validate it) or from keyword arguments of the constructor, which take precedence; every key
is optional. See :class:`EquiModSettings` and ``docs/solo-learn.md``.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from equimod_plugin.integrations import missing_extra

try:
    from omegaconf import DictConfig, OmegaConf, open_dict
except ImportError as error:  # pragma: no cover - depends on the environment
    raise missing_extra("solo", "solo", error) from error

from equimod_plugin.augment import ParamAugment
from equimod_plugin.augment import ops as op
from equimod_plugin.augment.normalize import CIFAR10_NORMALIZE, IMAGENET_NORMALIZE
from equimod_plugin.augment.ops import check_size
from equimod_plugin.augment.presets import Variant, byol_views, simclr
from equimod_plugin.branch import EquivarianceBranch, make_branch
from equimod_plugin.integrations.lightly import OriginalTransform
from equimod_plugin.terms import TERM_BUILDERS

__all__ = ["RECIPE_KEYS", "EquiModSettings", "EquivariantMixin", "OriginalTransform", "equivariant"]

MeanStd = tuple[Sequence[float], Sequence[float]]
Size = int | tuple[int, int]

# Per dataset: the view size when the config has no augmentations, the presets' variant and
# the normalisation of solo-learn's validation transform
# (solo/data/classification_dataloader.py), which the views must match. A custom dataset's
# images can have any size: its views take the size of the config's crops (or equimod.size).
_DATASETS: dict[str, tuple[int | None, Variant, MeanStd]] = {
    "cifar10": (32, "cifar", CIFAR10_NORMALIZE),
    "cifar100": (32, "cifar", CIFAR10_NORMALIZE),
    "stl10": (96, "imagenet", ((0.4914, 0.4823, 0.4466), (0.247, 0.243, 0.261))),
    "imagenet": (224, "imagenet", IMAGENET_NORMALIZE),
    "imagenet100": (224, "imagenet", IMAGENET_NORMALIZE),
}
_OTHER_DATASET: tuple[int | None, Variant, MeanStd] = (None, "imagenet", IMAGENET_NORMALIZE)
_PRESETS = ("byol", "simclr")

# What solo-learn's CPU pipeline (solo/data/pretrain_dataloader.py, main @ 9187ea3) fixes for
# every augmentation entry: torchvision's crop aspect ratios, bicubic resampling, the sigma
# range of its GaussianBlur and PIL's solarize threshold (128 of 255). blur_kernel None: wide
# enough for the largest sigma (_blur_kernel).
_SOLO_FIXED: dict[str, Any] = {
    "ratio": (3 / 4, 4 / 3),
    "interpolation": "bicubic",
    "blur_kernel": None,
    "blur_sigma": (0.1, 2.0),
    "solarize_threshold": 128 / 255,
    "encoding": "normalized",
}
# The probabilities of a view recipe: an operation with probability 0 in both views is left out.
_GATES = ("hflip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p")
RECIPE_KEYS: tuple[str, ...] = ("scale", "jitter", *_GATES, *_SOLO_FIXED)
"""The keys of a view recipe read from the config's ``augmentations``, which
``equimod.augment_kwargs`` may override for both views (see ``docs/solo-learn.md``)."""

_ENTRY_HELP = (
    "the views are built from the config's augmentations, solo-learn's augmentation entries "
    "(scripts/pretrain/<dataset>/augmentations/*.yaml: crop_size, num_crops, rrc, "
    "color_jitter, grayscale, gaussian_blur, solarization, equalization, horizontal_flip); "
    "complete the entry, or set equimod.preset to 'byol' or 'simclr' to use the plugin's preset"
)


def _value(entry: Mapping[str, Any], key: str, where: str) -> Any:
    """``entry[key]`` for a dotted ``key``; a ``ValueError`` naming ``where.key`` if missing."""
    value: Any = entry
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise ValueError(f"{where}.{key} is missing: {_ENTRY_HELP}")
        value = value[part]
    return value


def _number(entry: Mapping[str, Any], key: str, where: str, what: str) -> float:
    value = _value(entry, key, where)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{where}.{key} must be a number ({what}), got {value!r}")
    return float(value)


def _probability(entry: Mapping[str, Any], key: str, where: str) -> float:
    value = _value(entry, key, where)
    if value is None:  # solo-learn leaves out an operation whose probability is falsy
        return 0.0
    p = _number(entry, key, where, "a probability in [0, 1]")
    if not 0 <= p <= 1:
        raise ValueError(f"{where}.{key} must be a probability in [0, 1], got {p}")
    return p


def _crop_size(entry: Any, where: str) -> Size:
    if not isinstance(entry, Mapping):
        raise ValueError(
            f"{where} must be a mapping (a solo-learn augmentation entry), got {entry!r}"
        )
    height, width = check_size(_value(entry, "crop_size", where), f"{where}.crop_size")
    return height if height == width else (height, width)


def _read_entry(entry: Mapping[str, Any], where: str) -> dict[str, Any]:
    """One crop pipeline's recipe: ``crop_size`` and the probabilities and ranges of its ops."""
    scale = (1.0, 1.0)  # rrc disabled: the whole image, resized to crop_size
    if _value(entry, "rrc.enabled", where):
        scale = tuple(
            _number(entry, f"rrc.crop_{end}_scale", where, "a fraction of the image area")
            for end in ("min", "max")
        )
    jitter_p = _probability(entry, "color_jitter.prob", where)
    jitter = (0.0,) * 4  # solo-learn reads the strengths only when the jitter is applied
    if jitter_p > 0:
        jitter = tuple(
            _number(entry, f"color_jitter.{name}", where, "a jitter strength, torchvision's")
            for name in ("brightness", "contrast", "saturation", "hue")
        )
    recipe = {
        "crop_size": _crop_size(entry, where),
        "scale": scale,
        "jitter": jitter,
        "jitter_p": jitter_p,
        "grayscale_p": _probability(entry, "grayscale.prob", where),
        "blur_p": _probability(entry, "gaussian_blur.prob", where),
        "solarize_p": _probability(entry, "solarization.prob", where),
    }
    equalization = _probability(entry, "equalization.prob", where)
    if equalization > 0:
        raise ValueError(
            f"{where}.equalization.prob is {equalization}, but histogram equalisation is not "
            "supported: the plugin's operations have no equalisation to apply and record. Set "
            f"it to 0 (the override {where}.equalization.prob=0.0), or set equimod.preset to "
            "use one of the plugin's presets"
        )
    return {**recipe, "hflip_p": _probability(entry, "horizontal_flip.prob", where)}


def _entries(augmentations: Any) -> list[Any]:
    """``cfg.augmentations`` as a non-empty list of plain entries."""
    entries = (
        OmegaConf.to_container(augmentations, resolve=True)
        if OmegaConf.is_config(augmentations)
        else augmentations
    )
    if not isinstance(entries, Sequence) or isinstance(entries, str) or len(entries) == 0:
        raise ValueError(
            "cfg.augmentations must be a non-empty list of solo-learn augmentation entries, "
            f"got {entries!r}"
        )
    return list(entries)


def _read_augmentations(entries: list[Any]) -> tuple[dict[str, Any], ...]:
    """One recipe per crop: each entry's recipe ``num_crops`` times, in order."""
    crops: list[dict[str, Any]] = []
    for i, entry in enumerate(entries):
        where = f"augmentations.{i}"
        _crop_size(entry, where)  # a mapping with a crop size
        num_crops = _value(entry, "num_crops", where)
        if isinstance(num_crops, bool) or not isinstance(num_crops, numbers.Integral):
            raise ValueError(f"{where}.num_crops must be an int >= 0, got {num_crops!r}")
        crops += [_read_entry(entry, where)] * int(num_crops)
    return tuple(crops)


def _blur_kernel(size: Size, sigma_max: float) -> int:
    """Odd taps covering +-3 ``sigma_max`` (PIL's blur is not truncated), at most what fits."""
    return min(2 * math.ceil(3 * sigma_max) + 1, 2 * min(check_size(size, "size")) - 1)


def _view(size: Size, recipe: Mapping[str, Any], present: set[str]) -> ParamAugment:
    """One view's pipeline: crop, then the operations in ``present`` (names of ``_GATES``)."""
    encoding = recipe["encoding"]
    ops: list[op.ParamOp] = [
        op.RandomResizedCrop(
            size, recipe["scale"], recipe["ratio"], recipe["interpolation"], encoding
        )
    ]
    if "hflip_p" in present:
        ops.append(op.HorizontalFlip(recipe["hflip_p"]))
    if "jitter_p" in present:
        ops.append(op.ColorJitter(*recipe["jitter"], p=recipe["jitter_p"], encoding=encoding))
    if "grayscale_p" in present:
        ops.append(op.RandomGrayscale(recipe["grayscale_p"]))
    if "blur_p" in present:
        sigma = recipe["blur_sigma"]
        kernel = recipe["blur_kernel"] or _blur_kernel(size, max(sigma))
        ops.append(op.GaussianBlur(recipe["blur_p"], kernel, sigma))
    if "solarize_p" in present:
        ops.append(op.RandomSolarize(recipe["solarize_p"], recipe["solarize_threshold"]))
    return ParamAugment(ops, encoding)


def _views_from_recipes(
    size: Size, recipes: Sequence[Mapping[str, Any]], overrides: Mapping[str, Any]
) -> list[ParamAugment]:
    """The two views of the config's crops; one object for both when their recipes agree."""
    crop_sizes = [recipe["crop_size"] for recipe in recipes]
    if len(recipes) != 2 or crop_sizes[0] != crop_sizes[1]:
        raise ValueError(
            f"the config's augmentations make {len(recipes)} crop(s) of sizes {crop_sizes}: "
            "multi-crop recipes are not supported. EquiMod makes exactly two views of one size "
            "from each original; use a two-crop recipe of the method (one entry with "
            "num_crops: 2, or two entries with num_crops: 1 and the same crop_size)"
        )
    kwargs = [
        {**_SOLO_FIXED, **{k: v for k, v in r.items() if k != "crop_size"}, **overrides}
        for r in recipes
    ]
    # one set of operations for both views, so that their parameters share one layout
    present = {gate for gate in _GATES if any(k[gate] != 0 for k in kwargs)}
    first = _view(size, kwargs[0], present)
    return [first, first if kwargs[1] == kwargs[0] else _view(size, kwargs[1], present)]


@dataclass(frozen=True)
class EquiModSettings:
    """The ``equimod`` block of a solo-learn config, resolved against the rest of the config.

    The views come from, in this order of precedence: the mixin's ``augment=`` argument;
    :attr:`preset` when it is set; the config's ``augmentations`` list (solo-learn's recipe of
    the method, the default: :attr:`recipes`); BYOL's preset when the config has no
    ``augmentations``. Their size: :attr:`size` when set, else the first entry's
    ``crop_size``, else the dataset's (no default for ``custom`` data: an error).

    Attributes:
        term: ``"equimod"`` (EquiMod's head and NT-Xent) or ``"steering"`` (a steering
            operator, Bhardwaj et al.).
        weight: lambda, the equivariance loss's weight (1.0 in EquiMod's runs).
        preset: ``None`` (default): the views follow the config's ``augmentations``;
            ``"byol"`` (BYOL's asymmetric views 1 and 2) or ``"simclr"`` (one recipe for both
            views), the plugin's presets (:mod:`equimod_plugin.augment.presets`), replace them.
            Resolved to ``"byol"`` when the config has no ``augmentations``.
        variant: the preset's ``"cifar"`` or ``"imagenet"``; default ``"cifar"`` for
            CIFAR-10/100. Not used by the config's recipe.
        size: the views' size; default the config's ``crop_size``, else 32 for CIFAR, 96 for
            STL-10, 224 for ImageNet(-100).
        augment_kwargs: with a preset, its keyword arguments, e.g. ``{"blur_p": 0.0}``; with the
            config's recipe, values of :data:`RECIPE_KEYS` that replace the recipe's for both
            views, e.g. ``{"interpolation": "bilinear"}``.
        term_kwargs: widths of :class:`~equimod_plugin.heads.EquivarianceHead` (``hidden_dim``,
            ``output_dim``, ...) or, for the steering term, ``kind``, ``rank``, ...
        normalize: ``{"mean": [...], "std": [...]}`` (or a ``(mean, std)`` pair) applied to the
            views; default the normalisation of solo-learn's validation data for the dataset.
        recipes: read from the config, not settable: one recipe per crop of the config's
            ``augmentations`` (each entry ``num_crops`` times) when :attr:`preset` is ``None``;
            empty with a preset, or when the mixin is given the views (``augment=``: the
            entries are not read). A recipe holds ``crop_size``, ``scale``, ``jitter`` (brightness,
            contrast, saturation, hue) and the probabilities ``hflip_p``, ``jitter_p``,
            ``grayscale_p``, ``blur_p``, ``solarize_p``.

    Example:
        >>> from omegaconf import OmegaConf
        >>> cfg = OmegaConf.create({"data": {"dataset": "cifar10"}, "equimod": {"weight": 0.5}})
        >>> s = EquiModSettings.from_cfg(cfg, preset="simclr")
        >>> s.weight, s.preset, s.size, s.variant
        (0.5, 'simclr', 32, 'cifar')
        >>> entry = {
        ...     "crop_size": 32, "num_crops": 2,
        ...     "rrc": {"enabled": True, "crop_min_scale": 0.08, "crop_max_scale": 1.0},
        ...     "color_jitter": {"prob": 0.8, "brightness": 0.8, "contrast": 0.8,
        ...                      "saturation": 0.8, "hue": 0.2},
        ...     "grayscale": {"prob": 0.2}, "gaussian_blur": {"prob": 0.5},
        ...     "solarization": {"prob": 0.0}, "equalization": {"prob": 0.0},
        ...     "horizontal_flip": {"prob": 0.5},
        ... }  # solo-learn's scripts/pretrain/cifar/augmentations/symmetric.yaml
        >>> cfg = OmegaConf.create({"data": {"dataset": "custom"}, "augmentations": [entry]})
        >>> s = EquiModSettings.from_cfg(cfg)
        >>> s.preset, s.size, len(s.recipes), s.recipes[0]["blur_p"]
        (None, 32, 2, 0.5)
        >>> view_1, view_2 = s.augmentations()
        >>> view_1 is view_2, list(view_1.layout.fields)[-2:]  # no solarisation in the recipe
        (True, ['grayscale', 'blur'])
    """

    term: str = "equimod"
    weight: float = 1.0
    preset: str | None = None
    variant: Variant | None = None
    size: Size | None = None
    augment_kwargs: dict[str, Any] = field(default_factory=dict)
    term_kwargs: dict[str, Any] = field(default_factory=dict)
    normalize: MeanStd | None = None
    recipes: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_cfg(cls, cfg: DictConfig, **overrides: Any) -> EquiModSettings:
        """Read ``cfg.equimod`` (may be absent), apply ``overrides``, the config's
        ``augmentations`` and the dataset's defaults."""
        return cls._resolve(cfg, overrides, views=True)

    @classmethod
    def _resolve(
        cls, cfg: DictConfig, overrides: Mapping[str, Any], views: bool
    ) -> EquiModSettings:
        """:meth:`from_cfg`; ``views=False`` (views given to the mixin): neither the recipes
        nor the view size are needed, so the entries are not read and the size may be ``None``."""
        block = OmegaConf.select(cfg, "equimod", default=None)
        values = {} if block is None else OmegaConf.to_container(block, resolve=True)
        if not isinstance(values, dict):
            raise ValueError(f"cfg.equimod must be a mapping, got {values!r}")
        values = {**values, **overrides}
        known = {f.name for f in fields(cls)} - {"recipes"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown equimod settings {unknown}; known: {sorted(known)}")
        dataset = OmegaConf.select(cfg, "data.dataset", default="")
        size, variant, normalize = _DATASETS.get(dataset, _OTHER_DATASET)
        augmentations = OmegaConf.select(cfg, "augmentations", default=None)
        if augmentations is not None and views:
            entries = _entries(augmentations)
            size = _crop_size(entries[0], "augmentations.0")
            if values.get("preset") is None:
                values["recipes"] = _read_augmentations(entries)
        elif augmentations is None and values.get("preset") is None:
            values["preset"] = "byol"
        if isinstance(values.get("normalize"), Mapping):
            values["normalize"] = (values["normalize"]["mean"], values["normalize"]["std"])
        defaults = {"size": size, "variant": variant, "normalize": normalize}
        for name, default in defaults.items():
            if values.get(name) is None:
                values[name] = default
        if values["size"] is None and views:
            raise ValueError(
                f"cfg.data.dataset {dataset!r} has no default view size and the config has no "
                "augmentations: set equimod.size, or the crop_size of the config's augmentations"
            )
        settings = cls(**values)
        if settings.term not in TERM_BUILDERS:
            raise ValueError(
                f"equimod.term must be one of {sorted(TERM_BUILDERS)}, got {settings.term!r}"
            )
        if settings.preset is not None and settings.preset not in _PRESETS:
            raise ValueError(
                f"equimod.preset must be one of {_PRESETS}, or null for the config's "
                f"augmentations; got {settings.preset!r}"
            )
        unknown = sorted(set(settings.augment_kwargs) - set(RECIPE_KEYS))
        if settings.recipes and unknown:
            raise ValueError(
                f"equimod.augment_kwargs {unknown} are not keys of the config's recipe; with "
                f"the config's augmentations they can be {list(RECIPE_KEYS)} (or set "
                "equimod.preset to pass a preset's arguments)"
            )
        return settings

    def augmentations(self) -> list[ParamAugment]:
        """The two views' augmentations: the config's recipes, or :attr:`preset`'s."""
        assert self.size is not None and self.variant is not None  # filled by from_cfg
        if self.preset is None:
            return _views_from_recipes(self.size, self.recipes, self.augment_kwargs)
        if self.preset == "simclr":
            both = simclr(self.size, self.variant, **self.augment_kwargs)
            return [both, both]
        return list(byol_views(self.size, self.variant, **self.augment_kwargs))


class EquivariantMixin:
    """Adds EquiMod's term (or the steering term) to a solo-learn method with two large crops.

    Put it first in the bases, or use :func:`equivariant`. The method must follow solo-learn's
    ``BaseMethod`` contract: ``__init__(cfg)``, ``self.backbone``, ``self.features_dim``,
    ``self.num_large_crops``, ``self.num_small_crops``, ``self.no_channel_last``,
    ``learnable_params`` and a ``training_step(batch, batch_idx)`` that takes
    ``[indexes, [X_1, X_2], targets]`` and returns a scalar loss.

    Args:
        cfg: the method's config. ``data.num_large_crops`` / ``data.num_small_crops`` default to
            2 / 0 and must have these values; ``equimod`` holds the :class:`EquiModSettings`.
            The views follow its ``augmentations`` list (solo-learn's recipe: crop size and
            scale, jitter, grayscale, blur, solarisation and flip probabilities, one recipe per
            crop) unless ``equimod.preset`` is set.
        augment: the two views' :class:`~equimod_plugin.augment.ParamAugment` (or one for
            both), replacing the config's ``augmentations`` and ``preset``, ``variant``,
            ``size`` and ``augment_kwargs``.
        settings: :class:`EquiModSettings` fields, overriding ``cfg.equimod``.

    Attributes:
        equivariance: the :class:`~equimod_plugin.branch.EquivarianceBranch` (term, views).
        equimod_settings: the resolved :class:`EquiModSettings`.
    """

    backbone: nn.Module
    features_dim: int
    num_large_crops: int
    num_small_crops: int
    no_channel_last: bool

    def __init__(
        self,
        cfg: DictConfig,
        *,
        augment: ParamAugment | Sequence[ParamAugment] | None = None,
        **settings: Any,
    ) -> None:
        name = type(self).__name__
        if any(c.__name__ == "MAE" for c in type(self).__mro__):
            raise ValueError(
                f"{name} is MAE, which is not supported: it reconstructs masked patches of one "
                "crop rather than comparing two augmented views, so there are no view embeddings "
                "for EquiMod's or the steering term to predict"
            )
        with open_dict(cfg):
            for key, value in (("data.num_large_crops", 2), ("data.num_small_crops", 0)):
                if OmegaConf.select(cfg, key, default=None) is None:
                    OmegaConf.update(cfg, key, value)
        resolved = EquiModSettings._resolve(cfg, settings, views=augment is None)
        super().__init__(cfg)  # type: ignore[call-arg]
        if not isinstance(getattr(self, "backbone", None), nn.Module):
            raise TypeError(
                f"{name} has no nn.Module attribute 'backbone': EquivariantMixin needs a "
                "solo-learn method, which keeps its feature extractor in self.backbone"
            )
        if (self.num_large_crops, self.num_small_crops) != (2, 0):
            raise ValueError(
                f"{name} has {self.num_large_crops} large and {self.num_small_crops} small crops: "
                "multi-crop recipes are not supported. The branch makes exactly two views of one "
                "size from each original and predicts each from the original's embedding; views "
                "of other sizes would need a term per size. Use a two-crop recipe of the method "
                "(e.g. solo-learn's scripts/pretrain/cifar/<method>.yaml)"
            )
        self.equimod_settings = resolved
        self.equivariance: EquivarianceBranch = make_branch(
            self.backbone,
            resolved.augmentations() if augment is None else augment,
            resolved.term,
            feature_dim=self.features_dim,
            weight=resolved.weight,
            normalize=resolved.normalize,
            memory_format=torch.contiguous_format if self.no_channel_last else torch.channels_last,
            **resolved.term_kwargs,
        )

    @property
    def learnable_params(self) -> list[dict[str, Any]]:
        """The method's parameter groups and the equivariance term's."""
        extra = {"name": "equivariance", "params": self.equivariance.parameters()}
        return [*super().learnable_params, extra]  # type: ignore[misc]

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> Tensor:
        """The method's step on views made on the device, plus the equivariance loss.

        Args:
            batch: ``[indexes, originals, targets]``; ``originals`` is ``(B, 3, H, W)`` in
                [0, 1] (or a one-element list of it), e.g. from :class:`OriginalTransform`.
            batch_idx: index of the batch.
        """
        indexes, originals, targets = batch
        if isinstance(originals, (list, tuple)):
            if len(originals) != 1:
                raise ValueError(
                    f"the batch holds {len(originals)} crops per image; with EquiMod the views "
                    "are made on the device, so the dataset must yield the original image: use "
                    "OriginalTransform(size) as its transform instead of solo-learn's crops"
                )
            originals = originals[0]
        views = self.equivariance.views(originals)
        loss = super().training_step([indexes, list(views), targets], batch_idx)  # type: ignore[misc]
        if not isinstance(loss, Tensor) or loss.ndim != 0:
            raise TypeError(
                f"{type(self).__name__}.training_step must return a scalar loss tensor to add "
                f"the equivariance loss to, got {type(loss).__name__}"
            )
        loss = loss + self.equivariance.loss()
        prefix = f"train_{self.equimod_settings.term}_"
        metrics = {prefix + key: value for key, value in self.equivariance.metrics().items()}
        self.log_dict(metrics, on_epoch=True, sync_dist=True)  # type: ignore[attr-defined]
        return loss


M = TypeVar("M", bound=type)


@functools.cache
def equivariant(method: M) -> M:
    """``method`` with :class:`EquivariantMixin`: ``equivariant(BYOL)(cfg)`` trains BYOL+EquiMod.

    The class is made once per method (``equivariant(BYOL) is equivariant(BYOL)``) and named
    ``Equivariant<Method>``; its constructor takes ``cfg`` and :class:`EquivariantMixin`'s
    keyword arguments.

    Example:
        >>> from torch import nn
        >>> class Method(nn.Module):  # stands for a solo-learn method, e.g. solo.methods.BYOL
        ...     def __init__(self, cfg):
        ...         super().__init__()
        >>> equivariant(Method).__name__, equivariant(Method) is equivariant(Method)
        ('EquivariantMethod', True)
    """
    if not (isinstance(method, type) and issubclass(method, nn.Module)):
        raise TypeError(f"method must be a solo-learn method class, got {method!r}")
    if issubclass(method, EquivariantMixin):
        raise TypeError(f"{method.__name__} already has the equivariance term")
    return type(f"Equivariant{method.__name__}", (EquivariantMixin, method), {})  # type: ignore[return-value]
