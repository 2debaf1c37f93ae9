"""solo-learn's BYOL on CIFAR-10 plus EquiMod's equivariance term.

This follows solo-learn's ``main_pretrain.py`` for the recipe ``scripts/pretrain/cifar/byol.yaml``
(PyTorch data loading), with the config ``solo_byol_cifar.yaml`` next to this file. The two
lines marked ``# equimod`` are the change to solo-learn's training code:

1. the method class is ``equivariant(METHODS[cfg.method])`` instead of ``METHODS[cfg.method]``;
2. the dataset transform is ``OriginalTransform(32)`` instead of solo-learn's two CPU crop
   pipelines: the dataset yields the original images and the model makes both views on the
   device, recording their parameters (the ``equimod`` block of the config).

Full run (solo-learn installed from git, see docs/solo-learn.md; downloads CIFAR-10 to
``data.train_path``), with hydra-style ``key=value`` overrides of the config::

    python examples/solo_byol_cifar.py
    python examples/solo_byol_cifar.py devices=[0,1] equimod.weight=0.5

``--device`` (default ``cuda`` when available, else ``cpu``) sets the config's accelerator:
``cuda`` the GPUs of ``devices``, ``cuda:1`` GPU 1 alone, ``cpu`` one CPU process in 32-bit
precision without DDP. ``--seed`` (default 0) sets the config's ``seed``. ``key=value``
overrides win over both.

Smoke test (no download, about a minute on a CPU): 2 steps on the Fashion-MNIST sample shipped
with equimod_plugin, then one validation batch::

    python examples/solo_byol_cifar.py --smoke
    python examples/solo_byol_cifar.py --smoke --device cpu

It prints the last epoch's metrics and exits non-zero if one is not finite. Left out of
``main_pretrain.py``: DALI, W&B and UMAP (Lightning's default logger writes ``lightning_logs/``).
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from equimod_plugin.eval.datasets import FashionMNISTSample

try:  # solo-learn and the `solo` extra (Lightning, OmegaConf, torchvision)
    from lightning.pytorch import Trainer, seed_everything
    from lightning.pytorch.strategies.ddp import DDPStrategy
    from omegaconf import DictConfig, OmegaConf
    from solo.args.pretrain import parse_cfg
    from solo.data.classification_dataloader import prepare_data as prepare_data_classification
    from solo.data.pretrain_dataloader import dataset_with_index, prepare_dataloader, prepare_datasets
    from solo.methods import METHODS
    from solo.utils.auto_resumer import AutoResumer
    from solo.utils.checkpointer import Checkpointer
    from solo.utils.misc import make_contiguous
    from torchvision import transforms

    from equimod_plugin.integrations.solo import OriginalTransform, equivariant
except ImportError as error:
    raise ImportError(
        f"this example needs {error.name}: pip install 'equimod-plugin[solo]' and solo-learn from git "
        "(see docs/solo-learn.md)"
    ) from error

CONFIG = Path(__file__).with_name("solo_byol_cifar.yaml")
SMOKE = {  # CPU, one process, 2 training steps of 8 images and one validation batch
    "optimizer": {"batch_size": 8},
    "data": {"num_workers": 0},
    "checkpoint": {"enabled": False},
    "auto_resume": {"enabled": False},
    "max_epochs": 1,
    "limit_train_batches": 2,
    "limit_val_batches": 1,
    "num_sanity_val_steps": 0,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "logger": False,
    "strategy": "auto",
    "sync_batchnorm": False,
    "precision": "32-true",
}
CPU = {"accelerator": "cpu", "strategy": "auto", "sync_batchnorm": False, "precision": "32-true"}


def device_settings(device: torch.device) -> dict[str, object]:
    """The config keys ``--device`` sets: the CPU in one process, or GPUs (``cuda:i``: GPU i)."""
    if device.type == "cpu":
        return CPU
    if device.type != "cuda":
        return {"accelerator": device.type}
    return {"accelerator": "gpu"} | ({} if device.index is None else {"devices": [device.index]})


def torch_device(name: str) -> torch.device:
    """The type of ``--device``: a bad name is an error of the option, not a traceback."""
    try:
        return torch.device(name)
    except RuntimeError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def load_cfg() -> tuple[DictConfig, bool]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--device",
        type=torch_device,
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu, cuda (the config's devices) or cuda:i (default: cuda if available, else cpu)",
    )
    parser.add_argument("--seed", type=int, default=0, help="the config's seed (default: 0)")
    parser.add_argument("--smoke", action="store_true", help="a quick check on the shipped sample, no download")
    parser.add_argument(
        "overrides", nargs="*", help="config overrides, key=value (e.g. max_epochs=100); they win over --device, --seed"
    )
    args = parser.parse_args()
    cfg = OmegaConf.merge(
        OmegaConf.load(CONFIG),
        SMOKE if args.smoke else {},
        device_settings(args.device),
        {"seed": args.seed},
        OmegaConf.from_dotlist(args.overrides),
    )
    OmegaConf.set_struct(cfg, False)
    cfg = parse_cfg(cfg)
    print(f"device: {args.device} (accelerator {cfg.accelerator}, devices {list(cfg.devices)}), seed: {cfg.seed}")
    return cfg, args.smoke


def smoke_data(
    transform: OriginalTransform, val_transform: transforms.Compose, batch_size: int
) -> tuple[Dataset, DataLoader]:
    """The shipped Fashion-MNIST sample in solo-learn's layouts, instead of CIFAR-10."""
    train_dataset = dataset_with_index(FashionMNISTSample)(transform, n=2 * batch_size)
    val_loader = DataLoader(FashionMNISTSample(val_transform, n=batch_size), batch_size=batch_size)
    return train_dataset, val_loader


