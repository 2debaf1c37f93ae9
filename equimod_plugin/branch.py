"""Add an equivariance term to any model with a backbone: the framework-free core.

:class:`EquivarianceBranch` makes the views on the device, gets the backbone features of the
originals and the views, and computes a term (:class:`~equimod_plugin.terms.EquiModTerm`,
:class:`~equimod_plugin.terms.SteeringTerm`, or any :class:`~equimod_plugin.terms.Term`)
from them. The user's own invariance code receives the views and runs unchanged.

One training step, in order (the data each call hands to the next is a
:class:`~equimod_plugin.step.Step`, held in :attr:`EquivarianceBranch.step`):

1. ``x1, x2 = branch.views(images)`` samples the views and their parameters, normalises
   originals and views, and opens the step. With ``shared_pass=True`` (default) it runs the
   backbone once on ``cat[originals, x1, x2]``, as the official EquiMod code does (shared
   BatchNorm statistics), and the user's backbone calls on ``x1``, ``x2`` return their slices
   (:class:`~equimod_plugin.step.ServeViews`); with ``shared_pass=False`` it runs the
   originals alone and records the user's calls on the views
   (:class:`~equimod_plugin.step.CaptureViews`). Either way ``3B`` images per step.
2. The user's code calls the model on ``x1`` and ``x2`` as before.
3. ``loss = user_loss + branch.loss()`` closes the step (nothing stays installed on the
   backbone), computes any view feature the user's code did not, and returns ``weight``
   times the term.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from equimod_plugin._checks import check_flags, check_images, validation, validation_enabled
from equimod_plugin.augment import ParamAugment
from equimod_plugin.augment.convert import as_param_augment
from equimod_plugin.augment.normalize import IMAGENET_NORMALIZE, Normalize
from equimod_plugin.step import CaptureViews, ServeViews, Step
from equimod_plugin.terms import Term, TermSpec, build_term

__all__ = [
    "EquivarianceBranch",
    "equimod_branch",
    "infer_feature_dim",
    "make_branch",
    "steering_branch",
]

NormalizeSpec = Normalize | tuple[Sequence[float], Sequence[float]] | None


def _device_of(module: nn.Module) -> torch.device | None:
    """Device of the module's first parameter or buffer; ``None`` if it has neither."""
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return None


def _float_dtype_of(module: nn.Module) -> torch.dtype | None:
    """Dtype of the module's first floating parameter or buffer; ``None`` if none."""
    for t in (*module.parameters(), *module.buffers()):
        if t.is_floating_point():
            return t.dtype
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
    dtype = _float_dtype_of(backbone) or torch.float32
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
            f"{type(out).__name__} {getattr(out, 'shape', '')}; give the branch a module "
            "that returns the features tensor (e.g. wrap a backbone returning a tuple)"
        )
    return int(out.flatten(1).shape[1])


def _as_normalize(normalize: NormalizeSpec) -> nn.Module:
    if normalize is None:
        return nn.Identity()
    if isinstance(normalize, Normalize):
        return normalize
    try:
        mean, std = normalize
    except (TypeError, ValueError):
        raise ValueError(
            f"normalize must be a Normalize, a (mean, std) pair or None, got {normalize!r}"
        ) from None
    norm = Normalize(mean, std)
    if norm.channels != 3:
        raise ValueError(f"normalize must have 3 channels ((3 means), (3 stds)), got {normalize}")
    return norm


def _augment_type_error(augment: object) -> TypeError:
    """The error for an ``augment`` that is no augmentation this library can use."""
    return TypeError(
        "augment must be a ParamAugment (a preset such as augment.byol_views(32), or a Kornia "
        "pipeline, a lightly transform or a torchvision pipeline, which are converted with "
        "from_kornia / from_lightly / from_torchvision) or a sequence of them, one per view; "
        f"got {type(augment).__name__}"
    )


