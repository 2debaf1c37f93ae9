"""Losses that train predicted view embeddings towards the embeddings of the views."""

from __future__ import annotations

import math
import numbers

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn import functional as F

from equimod_plugin import _distributed
from equimod_plugin._checks import check_flags, check_same_device, check_views

__all__ = ["EquiModCosineLoss", "EquiModLoss"]


def _check_embeddings(y_views: Tensor, y_pred: Tensor) -> None:
    check_views(y_views, "y_views", what="E")
    num_views, batch_size, dim = y_views.shape
    check_views(y_pred, "y_pred", views=num_views, rows=batch_size, cols=dim, what="E")
    check_same_device(y_views=y_views, y_pred=y_pred)


class EquiModLoss(nn.Module):
    """NT-Xent loss between predicted and actual view embeddings, as in EquiMod.

    The 2N vectors ``[y_views; y_pred]`` (N = V * B, all views stacked) are compared by cosine
    similarity divided by ``temperature``. Every vector is an anchor: the positive of
    ``y_pred[k, i]`` is ``y_views[k, i]`` and vice versa, and every other vector is a
    negative, the other views of the same image and the other predictions included. The
    embedding of the original image is not a candidate and no gradient is stopped. This is the
    official code's loss; for V = 2 it equals lightly's ``NTXentLoss(temperature)`` applied to
    ``out0 = cat[y_pred[0], y_pred[1]]`` and ``out1 = cat[y_views[0], y_views[1]]``.

    With ``exclude_sibling=True`` the vectors of the same image from the other views (both
    ``y_views[j, i]`` and ``y_pred[j, i]`` for ``j != k``) are removed from the negatives of
    the anchors ``y_views[k, i]`` and ``y_pred[k, i]``. Secondary sources say the paper's
    equation excludes them; this could not be verified against the paper. The default
    ``False`` reproduces the official code. With V = 1 both variants are the same.

    - [0] EquiMod, Devillers & Lefort, ICLR 2023, https://arxiv.org/abs/2211.01244

    Args:
        temperature: Positive temperature dividing the cosine similarities (0.2 in every
            published EquiMod run).
        exclude_sibling: Remove the other views of the same image from the negatives.
        gather_distributed: Gather the candidates from all processes (with gradients) before
            computing the loss, as lightly's ``NTXentLoss`` does: anchors and positives stay
            local, negatives come from every rank. Ranks may have different batch sizes (a
            last batch without ``drop_last``); each returns its share of the whole batch's
            loss, so that DDP's average over ranks of the losses and of the gradients equals
            one process holding every rank's samples. A no-op when torch.distributed is not
            initialised.

    Raises:
        TypeError: If ``temperature`` is not a real number (a bool included), or
            ``exclude_sibling`` or ``gather_distributed`` is not a bool.
        ValueError: If ``temperature`` is not a positive finite number, or if
            ``gather_distributed`` is set and torch.distributed is not available.

    Examples:
        >>> import torch
        >>> loss_fn = EquiModLoss(temperature=0.2)
        >>> y_views = torch.randn(2, 8, 16)  # embeddings of V=2 views of B=8 images
        >>> y_pred = torch.randn(2, 8, 16)  # their predictions from the originals
        >>> loss = loss_fn(y_views, y_pred)
        >>> loss.shape
        torch.Size([])
    """

    def __init__(
        self,
        temperature: float = 0.2,
        exclude_sibling: bool = False,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
            raise TypeError(
                f"temperature must be a positive finite number (a float such as 0.2), got "
                f"{temperature!r} of type {type(temperature).__name__}"
            )
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
        check_flags(exclude_sibling=exclude_sibling, gather_distributed=gather_distributed)
        if gather_distributed and not dist.is_available():
            raise ValueError(
                "gather_distributed is True but torch.distributed is not available; set "
                "gather_distributed=False or install torch with distributed support"
            )
        self.temperature = float(temperature)
        self.exclude_sibling = exclude_sibling
        self.gather_distributed = gather_distributed

    def forward(self, y_views: Tensor, y_pred: Tensor) -> Tensor:
        """Computes the loss.

        Args:
            y_views: Embeddings of the augmented views, shape ``(V, B, E)``.
            y_pred: Predicted embeddings of the same views, shape ``(V, B, E)``.

        Returns:
            The loss averaged over the 2 * V * B local anchors, a scalar. Gathered across
            several processes: the sum over the local anchors times ``world_size / (2 * V *
            total B)``, the local mean when every rank has the same batch size.
        """
        _check_embeddings(y_views, y_pred)
        num_views, batch_size, _ = y_views.shape
        n = num_views * batch_size
        z = F.normalize(torch.cat([y_views.flatten(0, 1), y_pred.flatten(0, 1)]), dim=1)

        candidates, offset = z, 0
        if self.gather_distributed and _distributed.world_size() > 1:
            sizes = _distributed.rows(z)
            candidates = _distributed.gather(z, sizes)
            offset = sum(sizes[: _distributed.rank()])  # this rank's rows in the candidates
        logits = z @ candidates.T / self.temperature

        # Row r = s * n + k * batch_size + i holds side s (views, predictions), view k, image i.
        index = torch.arange(2 * n, device=z.device)
        excluded = index[:, None] == index[None, :]
        if self.exclude_sibling:
            image = index % batch_size
            view = (index % n) // batch_size
            excluded |= (image[:, None] == image[None, :]) & (view[:, None] != view[None, :])
        mask = torch.zeros_like(logits, dtype=torch.bool)
        mask[:, offset : offset + 2 * n] = excluded
        logits = logits.masked_fill(mask, float("-inf"))

        labels = (index + n) % (2 * n) + offset
        if candidates is z:
            return F.cross_entropy(logits, labels)
        # This rank's share of the mean over all ranks' anchors (one per candidate): DDP's
        # average over ranks of these losses, and of their gradients, is the whole batch's.
        share = _distributed.world_size() / candidates.shape[0]
        return F.cross_entropy(logits, labels, reduction="sum") * share


class EquiModCosineLoss(nn.Module):
    """Negative-free equivariance loss: mean of ``1 - cos(y_pred[k, i], y_views[k, i])``.

    A simpler variant of the EquiMod [0] equivariance loss that only pulls each prediction
    towards its target. Without negatives nothing prevents the embeddings from collapsing to
    a constant, so use it only alongside an invariance loss that prevents collapse.

    - [0] EquiMod, Devillers & Lefort, ICLR 2023, https://arxiv.org/abs/2211.01244

    Examples:
        >>> import torch
        >>> loss_fn = EquiModCosineLoss()
        >>> y_views = torch.randn(2, 8, 16)
        >>> bool(loss_fn(y_views, 3 * y_views) < 1e-6)  # perfect predictions up to scale
        True
    """

    def forward(self, y_views: Tensor, y_pred: Tensor) -> Tensor:
        """Computes the loss.

        Args:
            y_views: Embeddings of the augmented views, shape ``(V, B, E)``.
            y_pred: Predicted embeddings of the same views, shape ``(V, B, E)``.

        Returns:
            The mean over views and images of ``1 - cos``, a scalar in [0, 2].
        """
        _check_embeddings(y_views, y_pred)
        return (1 - F.cosine_similarity(y_pred, y_views, dim=-1)).mean()
