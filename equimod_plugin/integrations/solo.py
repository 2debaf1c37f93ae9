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

Settings come from the config's ``equimod`` block (solo-learn does not validate it) or from
keyword arguments of the constructor, which take precedence; every key is optional. See
:class:`EquiModSettings` and ``docs/solo-learn.md``.
"""

from __future__ import annotations

import functools
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
from equimod_plugin.augment.normalize import CIFAR10_NORMALIZE, IMAGENET_NORMALIZE
from equimod_plugin.augment.presets import Variant, byol_views, simclr
from equimod_plugin.branch import EquivarianceBranch, make_branch
from equimod_plugin.integrations.lightly import OriginalTransform
from equimod_plugin.terms import TERM_BUILDERS

__all__ = ["EquiModSettings", "EquivariantMixin", "OriginalTransform", "equivariant"]

MeanStd = tuple[Sequence[float], Sequence[float]]

# Per dataset: view size, preset variant and the normalisation of solo-learn's validation
# transform (solo/data/classification_dataloader.py), which the views must match.
_DATASETS: dict[str, tuple[int, Variant, MeanStd]] = {
    "cifar10": (32, "cifar", CIFAR10_NORMALIZE),
    "cifar100": (32, "cifar", CIFAR10_NORMALIZE),
    "stl10": (96, "imagenet", ((0.4914, 0.4823, 0.4466), (0.247, 0.243, 0.261))),
}
_OTHER_DATASET: tuple[int, Variant, MeanStd] = (224, "imagenet", IMAGENET_NORMALIZE)
_PRESETS = ("byol", "simclr")


@dataclass(frozen=True)
class EquiModSettings:
    """The ``equimod`` block of a solo-learn config; ``None`` means "the dataset's default".

    Attributes:
        term: ``"equimod"`` (EquiMod's head and NT-Xent) or ``"steering"`` (a steering
            operator, Bhardwaj et al.).
        weight: lambda, the equivariance loss's weight (1.0 in EquiMod's runs).
        preset: ``"byol"`` (BYOL's asymmetric views 1 and 2) or ``"simclr"`` (one recipe for
            both views); see :mod:`equimod_plugin.augment.presets`.
        variant: ``"cifar"`` or ``"imagenet"``; default ``"cifar"`` for CIFAR-10/100.
        size: the views' size; default 32 for CIFAR, 96 for STL-10, 224 otherwise.
        augment_kwargs: keyword arguments of the preset for both views, e.g. ``{"blur_p": 0.0}``.
        term_kwargs: widths of :class:`~equimod_plugin.heads.EquivarianceHead` (``hidden_dim``,
            ``output_dim``, ...) or, for the steering term, ``kind``, ``rank``, ...
        normalize: ``{"mean": [...], "std": [...]}`` (or a ``(mean, std)`` pair) applied to the
            views; default the normalisation of solo-learn's validation data for the dataset.

    Example:
        >>> from omegaconf import OmegaConf
        >>> cfg = OmegaConf.create({"data": {"dataset": "cifar10"}, "equimod": {"weight": 0.5}})
        >>> s = EquiModSettings.from_cfg(cfg, preset="simclr")
        >>> s.weight, s.preset, s.size, s.variant
        (0.5, 'simclr', 32, 'cifar')
    """

    term: str = "equimod"
    weight: float = 1.0
    preset: str = "byol"
    variant: Variant | None = None
    size: int | None = None
    augment_kwargs: dict[str, Any] = field(default_factory=dict)
    term_kwargs: dict[str, Any] = field(default_factory=dict)
    normalize: MeanStd | None = None

    @classmethod
    def from_cfg(cls, cfg: DictConfig, **overrides: Any) -> EquiModSettings:
        """Read ``cfg.equimod`` (may be absent), apply ``overrides`` and the dataset's defaults."""
        block = OmegaConf.select(cfg, "equimod", default=None)
        values = {} if block is None else OmegaConf.to_container(block, resolve=True)
        if not isinstance(values, dict):
            raise ValueError(f"cfg.equimod must be a mapping, got {values!r}")
        values = {**values, **overrides}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown equimod settings {unknown}; known: {sorted(known)}")
        size, variant, normalize = _DATASETS.get(
            OmegaConf.select(cfg, "data.dataset", default=""), _OTHER_DATASET
        )
        if isinstance(values.get("normalize"), Mapping):
            values["normalize"] = (values["normalize"]["mean"], values["normalize"]["std"])
        defaults = {"size": size, "variant": variant, "normalize": normalize}
        for name, default in defaults.items():
            if values.get(name) is None:
                values[name] = default
        settings = cls(**values)
        if settings.term not in TERM_BUILDERS:
            raise ValueError(
                f"equimod.term must be one of {sorted(TERM_BUILDERS)}, got {settings.term!r}"
            )
        if settings.preset not in _PRESETS:
            raise ValueError(f"equimod.preset must be one of {_PRESETS}, got {settings.preset!r}")
        return settings

    def augmentations(self) -> list[ParamAugment]:
        """The two views' augmentations of :attr:`preset`."""
        assert self.size is not None and self.variant is not None  # filled by from_cfg
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
        augment: the two views' :class:`~equimod_plugin.augment.ParamAugment` (or one for
            both), replacing ``preset``, ``variant``, ``size`` and ``augment_kwargs``.
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
        with open_dict(cfg):
            for key, value in (("data.num_large_crops", 2), ("data.num_small_crops", 0)):
                if OmegaConf.select(cfg, key, default=None) is None:
                    OmegaConf.update(cfg, key, value)
        resolved = EquiModSettings.from_cfg(cfg, **settings)
        name = type(self).__name__
        if any(c.__name__ == "MAE" for c in type(self).__mro__):
            raise ValueError(
                f"{name} is MAE, which is not supported: it reconstructs masked patches of one "
                "crop rather than comparing two augmented views, so there are no view embeddings "
                "for EquiMod's or the steering term to predict"
            )
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