class EquivarianceBranch(nn.Module):
    """Views, the backbone features of originals and views, and an equivariance term.

    Attach it to the model as a submodule (``model.equivariance = branch``, which
    :func:`~equimod_plugin.integrations.lightly.attach` does): ``model.parameters()`` then
    hands the term's parameters to the optimizer, and the model's state dict gains only the
    branch's own entries (``equivariance.*``). The branch *references* the backbone without
    registering it, so each backbone weight stays where it is in the user's model, once.

    Args:
        backbone: the module whose features the term uses (``model.backbone`` in lightly).
        augment: one :class:`~equimod_plugin.augment.ParamAugment` used for two views, or a
            sequence of them, one per view, sharing one parameter layout. A Kornia pipeline, a
            lightly transform or a torchvision pipeline (or one per view) is converted first
            (:func:`~equimod_plugin.augment.convert.as_param_augment`).
        term: the loss term (a :class:`~equimod_plugin.terms.Term`), called as
            ``term(features_o (B, D), features_views (V, B, D), params (V, B, P))``.
        weight: the term's weight lambda (1.0 in every published EquiMod run).
        normalize: a :class:`~equimod_plugin.augment.Normalize` (or ``(mean, std)``) applied
            to originals and views after augmenting, or ``None``; default ImageNet's, like
            lightly's transforms. Reuse ``branch.normalize`` wherever the backbone sees images.
        shared_pass: one batched backbone pass over originals and views with shared BatchNorm
            statistics, served to the user's calls (default, as the official code); ``False``
            intercepts nothing: the branch runs the originals alone and the views' features
            are the ones the user's code computes (per-pass statistics).
        memory_format: the views' memory format: ``torch.channels_last`` for a model that
            converts its inputs to it (solo-learn's default), so that the conversion returns
            the very view and the shared pass still recognises it.
        validate: check the values each step (images in [0, 1], finite features, embeddings
            and parameters). Each check reads a tensor back to the host, a device sync on GPU;
            ``False`` (or setting ``branch.validate = False`` later) skips them inside
            :meth:`views` and :meth:`loss`, keeping the free type and shape checks. See
            :func:`equimod_plugin.validation`.

    Attributes:
        step: the :class:`~equimod_plugin.step.Step` under way, ``None`` outside a step.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from equimod_plugin import augment
        >>> backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> branch = equimod_branch(backbone, augment.byol(16, view=1), hidden_dim=32)
        >>> x1, x2 = branch.views(torch.rand(4, 3, 16, 16))
        >>> backbone(x1) is branch.step.features[1]  # served from the batched pass
        True
        >>> branch.loss().shape, branch.step, "forward" in vars(backbone)
        (torch.Size([]), None, False)
    """

    def __init__(
        self,
        backbone: nn.Module,
        augment: ParamAugment | Sequence[ParamAugment] | Any,
        term: Term,
        weight: float = 1.0,
        normalize: NormalizeSpec = IMAGENET_NORMALIZE,
        shared_pass: bool = True,
        memory_format: torch.memory_format = torch.contiguous_format,
        validate: bool = True,
    ) -> None:
        super().__init__()
        check_flags(validate=validate, shared_pass=shared_pass)
        self.validate = validate
        self.shared_pass = shared_pass
        if not isinstance(memory_format, torch.memory_format):
            raise TypeError(f"memory_format must be a torch.memory_format, got {memory_format!r}")
        self.memory_format = memory_format
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be an nn.Module, got {type(backbone).__name__}")
        augment = as_param_augment(augment)
        augments = [augment, augment] if isinstance(augment, ParamAugment) else list(augment)
        if len(augments) < 1 or not all(isinstance(a, ParamAugment) for a in augments):
            raise _augment_type_error(augment)
        layouts = {a.layout for a in augments}
        sizes = {a.output_size for a in augments}
        if len(layouts) != 1 or len(sizes) != 1:
            raise ValueError(
                "the augmentations of all views must share one parameter layout and output "
                f"size, got layouts {[str(a.layout) for a in augments]} and sizes {sizes}"
            )
        if not isinstance(term, nn.Module) or not callable(getattr(term, "metrics", None)):
            raise TypeError(
                f"term must be an nn.Module with a metrics() method (a Term, e.g. EquiModTerm), "
                f"got {type(term).__name__}"
            )
        param_dim = augments[0].layout.param_dim
        if term.param_dim != param_dim:
            raise ValueError(
                f"term expects parameters of width {term.param_dim} but the augmentation's "
                f"layout has param_dim {param_dim}"
            )
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight >= 0:
            raise ValueError(f"weight must be a float >= 0, got {weight!r}")
        self.augments = nn.ModuleList(augments)
        self.term = term
        self.weight = float(weight)
        self.normalize = _as_normalize(normalize)
        self.__dict__["backbone"] = backbone  # referenced, not registered: see the docstring
        self.step: Step | None = None
        self._hook: ServeViews | CaptureViews | None = None
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
        """Make the views of ``images`` and open the step.

        Args:
            images: originals ``(B, 3, H, W)``, float in [0, 1], on any device and of any
                float dtype (moved to the model's device and converted to its dtype).

        Returns:
            ``V`` normalised views ``(B, 3, h, w)``; pass them to the model unchanged.
        """
        if self.step is not None:
            raise RuntimeError(
                "views() was called again before loss(): each step is views(), the model on "
                "the views, then loss(); call branch.end_step() to abandon a step"
            )
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
        backbone: nn.Module = self.backbone
        x = images.to(
            device=_device_of(self.term) or _device_of(backbone) or images.device,
            dtype=_float_dtype_of(backbone) or images.dtype,
        )
        size = self.output_size
        original = x
        if size is not None and tuple(x.shape[-2:]) != size:
            original = F.interpolate(x, size=size, mode="bilinear", antialias=True).clamp(0, 1)
        with validation(False):  # the images were checked above: no second host sync
            views, params = zip(*(aug(x) for aug in self.augments), strict=True)
        if self.shared_pass:
            batch = self.normalize(torch.cat([original, *views]))
            batch = batch.contiguous(memory_format=self.memory_format)
            features = self._backbone_features(batch)
            chunks = batch.chunk(1 + self.num_views)
            self.step = Step(chunks[1:], torch.stack(params), list(features.chunk(len(chunks))))
            self._hook = ServeViews(backbone, self.step)
        else:
            normalized = tuple(
                self.normalize(v).contiguous(memory_format=self.memory_format) for v in views
            )
            f_o = self._backbone_features(self.normalize(original))
            self.step = Step(normalized, torch.stack(params), [f_o] + [None] * len(normalized))
            self._hook = CaptureViews(backbone, self.step)
        return self.step.views

    def _backbone_features(self, batch: Tensor) -> Tensor:
        features = self.backbone(batch)
        if not isinstance(features, Tensor):
            raise TypeError(
                f"the backbone ({type(self.backbone).__name__}) returned "
                f"{type(features).__name__}, not a features tensor (B, D, ...): give the branch "
                "a module that returns the features tensor"
            )
        if validation_enabled() and not bool(torch.isfinite(features).all()):
            raise FloatingPointError(
                "the backbone returned NaN or Inf features for the originals and views: "
                "training has diverged (lower the learning rate?) or the weights are corrupt"
            )
        return features

    def end_step(self) -> Step | None:
        """Close the step under way, if any, and return it; the backbone is as it was.

        :meth:`loss` calls it; so does a change of mode (``model.train()`` / ``.eval()``),
        since features made in one mode must not be served in the other.
        """
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        step, self.step = self.step, None
        return step

    def train(self, mode: bool = True) -> EquivarianceBranch:
        """Set the mode; ends a step under way (its features belong to the old mode)."""
        if mode != self.training:
            self.end_step()
        return super().train(mode)

    def loss(self) -> Tensor:
        """``weight`` times the term on this step's features; a scalar. Ends the step."""
        step = self.end_step()
        if step is None:
            raise RuntimeError(
                "loss() needs a views() call in the same step first (a change of mode with "
                "model.train() / model.eval() between them ends the step)"
            )
        self._warn_on_recomputed_views(step)
        with self._validation():
            features = [
                f if f is not None else self._backbone_features(view)
                for f, view in zip(step.features, (None, *step.views), strict=True)
            ]
            f_o, *f_views = (f.flatten(1) for f in features)
            params = step.params
            term_dtype = _float_dtype_of(self.term)
            if term_dtype is not None and not torch.is_autocast_enabled(params.device.type):
                params = params.to(term_dtype)
            return self.weight * self.term(f_o, torch.stack(f_views), params)

    def _warn_on_recomputed_views(self, step: Step) -> None:
        if self.shared_pass and step.misses and not step.hits and not self._warned:
            self._warned = True
            warnings.warn(
                "the model called its backbone on copies of the views returned by views() "
                "(e.g. converted to channels_last, cast or edited in place), which costs an "
                "extra backbone pass per view: pass them unchanged to share the batched pass",
                stacklevel=3,
            )

    def metrics(self) -> dict[str, Tensor]:
        """The term's metrics of the last step (e.g. EquiMod's equivariance): detached 0-dim
        tensors, so ``self.log_dict({f"equimod/{k}": v for k, v in ...})`` needs no host sync."""
        return self.term.metrics()


