"""What pretrain.py and linear_eval.py share: configs, command line, backbones, data, trainer.

The recipes are YAML files in ``configs/``; every number there cites its source. This module
holds no hyper-parameter of its own except the ``--smoke`` settings below.
"""

from __future__ import annotations

import argparse
import copy
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torchvision
import yaml
from pytorch_lightning.loggers import CSVLogger
from torch import nn
from torch.utils.data import Dataset

from equimod_plugin.eval.datasets import FashionMNISTSample

HERE = Path(__file__).resolve().parent
CONFIGS = HERE / "configs"

__all__ = [
    "CONFIGS",
    "SMOKE",
    "SMOKE_STEPS",
    "Config",
    "FashionMNISTSample",
    "add_run_args",
    "build_backbone",
    "build_trainer",
    "dataset",
    "finish_config",
    "format_metrics",
    "load_config",
    "loader",
    "set_key",
]

Config = dict[str, Any]

#: ``--smoke``: 2 steps of 8 shipped Fashion-MNIST images on the CPU, fp32, no download, no
#: logger; the first step ends the warm-up, so it runs at the recipe's peak learning rate.
SMOKE = {
    "train.epochs": 1,
    "train.batch_size": 8,
    "train.warmup_epochs": 0.5,
    "train.num_workers": 0,
    "trainer.precision": "32-true",
}
SMOKE_STEPS = 2


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def format_metrics(metrics: Mapping[str, float], prefix: str = "") -> str:
    """``prefix+name: value`` pairs for the epoch line, e.g. ``equimod/relative: 1.2345``."""
    return ", ".join(f"{prefix}{name}: {value:.4f}" for name, value in metrics.items())


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """The YAML recipe at ``path`` with ``key.sub=value`` overrides (values parsed as YAML)."""
    with open(path) as f:
        cfg: Config = yaml.safe_load(f)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        set_key(cfg, key, yaml.safe_load(value))
    return cfg


def set_key(cfg: Config, dotted: str, value: Any, create: bool = False) -> None:
    """Set ``cfg["a"]["b"] = value`` for ``dotted = "a.b"``; unknown keys fail unless ``create``."""
    *parents, last = dotted.split(".")
    node = cfg
    for name in parents:
        if not isinstance(node.get(name), dict):
            raise SystemExit(f"unknown config section {name!r} in {dotted!r}")
        node = node[name]
    if last not in node and not create:
        raise SystemExit(f"unknown config key {dotted!r}")
    node[last] = value


def add_run_args(parser: argparse.ArgumentParser, what: str) -> None:
    """Options of both scripts: data, devices, precision, batch, epochs, output, smoke."""
    parser.add_argument("--config", type=Path, help=f"{what} YAML (default: by --dataset)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set optimizer.lr=2.0 (repeatable)",
    )
    parser.add_argument(
        "--data-dir",
        default="datasets",
        help="CIFAR-10: torchvision root, downloaded there on first use; ImageNet: a folder "
        "with train/ and val/ in ImageFolder layout (default: %(default)s)",
    )
    parser.add_argument("--output-dir", type=Path, help="checkpoints and CSV logs")
    parser.add_argument("--batch-size", type=_positive_int, help="total over all devices")
    parser.add_argument("--epochs", type=_positive_int)
    parser.add_argument("--num-workers", type=int, help="data loading processes per device")
    parser.add_argument("--accelerator", default="auto", help="gpu, cpu, ... (default: auto)")
    parser.add_argument("--devices", type=_positive_int, default=1, help="devices per node")
    parser.add_argument("--num-nodes", type=_positive_int, default=1)
    parser.add_argument(
        "--precision",
        choices=["32-true", "16-mixed", "bf16-mixed"],
        help="default: the config's (mixed precision), smoke 32-true",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"{SMOKE_STEPS} steps of 8 shipped Fashion-MNIST images on the CPU: a quick check "
        "that a recipe runs (no download)",
    )


