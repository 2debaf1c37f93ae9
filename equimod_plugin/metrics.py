"""Measures of how well embeddings follow the augmentations."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from equimod_plugin._checks import check_matrix, check_same_device, check_views

__all__ = ["equivariance_metrics"]


def equivariance_metrics(
    y_o: Tensor, y_views: Tensor, y_pred: Tensor, eps: float = 1e-8
) -> dict[str, Tensor]:
    """EquiMod's absolute and relative equivariance measures (Devillers & Lefort).

    With ``cos_pred = mean cos(y_views[k, i], y_pred[k, i])`` and
    ``cos_original = mean cos(y_views[k, i], y_o[i])``, means over all views k and images i:

    - ``absolute = cos_pred - cos_original``: how much closer the prediction is to the view
      than the original embedding is. 0 for an invariant representation with an identity
      predictor; positive when the predictor uses the augmentation parameters.
    - ``relative = (1 - cos_original) / (1 - cos_pred)``: how many times smaller the cosine
      distance to the prediction is than the distance to the original. 1 when the prediction
      is no better than the original. This is a ratio of means; the official code logs the
      mean of per-sample ratios instead, which a single near-perfect prediction can blow up.
      The denominator is clamped to at least ``eps``, so perfect predictions give a large
      finite value rather than a division by zero.

    Computed without gradients, in float32, and returned as 0-dim tensors on the inputs'
    device: logging them (e.g. Lightning's ``self.log_dict``) needs no host synchronisation
    per step; ``float(value)`` gives a number.

    - [0] EquiMod, Devillers & Lefort, ICLR 2023, https://arxiv.org/abs/2211.01244

    Args:
        y_o: Embeddings of the original images, shape ``(B, E)``.
        y_views: Embeddings of the augmented views, shape ``(V, B, E)``.
        y_pred: Predicted embeddings of the views, shape ``(V, B, E)``.
        eps: Lower bound of the denominator ``1 - cos_pred`` of ``relative``.

    Returns:
        A dict of detached 0-dim float32 tensors with keys ``"absolute"``, ``"relative"``,
        ``"cos_pred"`` and ``"cos_original"``.

    Examples:
        >>> import torch
        >>> y_o = torch.tensor([[1.0, 0.0]])
        >>> y_views = torch.tensor([[[0.0, 1.0]]])  # the view is orthogonal to the original
        >>> y_pred = torch.tensor([[[1.0, 1.0]]])  # the prediction is 45 degrees off
        >>> metrics = equivariance_metrics(y_o, y_views, y_pred)
        >>> round(float(metrics["cos_original"]), 4), round(float(metrics["cos_pred"]), 4)
        (0.0, 0.7071)
        >>> round(float(metrics["absolute"]), 4), round(float(metrics["relative"]), 4)
        (0.7071, 3.4142)
    """
    check_matrix(y_o, "y_o", what="E")
    batch_size, dim = y_o.shape
    check_views(y_views, "y_views", rows=batch_size, cols=dim, what="E")
    check_views(y_pred, "y_pred", views=y_views.shape[0], rows=batch_size, cols=dim, what="E")
    check_same_device(y_o=y_o, y_views=y_views, y_pred=y_pred)
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps!r}")

    with torch.no_grad():
        y_views = y_views.float()
        cos_pred = F.cosine_similarity(y_views, y_pred.float(), dim=-1).mean()
        cos_original = F.cosine_similarity(y_views, y_o.float().expand_as(y_views), dim=-1).mean()
        relative = (1 - cos_original) / (1 - cos_pred).clamp_min(eps)
    return {
        "absolute": cos_pred - cos_original,
        "relative": relative,
        "cos_pred": cos_pred,
        "cos_original": cos_original,
    }
