"""Precise BatchNorm statistics: running averages recomputed for the final weights.

A BatchNorm layer's running mean and variance are exponential averages over the last training
steps (about ``1 / momentum`` of them), taken while the weights still moved. With a high
learning rate at the end of a short run they lag the final weights, and eval-mode outputs
differ from what the training loss saw: on the quickstart's BYOL + EquiMod model, EquiMod's
relative equivariance on held-out images is lower in eval mode than with batch statistics
(``docs/quickstart.md`` gives the measurement). Recomputing the statistics as an exact
average over a few batches with the final weights ("precise BN", Wu & Johnson 2021,
arXiv 2105.07576) removes the lag before evaluating.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["recalibrate_batchnorm"]


def recalibrate_batchnorm(
    module: nn.Module,
    batches: Iterable[Any],
    forward: Callable[[Any], object] | None = None,
) -> int:
    """Set every BatchNorm's running statistics in ``module`` to their average over ``batches``.

    Each BatchNorm that tracks running statistics is reset and switched to a cumulative
    average (``momentum=None``); then ``forward(batch)`` (default ``module(batch)``) runs for
    every batch in train mode without gradients, so each running mean is exactly the mean of
    the batch means, and each running variance the mean of the unbiased batch variances.
    Afterwards every submodule's mode and every BatchNorm's momentum are restored. If
    ``batches`` is empty or ``forward`` raises, the statistics are restored as they were.

    Use batches of the training distribution, of the training batch size, and a ``forward``
    that runs what a training step runs, e.g. for a model with an equivariance branch (shapes:
    ``images (B, C, H, W)``):

    ``recalibrate_batchnorm(model, loader, lambda images: (model.equivariance.views(images),
    model.equivariance.loss()))``

    Args:
        module: The model whose BatchNorm layers (any ``_BatchNorm``, ``SyncBatchNorm``
            included) are recalibrated.
        batches: The batches ``forward`` receives; 10-50 batches are usually enough.
        forward: Runs one batch through the model; its result is ignored.

    Returns:
        The number of batches used.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
        >>> batches = [torch.randn(32, 3) + 5 for _ in range(4)]
        >>> recalibrate_batchnorm(net, batches)
        4
        >>> means = torch.stack([net[0](b).mean(0) for b in batches]).mean(0)
        >>> torch.allclose(net[1].running_mean, means.detach(), atol=1e-5), net.training
        (True, True)
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if forward is not None and not callable(forward):
        raise TypeError(f"forward must be callable or None, got {type(forward).__name__}")
    run = module if forward is None else forward
    layers = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    saved = [
        (layer.momentum, {k: v.clone() for k, v in layer.named_buffers(recurse=False)})
        for layer in layers
    ]
    modes = [(m, m.training) for m in module.modules()]
    count = 0
    try:
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None
        module.train()
        with torch.no_grad():
            for batch in batches:
                run(batch)
                count += 1
        if count == 0:
            raise ValueError(
                "batches yielded no batch: pass at least one batch of training images; the "
                "running statistics were left unchanged"
            )
    except BaseException:
        for layer, (_, buffers) in zip(layers, saved, strict=True):
            for name, value in buffers.items():
                getattr(layer, name).copy_(value)
        raise
    finally:
        for layer, (momentum, _) in zip(layers, saved, strict=True):
            layer.momentum = momentum
        for m, training in modes:
            m.training = training
    return count
