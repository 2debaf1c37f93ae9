"""Test-time augmentation in embedding space with a trained steering operator.

Instead of augmenting each image K times and encoding K images, encode it once and apply K
learned maps ``M(a_k)`` to its embedding in one batched product (Bhardwaj et al., 2023).
The K steered embeddings are aggregated into a mean embedding, and their spread is a
score for out-of-distribution detection.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from equimod_plugin._checks import check_flags, check_matrix
from equimod_plugin.augment import ParamAugment
from equimod_plugin.augment.ops import check_int
from equimod_plugin.steering import SteeringOperator
from equimod_plugin.terms import SteeringTerm

__all__ = ["SteeredTTA", "TTAOutput", "dispersion", "tta_params"]


class TTAOutput(NamedTuple):
    """Result of :class:`SteeredTTA` (see its example).

    Attributes:
        embedding: ``(B, D)`` mean of the K steered embeddings.
        score: ``(B,)`` their dispersion (higher: less typical; an OOD score).
        steered: ``(B, K, D)`` the steered embeddings.
    """

    embedding: Tensor
    score: Tensor
    steered: Tensor


def dispersion(steered: Tensor) -> Tensor:
    """Mean cosine distance of K embeddings to their mean direction: ``(B, K, D) -> (B,)``.

    0 when all K agree in direction; grows as the steered embeddings spread apart. This
    library's choice of an out-of-distribution score for steered test-time augmentation: the
    steerable paper (Bhardwaj et al., 2023) reports OOD detection with steered embeddings but
    not this score, and at CPU scale a kNN distance beats it (``docs/steering.md``).
    Computed in at least float32 and returned in the dtype of ``steered``; it depends only on
    directions, so it does not change when an embedding is scaled, however small or large.
    K identical embeddings score exactly 0 (also all-zero ones); an all-zero embedding among
    others has no direction and counts as distance 1.

    Args:
        steered: ``(B, K, D)`` K embeddings of each of B samples.

    Returns:
        ``(B,)`` scores in [0, 2].

    Example:
        >>> import torch
        >>> same = torch.ones(1, 4, 3)  # four identical embeddings
        >>> spread = torch.eye(3)[None]  # three orthogonal ones
        >>> dispersion(same), dispersion(spread)
        (tensor([0.]), tensor([0.4226]))
    """
    if not isinstance(steered, Tensor) or steered.ndim != 3:
        raise ValueError(f"steered must be a tensor of shape (B, K, D), got {steered!r:.80}")
    if steered.shape[1] < 1 or steered.shape[2] < 1:
        raise ValueError(f"steered must have K >= 1 and D >= 1, got shape {tuple(steered.shape)}")
    check_matrix(steered.flatten(0, 1), "steered (B * K, D)", what="D")
    x = steered.to(torch.promote_types(steered.dtype, torch.float32))
    # divide by the largest entry first: the norms of tiny (or huge) embeddings neither
    # underflow below F.normalize's eps nor overflow; the direction does not depend on it
    x = x / x.abs().amax(dim=-1, keepdim=True).detach().clamp_min(torch.finfo(x.dtype).tiny)
    unit = F.normalize(x, dim=-1)
    center = F.normalize(unit.mean(dim=1, keepdim=True), dim=-1)
    score = (1 - (unit * center).sum(dim=-1)).mean(dim=1).clamp(0, 2)
    identical = (steered == steered[:, :1]).flatten(1).all(dim=1)
    return torch.where(identical, 0.0, score).to(steered.dtype)


def tta_params(
    augment: ParamAugment,
    k: int,
    image_size: int | tuple[int, int],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Draw K parameter sets ``(K, P)`` from ``augment`` for images of ``image_size``.

    The draws are those of ``augment.sample`` on K images of that size, without allocating
    the images (:meth:`~equimod_plugin.augment.ParamAugment.sample_params`).

    Args:
        augment: the augmentation whose distribution the K test-time augmentations follow.
        k: K, the number of parameter sets, an int >= 1.
        image_size: ``(H, W)`` of the images the parameters are for (crop boxes depend on
            it), or one int ``S`` for square ``(S, S)`` images.
        generator: random generator, for reproducible parameter sets.
        device: device of the returned parameters.

    Returns:
        ``(K, P)`` parameters, ``P = augment.layout.param_dim``.

    Example:
        >>> import torch
        >>> from equimod_plugin import augment
        >>> tta_params(augment.byol(32, view=1), 64, (32, 32)).shape
        torch.Size([64, 18])
        >>> tta_params(augment.byol(32, view=1), 64, 32).shape  # square images
        torch.Size([64, 18])
    """
    if not isinstance(augment, ParamAugment):
        raise TypeError(
            f"augment must be a ParamAugment such as augment.byol(32, view=1), got "
            f"{type(augment).__name__}"
        )
    k = check_int(k, "k")
    return augment.sample_params(k, image_size, device=device, generator=generator)


