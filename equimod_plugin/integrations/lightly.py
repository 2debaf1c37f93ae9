"""EquiMod for lightly models: wrap a model with a ``backbone`` in one line.

lightly's examples build an ``nn.Module`` with a ``backbone`` attribute, make two views per
image with a dataset transform, and train with their own loss. :func:`wrap` returns the
model wrapped with an :class:`~equimod_plugin.wrap.EquivarianceBranch` and the dataset
transform that yields the originals (the views are made on the device):

.. code-block:: diff

    -transform = BYOLTransform(...)
    +model, transform = wrap(model, augment.byol_views(32, variant="cifar"))
     ...
    -    x0, x1 = batch[0]
    +    x0, x1 = model.views(batch[0])
     ...
         loss = 0.5 * (criterion(p0, z1) + criterion(p1, z0))
    +    loss = loss + model.equivariance_loss()

The wrapped model behaves like the original: calls, ``model.backbone``,
``model.forward_momentum`` and every other attribute reach the wrapped model, and
``model.parameters()`` adds the equivariance head's, so an optimizer built afterwards
trains it. Momentum updates (``update_momentum(model.backbone, model.backbone_momentum)``)
are untouched: only the online backbone runs the batched pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torchvision.transforms as T
from PIL import Image
from torch import Tensor, nn

from equimod_plugin.augment import ParamAugment
from equimod_plugin.wrap import (
    IMAGENET_NORMALIZE,
    EquivarianceBranch,
    equimod_branch,
    steering_branch,
)

__all__ = ["EquivariantModel", "OriginalTransform", "wrap"]


class EquivariantModel(nn.Module):
    """A model and its :class:`EquivarianceBranch`; otherwise it behaves like ``model``.

    Attributes:
        model: the wrapped model (its state dict keys gain the prefix ``model.``).
        equivariance: the branch (head, loss, augmentations).

    Made by :func:`wrap`; see its example.
    """

    def __init__(self, model: nn.Module, branch: EquivarianceBranch) -> None:
        super().__init__()
        self.model = model
        self.equivariance = branch

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped model's ``forward``, unchanged."""
        return self.model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            model = self._modules.get("model")
            if model is None:
                raise
            return getattr(model, name)

    def views(self, images: Tensor) -> tuple[Tensor, ...]:
        """Normalised views of ``images`` ``(B, 3, H, W)`` in [0, 1], on the model's device."""
        return self.equivariance.views(images)

    def equivariance_loss(self) -> Tensor:
        """The weighted equivariance term of this step, a scalar to add to the loss."""
        return self.equivariance.loss()

    def equivariance_metrics(self) -> dict[str, float]:
        """Loss and equivariance metrics of the last step, as floats for logging."""
        return self.equivariance.metrics()


class OriginalTransform:
    """Dataset transform for a wrapped model: the original image as a float tensor.

    PIL image (any mode) -> RGB -> ``Resize(size)`` -> ``CenterCrop(size)`` -> ``(3, size,
    size)`` in [0, 1]. Normalisation and augmentation happen on the device, in
    :meth:`EquivariantModel.views`.

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


def wrap(
    model: nn.Module,
    augment: ParamAugment | Sequence[ParamAugment],
    *,
    term: str = "equimod",
    backbone: str = "backbone",
    feature_dim: int | None = None,
    weight: float = 1.0,
    loss: nn.Module | None = None,
    normalize: tuple[Sequence[float], Sequence[float]] | None = IMAGENET_NORMALIZE,
    input_size: int | tuple[int, int] | None = None,
    **term_kwargs: Any,
) -> tuple[EquivariantModel, OriginalTransform]:
    """Add EquiMod's equivariance term (or the steering term) to a lightly-style model.

    Args:
        model: an ``nn.Module`` whose feature extractor is ``getattr(model, backbone)``.
        augment: the views' augmentation(s), e.g. ``augment.byol_views(32, variant="cifar")``;
            one module is used for both views.
        term: ``"equimod"`` (:func:`~equimod_plugin.wrap.equimod_branch`) or ``"steering"``
            (:func:`~equimod_plugin.wrap.steering_branch`).
        backbone: name of the feature-extractor attribute.
        feature_dim: expected width of the flattened backbone output (checked), or ``None``.
        weight: lambda, the equivariance term's weight.
        loss: the term's loss (default: EquiMod's NT-Xent at temperature 0.2, or the
            steering cosine loss).
        normalize: ``(mean, std)`` applied on the device after augmenting; default ImageNet's,
            as in lightly's transforms; ``None`` to skip.
        input_size: size of the originals the dataset yields (default: the views' size).
        term_kwargs: widths of :class:`~equimod_plugin.heads.EquivarianceHead`, or ``kind``,
            ``rank``, ... of :class:`~equimod_plugin.steering.SteeringOperator`.

    Returns:
        ``(wrapped_model, transform)``: build the optimizer from ``wrapped_model.parameters()``
        and give ``transform`` to the dataset.

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
        >>> model, transform = wrap(Model(), augment.byol(16), hidden_dim=32)
        >>> x0, x1 = model.views(torch.rand(4, 3, 16, 16))
        >>> loss = (model(x0) - model(x1)).pow(2).mean() + model.equivariance_loss()
        >>> loss.backward()
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
    builders = {"equimod": equimod_branch, "steering": steering_branch}
    if term not in builders:
        raise ValueError(f"term must be one of {sorted(builders)}, got {term!r}")
    branch = builders[term](
        feature_extractor,
        augment,
        feature_dim=feature_dim,
        weight=weight,
        loss=loss,
        normalize=normalize,
        **term_kwargs,
    )
    size = input_size if input_size is not None else branch.output_size
    assert size is not None  # equimod_branch checked that a crop sets it
    return EquivariantModel(model, branch), OriginalTransform(size)
