"""Add an equivariance term to any model with a backbone: the framework-free core.

:class:`EquivarianceBranch` makes the views on the device, runs the originals and the views
through the backbone in one batched pass (shared BatchNorm statistics, as the official
EquiMod code does) and computes a term (:class:`~equimod_plugin.terms.EquiModTerm`, ...)
from the features. The user's own invariance code receives the views and runs unchanged:
while a step is under way the backbone answers a call on one of the views it made with that
view's slice of the batched pass instead of computing it again, so the step costs one
backbone pass over ``(1 + V) * B`` images.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from equimod_plugin._checks import check_images, validation, validation_enabled
from equimod_plugin.augment import ParamAugment
from equimod_plugin.steering import Kind
from equimod_plugin.terms import EquiModTerm, SteeringTerm

__all__ = [
    "IMAGENET_NORMALIZE",
    "EquivarianceBranch",
    "equimod_branch",
    "infer_feature_dim",
    "steering_branch",
]

#: Mean and std of ImageNet, the normalisation of lightly's and solo-learn's transforms.
IMAGENET_NORMALIZE = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class _SharedPass:
    """Instance-level ``forward`` of a backbone that serves the current step's views.

    ``served`` holds ``(view, features)`` pairs of the step under way; any other input runs
    the class's own ``forward``. Copies and pickles start with nothing served.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.served: list[tuple[Tensor, Tensor]] = []
        self.hits = 0

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs:
            for view, features in self.served:
                if x is view:
                    self.hits += 1
                    return features
        return type(self.module).forward(self.module, x, *args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        return {"module": self.module, "served": [], "hits": 0}


def _shared_pass(backbone: nn.Module) -> _SharedPass:
    """Install (once) and return the backbone's :class:`_SharedPass`."""
    forward = backbone.__dict__.get("forward")
    if forward is None:
        forward = _SharedPass(backbone)
        backbone.forward = forward  # type: ignore[method-assign]
    if not isinstance(forward, _SharedPass):
        raise ValueError(
            f"backbone ({type(backbone).__name__}) has a forward set on the instance; the "
            "shared pass needs the class's forward"
        )
    return forward


def _device_of(module: nn.Module) -> torch.device | None:
    """Device of the module's first parameter or buffer; ``None`` if it has neither."""
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return None


def infer_feature_dim(backbone: nn.Module, size: tuple[int, int], channels: int = 3) -> int:
    """Width D of ``backbone``'s flattened output on ``(2, channels, *size)`` zeros.

    Runs in eval mode without gradients (no BatchNorm statistic changes) on the backbone's
    device, and restores every submodule's mode.

    Example:
        >>> from torch import nn
        >>> backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1))
        >>> infer_feature_dim(backbone, (32, 32))
        8
    """
    device = _device_of(backbone) or torch.device("cpu")
    dtype = next(
        (t.dtype for t in (*backbone.parameters(), *backbone.buffers()) if t.is_floating_point()),
        torch.float32,
    )
    modes = [(m, m.training) for m in backbone.modules()]
    backbone.eval()
    try:
        with torch.no_grad():
            out = backbone(torch.zeros(2, channels, *size, device=device, dtype=dtype))
    finally:
        for m, mode in modes:
            m.training = mode
    if not isinstance(out, Tensor) or out.ndim < 2:
        raise ValueError(
            f"backbone must return a tensor (B, D) or (B, D, ...) to flatten, got "
            f"{type(out).__name__} {getattr(out, 'shape', '')}"
        )
    return int(out.flatten(1).shape[1])


class EquivarianceBranch(nn.Module):
    """Views, one batched backbone pass and an equivariance term, for any model.

    The branch keeps a reference to ``backbone`` without registering it, so the backbone's
    parameters stay where they are in the user's model (no duplicate state dict entries);
    the term's parameters are the branch's. Register the branch as a submodule of the model
    (``model.equivariance = branch``) and ``model.parameters()`` hands them to the optimizer.

    Per training step:

    1. ``x1, x2 = branch.views(images)`` with ``images`` ``(B, 3, H, W)`` in [0, 1]: samples
       the views and their parameters, normalises originals and views, and runs the backbone
       once on ``cat[x_o, x_1, x_2]``. The returned views are normalised, ready for the model.
    2. the user's code calls the model on ``x1`` and ``x2`` as before; the backbone returns
       their slices of the batched pass (any other input is computed normally).
    3. ``loss = user_loss + branch.loss()``: ``weight`` times the term on the features.

    Args:
        backbone: the module whose features the term uses (``model.backbone`` in lightly).
        augment: one :class:`~equimod_plugin.augment.ParamAugment` used for two views, or a
            sequence of them, one per view, sharing one parameter layout.
        term: the loss term, called as ``term(features_o (B, D), features_views (V, B, D),
            params (V, B, P))``.
        weight: the term's weight lambda (1.0 in every published EquiMod run).
        normalize: ``(mean, std)`` applied to originals and views after augmenting, or
            ``None``; default ImageNet's, like lightly's transforms.
        validate: check the values each step (images in [0, 1], finite features, embeddings
            and parameters). Each check reads a tensor back to the host, a device sync on GPU;
            ``False`` (or setting ``branch.validate = False`` later) skips them inside
            :meth:`views` and :meth:`loss`, keeping the free type and shape checks. See
            :func:`equimod_plugin.validation`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from equimod_plugin import augment
        >>> backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> branch = equimod_branch(backbone, augment.byol(16, view=1), hidden_dim=32)
        >>> x1, x2 = branch.views(torch.rand(4, 3, 16, 16))
        >>> backbone(x1) is branch.features[1]  # served from the batched pass
        True
        >>> branch.loss().shape
        torch.Size([])
    """

    def __init__(
        self,
        backbone: nn.Module,
        augment: ParamAugment | Sequence[ParamAugment],
        term: nn.Module,
        weight: float = 1.0,
        normalize: tuple[Sequence[float], Sequence[float]] | None = IMAGENET_NORMALIZE,
        validate: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(validate, bool):
            raise TypeError(f"validate must be a bool, got {validate!r}")
        self.validate = validate
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be an nn.Module, got {type(backbone).__name__}")
        augments = [augment, augment] if isinstance(augment, ParamAugment) else list(augment)
        if len(augments) < 1 or not all(isinstance(a, ParamAugment) for a in augments):
            raise TypeError("augment must be a ParamAugment or a sequence of ParamAugment")
        layouts = {a.layout for a in augments}
        sizes = {a.output_size for a in augments}
        if len(layouts) != 1 or len(sizes) != 1:
            raise ValueError(
                "the augmentations of all views must share one parameter layout and output "
                f"size, got layouts {[str(a.layout) for a in augments]} and sizes {sizes}"
            )
        param_dim = augments[0].layout.param_dim
        if getattr(term, "param_dim", param_dim) != param_dim:
            raise ValueError(
                f"term expects parameters of width {term.param_dim} but the augmentation's "
                f"layout has param_dim {param_dim}"
            )
        if not weight >= 0:
            raise ValueError(f"weight must be >= 0, got {weight}")
        self.augments = nn.ModuleList(augments)
        self.term = term
        self.weight = float(weight)
        if normalize is not None:
            mean, std = (torch.as_tensor(v, dtype=torch.float32) for v in normalize)
            if mean.shape != (3,) or std.shape != (3,) or not bool((std > 0).all()):
                raise ValueError(
                    f"normalize must be ((3 means), (3 positive stds)), got {normalize}"
                )
            self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", std.view(1, 3, 1, 1), persistent=False)
        self.normalize = normalize is not None
        self.__dict__["backbone"] = backbone  # a reference, not a submodule
        self._shared = _shared_pass(backbone)
        self.features: list[Tensor] = []
        self.params: Tensor | None = None
        self._warned = False

    @property
    def num_views(self) -> int:
        """Number V of views made per image (one augmentation each)."""
        return len(self.augments)

    @property
    def output_size(self) -> tuple[int, int] | None:
        """``(h, w)`` of the views."""
        return self.augments[0].output_size

    def views(self, images: Tensor) -> tuple[Tensor, ...]:
        """Make the views of ``images`` and run the shared backbone pass.

        Args:
            images: originals ``(B, 3, H, W)``, float in [0, 1], on any device and of any
                float dtype (moved to the model's device and converted to its dtype).

        Returns:
            ``V`` normalised views ``(B, 3, h, w)``; pass them to the model unchanged.
        """
        with self._validation():
            return self._views(images)

    def _validation(self) -> AbstractContextManager[None]:
        return nullcontext() if self.validate else validation(False)

    def _views(self, images: Tensor) -> tuple[Tensor, ...]:
        check_images(images, "images")
        if images.shape[0] == 0 or images.device.type == "meta":
            raise ValueError(
                f"images must hold at least one image with data, got shape "
                f"{tuple(images.shape)} on device {images.device}"
            )
        # the model's device and floating dtype, as its own layers need them
        dtype = next((t.dtype for t in self.backbone.parameters() if t.is_floating_point()), None)
        x = images.to(
            device=_device_of(self.term) or _device_of(self.backbone) or images.device,
            dtype=dtype or images.dtype,
        )
        size = self.output_size
        original = x
        if size is not None and tuple(x.shape[-2:]) != size:
            original = F.interpolate(x, size=size, mode="bilinear", antialias=True).clamp(0, 1)
        views, params = zip(*(aug._augment(x, None) for aug in self.augments), strict=True)
        batch = torch.cat([original, *views])
        if self.normalize:
            batch = (batch - self.mean.to(batch.dtype)) / self.std.to(batch.dtype)
        self._shared.served, self._shared.hits = [], 0
        features = self.backbone(batch)
        if validation_enabled() and not bool(torch.isfinite(features).all()):
            raise FloatingPointError(
                "the backbone returned NaN or Inf features for the originals and views: "
                "training has diverged (lower the learning rate?) or the weights are corrupt"
            )
        chunks = batch.chunk(1 + self.num_views)
        self.features = list(features.chunk(1 + self.num_views))
        self.params = torch.stack(params)
        self._shared.served = list(zip(chunks[1:], self.features[1:], strict=True))
        return tuple(chunks[1:])

    def loss(self) -> Tensor:
        """``weight`` times the term on the last :meth:`views` call's features; a scalar.

        Ends the step: afterwards the backbone computes every input again.
        """
        if self.params is None:
            raise RuntimeError("loss() needs a views() call in the same step first")
        if self._shared.hits == 0 and torch.is_grad_enabled() and not self._warned:
            self._warned = True
            warnings.warn(
                "the model never called its backbone on the views returned by views(): they "
                "were computed again (e.g. converted to channels_last, cast or copied before "
                "the backbone), which costs an extra backbone pass per view; pass them "
                "unchanged to share the batched pass",
                stacklevel=2,
            )
        f_o, *f_views = (f.flatten(1) for f in self.features)
        with self._validation():
            loss = self.weight * self.term(f_o, torch.stack(f_views), self.params)
        self._shared.served = []
        self.features, self.params = [], None
        return loss

    def metrics(self) -> dict[str, float]:
        """The term's metrics of the last step (e.g. EquiMod's equivariance), as floats."""
        return self.term.metrics()  # type: ignore[no-any-return]


def _branch(
    backbone: nn.Module,
    augment: ParamAugment | Sequence[ParamAugment],
    make_term: Callable[[int, ParamAugment], nn.Module],
    feature_dim: int | None,
    weight: float,
    normalize: tuple[Sequence[float], Sequence[float]] | None,
) -> EquivarianceBranch:
    first = augment if isinstance(augment, ParamAugment) else augment[0]
    size = first.output_size
    if size is None:
        raise ValueError("augment must include a RandomResizedCrop, which sets the view size")
    inferred = infer_feature_dim(backbone, size)
    if feature_dim is not None and feature_dim != inferred:
        raise ValueError(
            f"feature_dim is {feature_dim} but the backbone returns {inferred} features per "
            f"image (flattened) at size {size}"
        )
    term = make_term(inferred, first)
    device = _device_of(backbone)
    if device is not None:
        term.to(device)
    return EquivarianceBranch(backbone, augment, term, weight=weight, normalize=normalize)


def equimod_branch(
    backbone: nn.Module,
    augment: ParamAugment | Sequence[ParamAugment],
    *,
    feature_dim: int | None = None,
    weight: float = 1.0,
    loss: nn.Module | None = None,
    normalize: tuple[Sequence[float], Sequence[float]] | None = IMAGENET_NORMALIZE,
    **head_kwargs: Any,
) -> EquivarianceBranch:
    """An :class:`EquivarianceBranch` with EquiMod's term, sized for ``backbone``.

    Args:
        backbone: the feature extractor (e.g. ``model.backbone``).
        augment: the views' augmentation(s); see :class:`EquivarianceBranch`.
        feature_dim: width of the backbone's flattened output; inferred with a dry run on
            zeros when ``None``, checked against the dry run otherwise.
        weight, normalize: see :class:`EquivarianceBranch`.
        loss: the equivariance loss, default :class:`~equimod_plugin.losses.EquiModLoss`.
        head_kwargs: widths of :class:`~equimod_plugin.heads.EquivarianceHead`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from equimod_plugin import augment
        >>> backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> branch = equimod_branch(backbone, augment.byol_views(16), hidden_dim=32)
        >>> x1, x2 = branch.views(torch.rand(4, 3, 16, 16))  # two (4, 3, 16, 16) views
        >>> loss = branch.loss()  # weight * EquiMod's NT-Xent, a scalar
        >>> sorted(branch.metrics())
        ['absolute', 'cos_original', 'cos_pred', 'loss', 'relative']
    """

    def make_term(dim: int, aug: ParamAugment) -> nn.Module:
        return EquiModTerm(dim, aug.layout.param_dim, loss=loss, **head_kwargs)

    return _branch(backbone, augment, make_term, feature_dim, weight, normalize)


def steering_branch(
    backbone: nn.Module,
    augment: ParamAugment | Sequence[ParamAugment],
    *,
    feature_dim: int | None = None,
    weight: float = 1.0,
    loss: nn.Module | None = None,
    normalize: tuple[Sequence[float], Sequence[float]] | None = IMAGENET_NORMALIZE,
    kind: Kind = "low_rank",
    **operator_kwargs: Any,
) -> EquivarianceBranch:
    """An :class:`EquivarianceBranch` with the steering term of Bhardwaj et al.

    Same arguments as :func:`equimod_branch`; ``kind`` and ``operator_kwargs`` (``rank``,
    ``num_generators``, ``hidden_dim``) configure the
    :class:`~equimod_plugin.steering.SteeringOperator`, whose identity is the augmentation's
    identity parameters. The trained operator is ``branch.term.operator``.

    - [0] Bhardwaj et al., Steerable Equivariant Representation Learning, 2023,
      https://arxiv.org/abs/2302.11349

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from equimod_plugin import augment
        >>> backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> branch = steering_branch(backbone, augment.byol(16), rank=2)
        >>> x1, x2 = branch.views(torch.rand(4, 3, 16, 16))
        >>> branch.loss().shape, type(branch.term.operator).__name__
        (torch.Size([]), 'SteeringOperator')
    """

    def make_term(dim: int, aug: ParamAugment) -> nn.Module:
        identity = aug.identity_params(1)[0]
        return SteeringTerm(
            dim, aug.layout.param_dim, identity, kind=kind, loss=loss, **operator_kwargs
        )

    return _branch(backbone, augment, make_term, feature_dim, weight, normalize)
