"""What the CPU experiments share: tinted Fashion-MNIST at 32 px, the branch's normalisation and
the post-hoc fit of a steering operator on frozen embeddings.

Used by ``steering_eval.py``, ``augmentation_report.py`` and ``reproduce_cpu.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from equimod_plugin import SteeringLoss, SteeringOperator
from equimod_plugin.datasets import load_fashion_mnist, random_hue_labels, tint
from equimod_plugin.wrap import IMAGENET_NORMALIZE


def normalize(images: Tensor) -> Tensor:
    """What the branch feeds the backbone: ImageNet mean/std normalisation of [0, 1] images."""
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in IMAGENET_NORMALIZE)
    return (images - mean) / std


def tinted_split(
    split: str, n: int, num_hues: int, seed: int, sample: bool | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` random images of a Fashion-MNIST split, tinted, and their class and hue labels.

    Images ``(n, 3, 32, 32)`` in [0, 1]; ``num_hues = 0`` keeps them grey (hue labels all 0).
    ``seed`` fixes the images and the hues; ``sample`` is passed to ``load_fashion_mnist``
    (``True``: the shipped 5000/1000 sample, ``None``: the full set where installed).
    """
    images, labels = load_fashion_mnist(split, sample=sample)
    g = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(labels), generator=g)[:n]
    hues = random_hue_labels(len(index), max(num_hues, 1), g)
    rgb = tint(images[index], hues, num_hues) if num_hues else images[index].expand(-1, 3, -1, -1)
    return F.interpolate(rgb, size=32, mode="bilinear").clamp(0, 1), labels[index], hues


def fit_operator(
    e_o: Tensor, e_a: Tensor, params: Tensor, identity: Tensor, epochs: int, seed: int
) -> SteeringOperator:
    """Post-hoc low-rank operator on frozen embeddings ``e(x)``, ``e(a(x))`` ``(N, D)`` and the
    parameters ``(N, P)``: Adam (lr 3e-3, batches of 256) on the steering term's cosine loss."""
    torch.manual_seed(seed)
    operator = SteeringOperator(e_o.shape[1], params.shape[1], kind="low_rank", identity=identity)
    optimizer = torch.optim.Adam(operator.parameters(), lr=3e-3)
    criterion = SteeringLoss("cosine")
    for _ in range(epochs):
        for index in torch.randperm(len(e_o)).split(256):
            loss = criterion(operator(e_o[index], params[index]), e_a[index])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    return operator.eval()