def main() -> None:
    cfg, smoke = load_cfg()
    seed_everything(cfg.seed)

    model = equivariant(METHODS[cfg.method])(cfg)  # equimod
    make_contiguous(model)
    if not cfg.performance.disable_channel_last:
        model = model.to(memory_format=torch.channels_last)

    transform = OriginalTransform(32)  # equimod
    if smoke:
        val_transform = transforms.Compose([transform, transforms.Normalize(*model.equimod_settings.normalize)])
        train_dataset, val_loader = smoke_data(transform, val_transform, cfg.optimizer.batch_size)
    else:
        _, val_loader = prepare_data_classification(
            cfg.data.dataset,
            train_data_path=cfg.data.train_path,
            val_data_path=cfg.data.val_path,
            data_format=cfg.data.format,
            batch_size=cfg.optimizer.batch_size,
            num_workers=cfg.data.num_workers,
        )
        train_dataset = prepare_datasets(
            cfg.data.dataset,
            transform,
            train_data_path=cfg.data.train_path,
            data_format=cfg.data.format,
            no_labels=cfg.data.no_labels,
            data_fraction=cfg.data.fraction,
        )
    train_loader = prepare_dataloader(
        train_dataset, batch_size=cfg.optimizer.batch_size, num_workers=cfg.data.num_workers
    )

    # solo-learn's checkpoints (with the config, equimod block included) and auto-resume
    logdir = os.path.join(cfg.checkpoint.dir, cfg.method)
    ckpt_path = cfg.resume_from_checkpoint
    if cfg.auto_resume.enabled and ckpt_path is None:
        ckpt_path, _ = AutoResumer(checkpoint_dir=logdir, max_hours=cfg.auto_resume.max_hours).find_checkpoint(cfg)
    callbacks = []
    if cfg.checkpoint.enabled:
        callbacks.append(
            Checkpointer(cfg, logdir=logdir, frequency=cfg.checkpoint.frequency, keep_prev=cfg.checkpoint.keep_prev)
        )

    # the Trainer's arguments found in the config; on CPUs, devices is a number of processes
    settings = OmegaConf.to_container(cfg)
    trainer_kwargs = {k: settings[k] for k in inspect.signature(Trainer.__init__).parameters if k in settings}
    if cfg.accelerator == "cpu":
        trainer_kwargs["devices"] = len(cfg.devices)
    trainer_kwargs.update(
        callbacks=callbacks,
        enable_checkpointing=False,
        strategy=DDPStrategy(find_unused_parameters=False) if cfg.strategy == "ddp" else cfg.strategy,
    )
    trainer = Trainer(**trainer_kwargs)
    trainer.fit(model, train_loader, val_loader, ckpt_path=ckpt_path)

    # the epoch means of the training metrics and the validation metrics
    metrics = trainer.callback_metrics
    metrics = {k: float(v) for k, v in sorted(metrics.items()) if k.endswith("_epoch") or k.startswith("val_")}
    print(", ".join(f"{name}: {value:.4f}" for name, value in metrics.items()))
    if not all(math.isfinite(value) for value in metrics.values()):
        sys.exit("a metric is not finite")


if __name__ == "__main__":
    main()