def make_branch(
    backbone: nn.Module,
    augment: ParamAugment | Sequence[ParamAugment] | Any,
    term: TermSpec = "equimod",
    *,
    feature_dim: int | None = None,
    shared_pass: bool = True,
    weight: float = 1.0,
    normalize: NormalizeSpec = IMAGENET_NORMALIZE,
    validate: bool = True,
    memory_format: torch.memory_format = torch.contiguous_format,
    **term_kwargs: Any,
) -> EquivarianceBranch:
    """An :class:`EquivarianceBranch` with the term ``term``, sized for ``backbone``.

    Infers the backbone's feature width with :func:`infer_feature_dim` (a dry run on zeros,
    checked against ``feature_dim`` when given), builds the term with
    :func:`~equimod_plugin.terms.build_term` on the backbone's device and dtype, and makes the
    branch.

    Args:
        backbone: the feature extractor (e.g. ``model.backbone``).
        augment: the views' augmentation(s); see :class:`EquivarianceBranch`.
        term: ``"equimod"``, ``"steering"``, a built term or a builder (see
            :func:`~equimod_plugin.terms.build_term`).
        feature_dim: expected width of the backbone's flattened output, or ``None``.
        shared_pass, weight, normalize, validate, memory_format: see
            :class:`EquivarianceBranch`.
        term_kwargs: the term's arguments: ``loss`` and the widths of
            :class:`~equimod_plugin.heads.EquivarianceHead` for EquiMod; ``loss``, ``kind``,
            ``rank``, ``num_generators``, ``hidden_dim`` for steering.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from equimod_plugin import augment
        >>> backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> branch = make_branch(backbone, augment.byol_views(16), "steering", rank=2)
        >>> x1, x2 = branch.views(torch.rand(4, 3, 16, 16))
        >>> branch.loss().shape, branch.term.feature_dim
        (torch.Size([]), 8)
    """
    augment = as_param_augment(augment)
    try:
        first = augment if isinstance(augment, ParamAugment) else augment[0]
    except (TypeError, IndexError, KeyError):  # not a sequence, or an empty one
        first = None
    if not isinstance(first, ParamAugment):
        raise _augment_type_error(augment)
    size = first.output_size
    if size is None:
        raise ValueError("augment must include a RandomResizedCrop, which sets the view size")
    inferred = infer_feature_dim(backbone, size)
    if feature_dim is not None and feature_dim != inferred:
        raise ValueError(
            f"feature_dim is {feature_dim} but the backbone returns {inferred} features per "
            f"image (flattened) at size {size}"
        )
    built = build_term(term, inferred, first, **term_kwargs)
    built.to(device=_device_of(backbone), dtype=_float_dtype_of(backbone))
    return EquivarianceBranch(
        backbone,
        augment,
        built,
        weight=weight,
        normalize=normalize,
        shared_pass=shared_pass,
        memory_format=memory_format,
        validate=validate,
    )