class SteeredTTA(nn.Module):
    """Encode once, steer to K augmentations, aggregate (Bhardwaj et al., 2023).

    For a model trained with a :class:`~equimod_plugin.terms.SteeringTerm`, build it with
    :meth:`from_term`, which steers in the term's standardised feature space.

    Args:
        encoder: maps normalised images ``(B, 3, H, W)`` to the embeddings the operator acts
            on (flattened to ``(B, D)``).
        operator: the trained :class:`~equimod_plugin.steering.SteeringOperator`.
        params: ``(K, P)`` the K augmentations, e.g. from :func:`tta_params`.
        grad: record the autograd graph (to differentiate the outputs); ``False`` (default)
            runs :meth:`forward` and :meth:`steer` under ``torch.no_grad()``, so a trained
            encoder's activations are not kept alive by the outputs.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from equimod_plugin import SteeringOperator, augment
        >>> aug = augment.byol(16, view=1)
        >>> encoder = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> params = tta_params(aug, 16, (16, 16))  # K = 16 augmentations
        >>> tta = SteeredTTA(encoder, SteeringOperator(8, 18, rank=2), params)
        >>> out = tta(torch.randn(4, 3, 16, 16))
        >>> out.embedding.shape, out.score.shape, out.steered.shape
        (torch.Size([4, 8]), torch.Size([4]), torch.Size([4, 16, 8]))
        >>> out.steered.requires_grad  # grad=False: no graph
        False
    """

    def __init__(
        self, encoder: nn.Module, operator: SteeringOperator, params: Tensor, grad: bool = False
    ) -> None:
        super().__init__()
        if not isinstance(encoder, nn.Module):
            raise TypeError(
                f"encoder must be an nn.Module (B, 3, H, W) -> (B, D), got {type(encoder).__name__}"
            )
        if not isinstance(operator, SteeringOperator):
            raise TypeError(
                f"operator must be a SteeringOperator (e.g. term.operator of a trained "
                f"SteeringTerm), got {type(operator).__name__}"
            )
        if not isinstance(params, Tensor):
            raise TypeError(
                f"params must be a tensor (K, {operator.param_dim}), e.g. from tta_params(), "
                f"got {type(params).__name__}"
            )
        if params.ndim != 2 or params.shape[1] != operator.param_dim or params.shape[0] < 1:
            raise ValueError(
                f"params must have shape (K, {operator.param_dim}) with K >= 1, got "
                f"{tuple(params.shape)}"
            )
        check_matrix(params, "params", cols=operator.param_dim, what="P")
        check_flags(grad=grad)
        self.encoder = encoder
        self.operator = operator
        self.grad = grad
        self.register_buffer("params", params.detach().clone())

    @classmethod
    def from_term(
        cls, encoder: nn.Module, term: SteeringTerm, params: Tensor, grad: bool = False
    ) -> SteeredTTA:
        """TTA in the space a :class:`~equimod_plugin.terms.SteeringTerm` was trained in.

        The encoder is followed by the term's ``standardize`` (its running statistics in eval
        mode) and the operator is the term's, e.g.
        ``SteeredTTA.from_term(model.backbone, model.equivariance.term, params).eval()``.

        Args:
            encoder: the trained backbone, ``(B, 3, H, W) -> (B, D)`` (flattened if needed).
            term: the trained term (``branch.term``).
            params: ``(K, P)`` the K augmentations.
            grad: record the autograd graph (see the class).

        Example:
            >>> import torch
            >>> from torch import nn
            >>> from equimod_plugin import SteeringTerm, augment
            >>> aug = augment.byol(16, view=1)
            >>> encoder = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1))
            >>> term = SteeringTerm(8, 18, identity=aug.identity_params(1)[0], rank=2)
            >>> tta = SteeredTTA.from_term(encoder, term, tta_params(aug, 16, (16, 16))).eval()
            >>> tta(torch.randn(4, 3, 16, 16)).steered.shape
            torch.Size([4, 16, 8])
        """
        if not isinstance(term, SteeringTerm):
            raise TypeError(f"term must be a SteeringTerm, got {type(term).__name__}")
        return cls(nn.Sequential(encoder, nn.Flatten(), term.embed), term.operator, params, grad)

    def steer(self, features: Tensor) -> TTAOutput:
        """Steer precomputed features ``(B, D)`` to the K augmentations."""
        with torch.set_grad_enabled(self.grad and torch.is_grad_enabled()):
            steered = self.operator.steer_many(features, self.params)
            return TTAOutput(steered.mean(dim=1), dispersion(steered), steered)

    def forward(self, images: Tensor) -> TTAOutput:
        """Encode ``images`` ``(B, 3, H, W)`` (already normalised) once and steer."""
        if not isinstance(images, Tensor):
            raise TypeError(
                f"images must be a float tensor (B, 3, H, W), got {type(images).__name__}"
            )
        if images.ndim != 4 or not images.is_floating_point():
            raise ValueError(
                "images must be a float tensor (B, 3, H, W), normalised like the training "
                f"views, got shape {tuple(images.shape)} dtype {images.dtype}"
            )
        with torch.set_grad_enabled(self.grad and torch.is_grad_enabled()):
            return self.steer(self.encoder(images).flatten(1))
