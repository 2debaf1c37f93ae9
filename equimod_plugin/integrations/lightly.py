"""EquiMod for lightly models: attach an equivariance branch to a model with a ``backbone``.

lightly's examples build an ``nn.Module`` with a ``backbone`` attribute, make two views per
image with a dataset transform, and train with their own loss. :func:`attach` registers an
:class:`~equimod_plugin.branch.EquivarianceBranch` on the model as ``model.equivariance``
and returns the dataset transform that yields the originals (the views are made on the
device):

.. code-block:: diff

    -transform = BYOLTransform(...)
    +transform = attach(model, augment.byol_views(32, variant="cifar"))
     ...
    -    x0, x1 = batch[0]
    +    x0, x1 = model.equivariance.views(batch[0])
     ...
         loss = 0.5 * (criterion(p0, z1) + criterion(p1, z0))
    +    loss = loss + model.equivariance.loss()

The model stays the user's object: ``isinstance`` holds, its own state-dict keys are
unchanged (the branch adds ``equivariance.*``), and ``model.parameters()`` includes the
branch's, so an optimizer built afterwards trains it. Momentum updates
(``update_momentum(model.backbone, model.backbone_momentum)``) are untouched: only the
online backbone's features are shared with the branch.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from equimod_plugin.integrations import missing_extra

try:
    import torchvision.transforms as T
    from PIL import Image
except ImportError as error:  # pragma: no cover - depends on the environment
    raise missing_extra("lightly", "lightly", error) from error

from equimod_plugin.augment import ParamAugment
from equimod_plugin.augment.normalize import IMAGENET_NORMALIZE, Normalize
from equimod_plugin.branch import make_branch
from equimod_plugin.terms import TermSpec

__all__ = ["EquivariantModel", "OriginalTransform", "attach", "wrap"]


class OriginalTransform:
    """Dataset transform for a model with an equivariance branch: the original image, as floats.

    PIL image (any mode) -> RGB -> ``Resize(size)`` -> ``CenterCrop(size)`` -> ``(3, size,
    size)`` in [0, 1]. Normalisation and augmentation happen on the device, in
    :meth:`EquivarianceBranch.views <equimod_plugin.branch.EquivarianceBranch.views>`
    (``model.equivariance.views``).

    Example:
        >>> from PIL import Image
        >>> OriginalTransform(32)(Image.new("L", (48, 40))).shape
        torch.Size([3, 32, 32])
    """

    def __init__(self, size: int | tuple[int, int]) -> None:
        self.size = size
        self._transform = T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor()])

    def __call__(self, image: Image.Image | Tensor) -> Tensor:
        if isinstance(image, Image.Image):
            image = image.convert("RGB")
        return self._transform(image)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"OriginalTransform(size={self.size})"


def attach(
    model: nn.Module,
    augment: ParamAugment | Sequence[ParamAugment] | Any,
    *,
    term: TermSpec = "equimod",
    backbone: str = "backbone",
    name: str = "equivariance",
    feature_dim: int | None = None,
    weight: float = 1.0,
    loss: nn.Module | None = None,
    normalize: Normalize | tuple[Sequence[float], Sequence[float]] | None = IMAGENET_NORMALIZE,
    shared_pass: bool = True,
    input_size: int | tuple[int, int] | None = None,
    **term_kwargs: Any,
) -> OriginalTransform:
    """Attach EquiMod's equivariance term (or another term) to a lightly-style model.

    Registers an :class:`~equimod_plugin.branch.EquivarianceBranch` as the submodule
    ``model.<name>`` (``model.equivariance``) and changes nothing else of ``model``.

    Args:
        model: an ``nn.Module`` whose feature extractor is ``getattr(model, backbone)``.
        augment: the views' augmentation(s), e.g. ``augment.byol_views(32, variant="cifar")``;
            one module is used for both views. Your own recipe works too: a Kornia pipeline,
            a lightly transform (e.g. ``BYOLTransform(...)``) or a torchvision pipeline is
            converted with the same distributions (``from_kornia`` / ``from_lightly`` /
            ``from_torchvision``; see docs/your-recipe.md).
        term: ``"equimod"`` (EquiMod's head and NT-Xent), ``"steering"`` (a steering
            operator, Bhardwaj et al.), a built :class:`~equimod_plugin.terms.Term`, or a
            builder ``(feature_dim, augment, **kwargs) -> Term``.
        backbone: name of the feature-extractor attribute.
        name: name of the branch's attribute on ``model``.
        feature_dim: expected width of the flattened backbone output (checked), or ``None``.
        weight: lambda, the equivariance term's weight.
        loss: the term's loss (default: EquiMod's NT-Xent at temperature 0.2, or the
            steering cosine loss).
        normalize: applied on the device after augmenting; default ImageNet's, as in lightly's
            transforms; ``None`` to skip. See :class:`~equimod_plugin.augment.Normalize`.
        shared_pass: one batched backbone pass for originals and views (default); see
            :class:`~equimod_plugin.branch.EquivarianceBranch`.
        input_size: size of the originals the dataset yields (default: the views' size).
        term_kwargs: widths of :class:`~equimod_plugin.heads.EquivarianceHead`, or ``kind``,
            ``rank``, ... of :class:`~equimod_plugin.steering.SteeringOperator`.

    Returns:
        the dataset transform that yields the originals (:class:`OriginalTransform`). Build
        the optimizer from ``model.parameters()`` afterwards.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from equimod_plugin import augment
        >>> class Model(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1))
        ...         self.head = nn.Linear(8, 4)
        ...     def forward(self, x):
        ...         return self.head(self.backbone(x).flatten(1))
        >>> model = Model()
        >>> transform = attach(model, augment.byol(16), hidden_dim=32)
        >>> x0, x1 = model.equivariance.views(torch.rand(4, 3, 16, 16))
        >>> loss = (model(x0) - model(x1)).pow(2).mean() + model.equivariance.loss()
        >>> loss.backward()
        >>> type(model).__name__, sorted(model.state_dict())[:2]
        ('Model', ['backbone.0.bias', 'backbone.0.weight'])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    feature_extractor = getattr(model, backbone, None)
    if not isinstance(feature_extractor, nn.Module):
        raise ValueError(
            f"model ({type(model).__name__}) has no nn.Module attribute {backbone!r}: lightly "
            f"models keep their feature extractor in model.backbone; pass backbone='<name>' "
            f"for another attribute"
        )
    if hasattr(model, name):
        raise ValueError(
            f"model ({type(model).__name__}) already has an attribute {name!r}; pass "
            "name='<another name>' to attach the branch under another name"
        )
    branch = make_branch(
        feature_extractor,
        augment,
        term,
        feature_dim=feature_dim,
        weight=weight,
        loss=loss,
        normalize=normalize,
        shared_pass=shared_pass,
        **term_kwargs,
    )
    model.add_module(name, branch)
    size = input_size if input_size is not None else branch.output_size
    assert size is not None  # _branch checked that a crop sets it
    return OriginalTransform(size)


def wrap(
    model: nn.Module, augment: ParamAugment | Sequence[ParamAugment] | Any, **kwargs: Any
) -> tuple[nn.Module, OriginalTransform]:
    """Former entry point: :func:`attach`, returning ``(model, transform)``.

    ``model`` is the same object, with the branch as ``model.equivariance``: call
    ``model.equivariance.views(...)`` / ``.loss()`` / ``.metrics()`` where the former wrapped
    model had ``views`` / ``equivariance_loss`` / ``equivariance_metrics``.
    """
    warnings.warn(
        "wrap(model, augment) is now attach(model, augment), which returns the transform and "
        "keeps your model object: use model.equivariance.views(images) and "
        "model.equivariance.loss() (no model.views / model.equivariance_loss any more)",
        FutureWarning,
        stacklevel=2,
    )
    return model, attach(model, augment, **kwargs)


class EquivariantModel:
    """Removed: :func:`attach` keeps your model and adds ``model.equivariance`` instead."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            "EquivariantModel was removed: attach(model, augment) registers the branch on your "
            "own model as model.equivariance (views(), loss(), metrics())"
        )