def equimod_branch(
    backbone: nn.Module, augment: ParamAugment | Sequence[ParamAugment] | Any, **kwargs: Any
) -> EquivarianceBranch:
    """:func:`make_branch` with EquiMod's term (Devillers & Lefort, ICLR 2023).

    ``kwargs``: those of :func:`make_branch` (``feature_dim``, ``weight``, ``normalize``,
    ``shared_pass``, ...), ``loss`` (default :class:`~equimod_plugin.losses.EquiModLoss`) and
    the widths of :class:`~equimod_plugin.heads.EquivarianceHead`.

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
    return make_branch(backbone, augment, "equimod", **kwargs)


def steering_branch(
    backbone: nn.Module, augment: ParamAugment | Sequence[ParamAugment] | Any, **kwargs: Any
) -> EquivarianceBranch:
    """:func:`make_branch` with the steering term of Bhardwaj et al. (2023).

    ``kwargs``: those of :func:`make_branch`, ``objective`` (default ``"contrastive"``),
    ``projector``, ``loss``, ``kind``, ``rank``, ``num_generators``, ``hidden_dim`` of the
    :class:`~equimod_plugin.steering.SteeringOperator`, whose identity is the augmentation's
    identity parameters. The trained operator is ``branch.term.operator``.

    - Bhardwaj et al., Steerable Equivariant Representation Learning, 2023,
      https://arxiv.org/abs/2302.11349

    Example:
        >>> from torch import nn
        >>> from equimod_plugin import augment
        >>> encoder = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1))
        >>> type(steering_branch(encoder, augment.byol(16), rank=2).term.operator).__name__
        'LowRankSteering'
    """
    return make_branch(backbone, augment, "steering", **kwargs)
