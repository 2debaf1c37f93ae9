"""SimCLR on CIFAR-10 with lightly, plus EquiMod's equivariance term.

This is lightly's example ``examples/pytorch/simclr.py`` with EquiMod added. The three lines
marked ``# equimod`` are the whole change to lightly's training code:

1. ``attach(model, ...)`` replaces ``SimCLRTransform``: it registers the equivariance branch as
   ``model.equivariance`` and returns the dataset transform, which now yields the original
   images; the branch makes both views on the device, recording their parameters;
2. ``model.equivariance.views(batch[0])`` makes the views instead of unpacking them;
3. ``model.equivariance.loss()`` is added to SimCLR's loss.

Everything else around them is scaffolding of this script: ``main()`` (safe for data-loading
workers that are spawned), the command line, the smoke data, a progress bar, the equivariance
metrics on the epoch line (those of the epoch's last step) and a non-zero exit if the loss is
not finite.

Smoke test (shipped images, no download, well under a minute on a CPU)::

    python examples/lightly_simclr.py --smoke

Full run (downloads CIFAR-10 to ``--data-dir``, default ``~/.cache/equimod-plugin/cifar10``;
``--device`` defaults to ``cuda`` when available, else ``cpu``; ``--seed`` to 0)::

    python examples/lightly_simclr.py --epochs 10
    python examples/lightly_simclr.py --data-dir /data/cifar10 --device cuda:1 --seed 1

Requires ``pip install "equimod-plugin[examples]"``. As in lightly's example, the model and
training settings are chosen to run on a small dataset with a single GPU, not those of the
papers.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import torch
from torch import Tensor, nn

from equimod_plugin.augment import simclr
from equimod_plugin.eval.datasets import FashionMNISTSample

try:  # the `examples` extra: lightly (with torchvision) and tqdm
    import torchvision
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from tqdm import tqdm

    from equimod_plugin.integrations.lightly import attach
except ImportError as error:
    raise ImportError(f"this example needs {error.name}: pip install 'equimod-plugin[examples]'") from error

# CIFAR-10 is downloaded here unless --data-dir says otherwise, wherever the script runs from
DATA_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "equimod-plugin" / "cifar10"


class SimCLR(nn.Module):
    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(512, 512, 128)

    def forward(self, x: Tensor) -> Tensor:
        x = self.backbone(x).flatten(start_dim=1)
        z = self.projection_head(x)
        return z


def torch_device(name: str) -> torch.device:
    """The type of ``--device``: a bad name is an error of the option, not a traceback."""
    try:
        return torch.device(name)
    except RuntimeError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-dir", type=Path, default=DATA_DIR, help="CIFAR-10 root, downloaded on first use (default: %(default)s)"
    )
    parser.add_argument(
        "--device",
        type=torch_device,
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="where the model trains, e.g. cpu, cuda, cuda:1 (default: cuda if available, else cpu)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the weights, data order and views (default: 0)")
    parser.add_argument("--epochs", type=int, help="training epochs (default 10, smoke 2)")
    parser.add_argument("--batch-size", type=int, help="images per batch (default 256, smoke 8)")
    parser.add_argument("--num-workers", type=int, help="data loading processes (default up to 8, smoke 0)")
    parser.add_argument("--smoke", action="store_true", help="2 batches per epoch of shipped images, no download")
    args = parser.parse_args()
    full = {"epochs": 10, "batch_size": 256, "num_workers": min(8, os.cpu_count() or 1)}
    for name, value in ({"epochs": 2, "batch_size": 8, "num_workers": 0} if args.smoke else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.epochs < 1 or args.batch_size < 1:
        parser.error(f"--epochs and --batch-size must be positive, got {args.epochs} and {args.batch_size}")
    return args


def main() -> None:
    args = parse_args()
    print(f"device: {args.device}, seed: {args.seed}")
    torch.manual_seed(args.seed)

    resnet = torchvision.models.resnet18()
    backbone = nn.Sequential(*list(resnet.children())[:-1])
    model = SimCLR(backbone)

    device = args.device
    model.to(device)

    # SimCLR's augmentation for both views, made on the device (EquiMod's CIFAR-10 recipe).
    transform = attach(model, simclr(32, variant="cifar"))  # equimod
    if args.smoke:  # 2 batches of the Fashion-MNIST sample shipped with equimod_plugin
        dataset = FashionMNISTSample(transform, n=2 * args.batch_size)
    else:
        dataset = torchvision.datasets.CIFAR10(args.data_dir, download=True, transform=transform)
    # or create a dataset from a folder containing images or videos:
    # dataset = LightlyDataset("path/to/folder", transform=transform)

    dataloader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.num_workers,
    )

    criterion = NTXentLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06)

    print("Starting Training")
    for epoch in range(args.epochs):
        total_loss = 0
        for batch in tqdm(dataloader, desc=f"epoch {epoch:>02}", leave=False):
            x0, x1 = model.equivariance.views(batch[0])  # equimod
            x0 = x0.to(device)
            x1 = x1.to(device)
            z0 = model(x0)
            z1 = model(x1)
            loss = criterion(z0, z1)
            loss = loss + model.equivariance.loss()  # equimod
            total_loss += loss.detach()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        avg_loss = total_loss / len(dataloader)
        metrics = ", ".join(f"equimod/{k}: {v:.4f}" for k, v in model.equivariance.metrics().items())
        print(f"epoch: {epoch:>02}, loss: {avg_loss:.5f}, {metrics}")

    if not math.isfinite(avg_loss):
        sys.exit(f"the loss is not finite: {avg_loss}")


if __name__ == "__main__":
    main()
