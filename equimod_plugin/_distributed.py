"""Gathering tensors across processes with gradients, for losses with global negatives."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["gather", "rank", "world_size"]


def rank() -> int:
    """Rank of this process, 0 when torch.distributed is not initialised."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes, 1 when torch.distributed is not initialised."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _Gather(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums the gradients of all ranks.

    Same convention as lightly's ``GatherLayer``: each rank receives the gradient that every
    rank's loss sends to its own rows, so with DDP's gradient averaging the result equals a
    single process holding the whole batch. Uses only ``all_gather`` and ``all_reduce``, which
    every backend (gloo, nccl) supports.
    """

    @staticmethod
    def forward(ctx: Any, t: Tensor) -> Tensor:
        chunks = [torch.empty_like(t) for _ in range(dist.get_world_size())]
        dist.all_gather(chunks, t.contiguous())
        ctx.rows = t.shape[0]
        return torch.cat(chunks, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


def gather(t: Tensor) -> Tensor:
    """Concatenates ``t`` of every rank along dim 0, keeping gradients.

    All ranks must pass tensors of the same shape. Returns ``t`` itself when
    torch.distributed is not initialised or there is a single process.
    """
    if world_size() == 1:
        return t
    gathered: Tensor = _Gather.apply(t)
    return gathered
