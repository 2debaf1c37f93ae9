"""Gathering tensors across processes with gradients, for losses with global negatives."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn import functional as F

__all__ = ["gather", "rank", "rows", "world_size"]


def rank() -> int:
    """Rank of this process, 0 when torch.distributed is not initialised."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes, 1 when torch.distributed is not initialised."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rows(t: Tensor) -> list[int]:
    """The number of rows (``t.shape[0]``) of every rank's ``t``, in rank order.

    A collective: every rank must call it. Ranks may have different numbers of rows (the last
    batch of an epoch without ``drop_last``), but the rest of the shape must agree; otherwise
    every rank raises the same ``ValueError`` (no rank is left waiting in a collective).
    Returns ``[t.shape[0]]`` when torch.distributed is not initialised.
    """
    if world_size() == 1:
        return [t.shape[0]]
    if t.ndim == 0:
        raise ValueError("gather needs tensors with a batch dimension, got a scalar")
    row_numel = math.prod(t.shape[1:])
    local = torch.tensor([t.shape[0], row_numel], dtype=torch.int64, device=t.device)
    shapes = [torch.empty_like(local) for _ in range(world_size())]
    dist.all_gather(shapes, local)
    sizes = [(int(s[0]), int(s[1])) for s in shapes]
    if len({numel for _, numel in sizes}) > 1:
        listed = ", ".join(f"rank {r}: {numel}" for r, (_, numel) in enumerate(sizes))
        raise ValueError(
            "every rank must gather tensors with the same shape apart from the batch "
            f"dimension; elements per row differ ({listed})"
        )
    return [n for n, _ in sizes]


class _Gather(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums the gradients of all ranks.

    Same convention as lightly's ``GatherLayer``: each rank receives the gradient that every
    rank's loss sends to its own rows. Ranks may hold different numbers of rows (``sizes``):
    each pads its tensor to the largest, and the padding is stripped after the all-gather.
    Uses only ``all_gather`` and ``all_reduce``, which every backend (gloo, nccl) supports.
    """

    @staticmethod
    def forward(ctx: Any, t: Tensor, sizes: list[int]) -> Tensor:
        padded = F.pad(t.contiguous(), (0, 0) * (t.ndim - 1) + (0, max(sizes) - t.shape[0]))
        chunks = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(chunks, padded)
        ctx.start = sum(sizes[: dist.get_rank()])
        ctx.rows = t.shape[0]
        return torch.cat([chunk[:n] for chunk, n in zip(chunks, sizes, strict=True)], dim=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.start : ctx.start + ctx.rows], None


def gather(t: Tensor, sizes: list[int] | None = None) -> Tensor:
    """Concatenates ``t`` of every rank along dim 0, in rank order, keeping gradients.

    Ranks may pass different numbers of rows; the rest of the shape, the dtype and the device
    type must agree. This rank's rows start at ``sum(sizes[:rank()])`` in the result. Pass
    ``sizes`` from :func:`rows` when the caller needs them too (saves one collective).
    Returns ``t`` itself when torch.distributed is not initialised or there is a single
    process.

    Example (one process, nothing to gather):
        >>> import torch
        >>> t = torch.ones(3, 2)
        >>> gather(t) is t, rows(t)
        (True, [3])
    """
    if world_size() == 1:
        return t
    if sizes is None:
        sizes = rows(t)
    if len(sizes) != world_size() or sizes[rank()] != t.shape[0]:
        raise ValueError(
            f"sizes must list the rows of every rank, with {t.shape[0]} for rank {rank()}; "
            f"got {sizes}: pass the result of rows(t)"
        )
    gathered: Tensor = _Gather.apply(t, sizes)
    return gathered
