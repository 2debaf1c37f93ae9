"""Quickstart: BYOL + EquiMod on Fashion-MNIST, on the CPU, in a few minutes.

A lightly BYOL model (as in lightly's examples/pytorch/byol.py, with a small convnet) gets
EquiMod's equivariance term through the three lines marked ``# equimod``. It trains on the
Fashion-MNIST sample shipped with the package (5000 images; the full dataset is used when
``--data-dir`` or Debian's ``dataset-fashion-mnist`` provides it), then reports a linear
probe on frozen backbone features (against the same encoder at random init) and EquiMod's
equivariance metrics on held-out images, in eval mode after recomputing the BatchNorm
statistics for the final weights (without that, the running statistics lag the weights and
the eval-mode equivariance reads low: the script prints both).

This script is ``examples/quickstart.py`` in the repository (copy it out to adapt it: it
imports only installed packages) and, unchanged, the module ``equimod_plugin.quickstart`` of
the installed package, so that a pip install can run it (the tests keep the two identical).
It needs the ``examples`` extra: ``pip install 'equimod-plugin[examples]'``.

    python -m equimod_plugin.quickstart            # about 4 minutes on 2 CPU cores
    python -m equimod_plugin.quickstart --smoke    # a few seconds, for tests
    equimod-quickstart --smoke                     # the same, as a console script
    python examples/quickstart.py --smoke          # the same, from a clone
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F
from torch import nn

from equimod_plugin import augment
from equimod_plugin.augment import Normalize
from equimod_plugin.eval.batchnorm import recalibrate_batchnorm
from equimod_plugin.eval.datasets import fashion_mnist_source, load_fashion_mnist
from equimod_plugin.eval.probes import extract_features, linear_probe

try:  # the `examples` extra: lightly (with torchvision) and tqdm
    from lightly.loss import NegativeCosineSimilarity
    from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum
    from lightly.utils.scheduler import cosine_schedule
    from tqdm import tqdm

    from equimod_plugin.integrations.lightly import attach
except ImportError as error:
    missing = (error.name or getattr(error.__cause__, "name", None) or "").split(".")[0]
    message = f"the quickstart needs {missing or error}: pip install 'equimod-plugin[examples]'"
    raise ImportError(message) from error


def convnet(width: int = 32) -> nn.Module:
    """6 conv-BN-ReLU layers, two of them strided, and global average pooling."""
    layers: list[nn.Module] = []
    channels = 3
    for i in range(6):
        layers += [
            nn.Conv2d(channels, width, 3, stride=2 if i in (2, 4) else 1, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())


class BYOL(nn.Module):
    def __init__(self, backbone: nn.Module, dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = BYOLProjectionHead(dim, 256, 64)
        self.prediction_head = BYOLPredictionHead(64, 256, 64)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.backbone(x).flatten(start_dim=1)
        z = self.projection_head(y)
        return self.prediction_head(z)

    def forward_momentum(self, x: torch.Tensor) -> torch.Tensor:
        y = self.backbone_momentum(x).flatten(start_dim=1)
        z = self.projection_head_momentum(y)
        return z.detach()


def to_rgb32(images: torch.Tensor) -> torch.Tensor:
    """Grey (N, 1, 28, 28) -> RGB (N, 3, 32, 32), values in [0, 1]."""
    return F.interpolate(images, size=32, mode="bilinear").clamp(0, 1).expand(-1, 3, -1, -1)


def probe(backbone: nn.Module, normalize: Normalize, train, test) -> float:
    train_features = extract_features(backbone, to_rgb32(train[0]), transform=normalize)
    test_features = extract_features(backbone, to_rgb32(test[0]), transform=normalize)
    return linear_probe(train_features, train[1], test_features, test[1])


def held_out_equivariance(model: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """EquiMod's metrics on ``images`` in eval mode, with a fixed seed for the views."""
    model.eval()
    with torch.no_grad():
        torch.manual_seed(1)
        model.equivariance.views(to_rgb32(images))
        model.equivariance.loss()
    return model.equivariance.metrics()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder of the Fashion-MNIST idx files (default: the full set if Debian's "
        "dataset-fashion-mnist is installed, else the 5000-image sample inside the package)",
    )
    parser.add_argument("--epochs", type=int, default=4, help="training epochs (default 4)")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size (default 128)")
    parser.add_argument(
        "--train-images",
        type=int,
        default=5000,
        help="training images used (default 5000)",
    )
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="torch device (default: cuda if available, else cpu)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and views (default 0)")
    parser.add_argument("--smoke", action="store_true", help="1 epoch on 256 images, for tests")
    args = parser.parse_args()
    if args.smoke:
        args.epochs, args.train_images = 1, 256
    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    train = load_fashion_mnist("train", root=args.data_dir)
    test = load_fashion_mnist("test", root=args.data_dir)
    train = (train[0][: args.train_images], train[1][: args.train_images])
    print(f"data: {fashion_mnist_source('train', root=args.data_dir)}")
    print(f"      {len(train[0])} training images, {len(test[0])} test images")

    device = torch.device(args.device)
    model = BYOL(convnet(), dim=32)
    model.to(device)
    random_init = copy.deepcopy(model.backbone)
    attach(model, augment.byol_views(32, variant="cifar"), hidden_dim=512)  # equimod
    dataloader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(train[0]),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
    )
    criterion = NegativeCosineSimilarity()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)

    start = time.perf_counter()
    for epoch in range(args.epochs):
        total_loss = 0.0
        momentum_val = cosine_schedule(epoch, args.epochs, 0.996, 1)
        for (images,) in tqdm(dataloader, desc=f"epoch {epoch}", leave=False):
            x0, x1 = model.equivariance.views(to_rgb32(images))  # equimod
            update_momentum(model.backbone, model.backbone_momentum, m=momentum_val)
            update_momentum(model.projection_head, model.projection_head_momentum, m=momentum_val)
            p0 = model(x0)
            z0 = model.forward_momentum(x0)
            p1 = model(x1)
            z1 = model.forward_momentum(x1)
            loss = 0.5 * (criterion(p0, z1) + criterion(p1, z0))
            loss = loss + model.equivariance.loss()  # equimod
            total_loss += loss.detach()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        avg_loss = float(total_loss) / len(dataloader)
        metrics = model.equivariance.metrics()
        print(f"epoch: {epoch:>02}, loss: {avg_loss:.5f}, equivariance loss: {metrics['loss']:.4f}")
        if not torch.isfinite(torch.tensor(avg_loss)):
            raise SystemExit("the loss is not finite")
    minutes = (time.perf_counter() - start) / 60

    stale = held_out_equivariance(model, test[0][:512])

    # eval-mode BatchNorm statistics for the final weights: an exact average over 20 batches
    def training_pass(images: torch.Tensor) -> None:
        model.equivariance.views(to_rgb32(images))
        model.equivariance.loss()

    batches = train[0][: 20 * args.batch_size].split(args.batch_size)
    recalibrate_batchnorm(model, batches, training_pass)
    held_out = held_out_equivariance(model, test[0][:512])
    print(f"\ntrained {args.epochs} epochs in {minutes:.1f} min on {device}")
    normalize = model.equivariance.normalize
    print(f"linear probe, frozen backbone: {probe(model.backbone, normalize, train, test):.1%}")
    print(f"linear probe, random init:     {probe(random_init, normalize, train, test):.1%}")
    print(
        "equivariance on 512 held-out images: "
        f"absolute {held_out['absolute']:.3f}, relative {held_out['relative']:.2f} "
        f"(cos(y, y_pred) {held_out['cos_pred']:.3f} vs cos(y, y_o) {held_out['cos_original']:.3f})"
    )
    print(f"  (relative {stale['relative']:.2f} before recomputing the BatchNorm statistics)")


if __name__ == "__main__":
    main()
