"""Command line and data of the lightly examples: CIFAR-10 for real runs, or a smoke test.

``--smoke`` trains for 2 epochs of 2 batches of 8 images from the Fashion-MNIST sample
shipped with equimod_plugin (no download), to check on a CPU that a script runs.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from typing import Any

import torchvision
from torch.utils.data import Dataset
from torchvision.transforms.functional import to_pil_image

from equimod_plugin.eval.datasets import load_fashion_mnist

FULL = {"epochs": 10, "batch_size": 256, "num_workers": min(8, os.cpu_count() or 1)}
SMOKE = {"epochs": 2, "batch_size": 8, "num_workers": 0}


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def parse_args(description: str) -> argparse.Namespace:
    """``--data-dir``, ``--epochs``, ``--batch-size``, ``--num-workers`` and ``--smoke``."""
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data-dir",
        default="datasets/cifar10",
        help="torchvision CIFAR-10 root, downloaded there on first use (default: %(default)s)",
    )
    parser.add_argument("--epochs", type=_positive_int, help="default 10, smoke 2")
    parser.add_argument("--batch-size", type=_positive_int, help="default 256, smoke 8")
    parser.add_argument(
        "--num-workers",
        type=int,
        help="data loading processes (default up to 8, smoke 0)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="2 batches per epoch of shipped Fashion-MNIST images: a quick check, no download",
    )
    args = parser.parse_args()
    for name, value in (SMOKE if args.smoke else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


class FashionMNISTSample(Dataset[tuple[Any, int]]):
    """The first ``n`` shipped Fashion-MNIST training images, as RGB PIL images like CIFAR-10's.

    Items are ``(transform(image), label)``, as in torchvision's datasets.
    """

    def __init__(self, transform: Callable[[Any], Any], n: int) -> None:
        images, labels = load_fashion_mnist("train", sample=True)
        self.images = [to_pil_image(image).convert("RGB") for image in images[:n]]
        self.labels = labels[:n].tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.transform(self.images[index]), self.labels[index]


def load_dataset(args: argparse.Namespace, transform: Callable[[Any], Any]) -> Dataset[Any]:
    """CIFAR-10's training set in ``args.data_dir``, or 2 batches of the sample with ``--smoke``."""
    if args.smoke:
        return FashionMNISTSample(transform, n=2 * args.batch_size)
    return torchvision.datasets.CIFAR10(args.data_dir, download=True, transform=transform)


def format_metrics(metrics: Mapping[str, float], prefix: str = "") -> str:
    """``prefix+name: value`` pairs for the epoch line, e.g. ``equimod/relative: 1.2345``."""
    return ", ".join(f"{prefix}{name}: {value:.4f}" for name, value in metrics.items())
