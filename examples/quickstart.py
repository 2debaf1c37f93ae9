"""Quickstart: augment a batch on the device and print the parameters each view recorded.

    python examples/quickstart.py
"""

from __future__ import annotations

import torch

from equimod_plugin import augment


def main() -> None:
    torch.manual_seed(0)
    images = torch.rand(4, 3, 32, 32)  # any float batch in [0, 1], on any device
    aug = augment.byol(32, view=2, variant="cifar")
    views, params = aug(images)
    print(aug.layout.describe())
    print()
    print("sampled parameters, one row per image:")
    for row in params.tolist():
        print("  " + " ".join(f"{v:6.3f}" for v in row))
    replayed, _ = aug(images, params=params)
    print(f"replay reproduces the views bit for bit: {torch.equal(replayed, views)}")


if __name__ == "__main__":
    main()
