"""SimCLR on CIFAR-10 with lightly and PyTorch Lightning, plus EquiMod's equivariance term.

This is lightly's example ``examples/pytorch_lightning/simclr.py`` with EquiMod added; the
lines marked ``# equimod`` are the change:

1. ``__init__`` registers an equivariance branch on ``self.backbone`` with SimCLR's
   augmentation for both views;
2. the dataset transform is ``OriginalTransform(32)``: it yields the original images and the
   branch makes both views on the device, recording their parameters;
3. ``training_step`` takes the views from ``self.equivariance.views(batch[0])``, adds
   ``self.equivariance.loss()`` to SimCLR's loss and logs the equivariance metrics.

The script also logs the loss (progress bar), prints the epoch means of the loss and the
equivariance metrics at the end, and exits non-zero if the loss is not finite.

Smoke test (shipped images, no download, well under a minute on a CPU)::

    python examples/lightly_simclr_lightning.py --smoke

Full run (downloads CIFAR-10 to ``--data-dir``, default ``~/.cache/equimod-plugin/cifar10``;
``--device`` defaults to ``cuda`` when available, else ``cpu``; ``--seed`` to 0)::

    python examples/lightly_simclr_lightning.py --epochs 10
    python examples/lightly_simclr_lightning.py --data-dir /data/cifar10 --device cuda:1 --seed 1

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

from equimod_plugin import equimod_branch
from equimod_plugin.augment import simclr
from equimod_plugin.eval.datasets import FashionMNISTSample

try:  # the `examples` extra: lightly (with torchvision) and PyTorch Lightning
    import pytorch_lightning as pl
    import torchvision
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead

    from equimod_plugin.integrations.lightly import OriginalTransform
except ImportError as error:
    raise ImportError(f"this example needs {error.name}: pip install 'equimod-plugin[examples]'") from error

# CIFAR-10 is downloaded here unless --data-dir says otherwise, wherever the script runs from
DATA_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "equimod-plugin" / "cifar10"


class SimCLR(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        resnet = torchvision.models.resnet18()
        self.backbone = nn.Sequential(*list(resnet.children())[:-1])
        self.projection_head = SimCLRProjectionHead(512, 2048, 2048)
        self.criterion = NTXentLoss()
        self.equivariance = equimod_branch(self.backbone, simclr(32, variant="cifar"))  # equimod

    def forward(self, x: Tensor) -> Tensor:
        x = self.backbone(x).flatten(start_dim=1)
        z = self.projection_head(x)
        return z

    def training_step(self, batch: list[Tensor], batch_index: int) -> Tensor:
        (x0, x1) = self.equivariance.views(batch[0])  # equimod
        z0 = self.forward(x0)
        z1 = self.forward(x1)
        loss = self.criterion(z0, z1)
        loss = loss + self.equivariance.loss()  # equimod
        self.log("loss", loss, prog_bar=True, on_epoch=True)
        metrics = {f"equimod/{k}": v for k, v in self.equivariance.metrics().items()}  # equimod
        self.log_dict(metrics, on_step=False, on_epoch=True)  # equimod
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        optim = torch.optim.SGD(self.parameters(), lr=0.06)
        return optim


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
    pl.seed_everything(args.seed)

    model = SimCLR()

    transform = OriginalTransform(32)  # equimod
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

    trainer = pl.Trainer(
        max_epochs=args.epochs,
        devices=1 if args.device.index is None else [args.device.index],
        accelerator=args.device.type,
        logger=not args.smoke,
        enable_checkpointing=not args.smoke,
    )
    trainer.fit(model=model, train_dataloaders=dataloader)

    metrics = trainer.callback_metrics  # epoch means of the last epoch
    equimod = ", ".join(f"{name}: {value:.4f}" for name, value in metrics.items() if name.startswith("equimod/"))
    loss = float(metrics["loss_epoch"])
    print(f"epoch: {trainer.current_epoch - 1:>02}, loss: {loss:.5f}, {equimod}")
    if not math.isfinite(loss):
        sys.exit(f"the loss is not finite: {loss}")


if __name__ == "__main__":
    main()