def finish_config(cfg: Config, args: argparse.Namespace) -> Config:
    """Apply ``--smoke`` and the command-line values to a copy of ``cfg``."""
    cfg = copy.deepcopy(cfg)
    cfg.setdefault("trainer", {})
    if args.smoke:
        for key, value in SMOKE.items():
            set_key(cfg, key, value, create=True)
    for key, value in (
        ("train.batch_size", args.batch_size),
        ("train.epochs", args.epochs),
        ("train.num_workers", args.num_workers),
        ("trainer.precision", args.precision),
    ):
        if value is not None:
            set_key(cfg, key, value, create=True)
    world = args.devices * args.num_nodes
    if cfg["train"]["batch_size"] % world:
        raise SystemExit(f"batch size {cfg['train']['batch_size']} is not divisible by {world} devices")
    return cfg


def build_backbone(spec: Config) -> tuple[nn.Module, int]:
    """torchvision ResNet without its classifier, returning ``(B, D)`` features, and D.

    ``cifar_stem``: a 3x3 stride-1 first convolution and no max-pool, for 32 px images.
    """
    resnet = getattr(torchvision.models, spec["name"])(zero_init_residual=spec["zero_init_residual"])
    if spec["cifar_stem"]:
        resnet.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        resnet.maxpool = nn.Identity()
    feature_dim = resnet.fc.in_features
    resnet.fc = nn.Identity()
    return resnet, feature_dim


def dataset(
    name: str,
    train: bool,
    transform: Callable[[Any], Any],
    args: argparse.Namespace,
    smoke_size: int,
) -> Dataset[Any]:
    """CIFAR-10 (downloaded to ``--data-dir``), ImageNet (``--data-dir``/train|val), or smoke data."""
    if args.smoke:
        return FashionMNISTSample(transform, n=smoke_size)
    if name == "cifar10":
        return torchvision.datasets.CIFAR10(args.data_dir, train=train, download=True, transform=transform)
    if name == "imagenet":
        split = Path(args.data_dir) / ("train" if train else "val")
        return torchvision.datasets.ImageFolder(str(split), transform=transform)
    raise SystemExit(f"unknown dataset {name!r}: cifar10 or imagenet")


def loader(data: Dataset[Any], cfg: Config, args: argparse.Namespace, train: bool) -> Any:
    """A DataLoader with the per-device batch (Lightning adds the DistributedSampler)."""
    workers = cfg["train"]["num_workers"]
    return torch.utils.data.DataLoader(
        data,
        batch_size=cfg["train"]["batch_size"] // (args.devices * args.num_nodes),
        shuffle=train,
        drop_last=train,
        num_workers=workers,
        pin_memory=not args.smoke,
        persistent_workers=workers > 0,
    )


def build_trainer(
    cfg: Config,
    args: argparse.Namespace,
    output_dir: Path,
    callbacks: Sequence[pl.Callback],
    sync_batchnorm: bool,
) -> pl.Trainer:
    """Lightning Trainer: DDP with more than one device, the config's precision, CSV logs."""
    distributed = args.devices * args.num_nodes > 1
    accelerator = "cpu" if args.smoke else args.accelerator
    if sync_batchnorm and distributed and accelerator == "cpu":
        warnings.warn("SyncBatchNorm needs GPUs: BatchNorm statistics stay per process on the CPU", stacklevel=2)
        sync_batchnorm = False
    return pl.Trainer(
        max_epochs=cfg["train"]["epochs"],
        accelerator=accelerator,
        devices=args.devices,
        num_nodes=args.num_nodes,
        strategy="ddp" if distributed else "auto",
        sync_batchnorm=sync_batchnorm and distributed,
        precision=cfg["trainer"]["precision"],
        callbacks=list(callbacks),
        logger=False if args.smoke else CSVLogger(output_dir, name="logs"),
        default_root_dir=output_dir,
        enable_progress_bar=not args.smoke,
        enable_model_summary=not args.smoke,
        log_every_n_steps=1 if args.smoke else 50,
    )
