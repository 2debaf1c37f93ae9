"""Linear evaluation of a backbone trained by pretrain.py: the EquiMod paper's protocol.

The backbone is frozen (no gradient, BatchNorm in eval mode); a linear layer on its features
is trained with SGD Nesterov for 90 epochs, lr 0.2 at batch 256 with a cosine schedule to
1e-4, and evaluated with the published test transform (CIFAR-10: Resize 36 bicubic, CenterCrop 32).
Settings: ``configs/linear_{dataset}.yaml``. Built on lightly's ``LinearClassifier`` (top-1
and top-5 accuracy, frozen model) with the paper's optimizer.

The backbone's architecture and normalisation are read from the pretraining checkpoint::

    python experiments/paper/linear_eval.py --dataset cifar10 \\
        --checkpoint runs/paper/simclr-equimod_cifar10/checkpoints/last.ckpt

Multi-GPU: add ``--devices N`` (DDP; the config's batch 256 is the total). Without
``--checkpoint`` the backbone is the recipe's at random init (a baseline).

Smoke test (CPU, no download: 2 steps on the shipped Fashion-MNIST sample, then validation)::

    python experiments/paper/linear_eval.py --dataset cifar10 --smoke

These recipes were not run in this repository (no GPU); see docs/paper-recipes.md.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import recipes
import torch
import torchvision.transforms as T
from lightly.models.utils import deactivate_requires_grad
from lightly.utils.benchmarking import LinearClassifier
from lightly.utils.scheduler import CosineWarmupScheduler
from torch import nn


class LinearEval(LinearClassifier):
    """lightly's LinearClassifier (frozen ``model``, top-1/top-5) with the paper's optimizer."""

    def __init__(self, model: nn.Module, feature_dim: int, cfg: recipes.Config, batch_size_per_device: int) -> None:
        super().__init__(
            model,
            batch_size_per_device=batch_size_per_device,
            lr=cfg["optimizer"]["lr"],
            feature_dim=feature_dim,
            num_classes=cfg["num_classes"],
            topk=(1, 5),
        )
        self.optimizer_cfg = cfg["optimizer"]

    def configure_optimizers(self) -> Any:
        opt = self.optimizer_cfg
        lr = self.get_effective_lr()  # lr * total batch / 256
        optimizer = torch.optim.SGD(
            self.classification_head.parameters(),
            lr=lr,
            momentum=opt["momentum"],
            nesterov=opt["nesterov"],
            weight_decay=opt["weight_decay"],
        )
        scheduler = CosineWarmupScheduler(
            optimizer,
            warmup_epochs=0,
            max_epochs=int(self.trainer.estimated_stepping_batches),
            end_value=opt["final_lr"] / lr,
        )
        return [optimizer], [{"scheduler": scheduler, "interval": "step"}]


def load_backbone(checkpoint: Path | None, dataset_name: str) -> tuple[nn.Module, int, recipes.Config]:
    """The pretrained backbone (frozen), its feature width and its pretraining recipe.

    Without a checkpoint: the backbone of ``configs/simclr_{dataset}.yaml`` at random init.
    """
    if checkpoint is None:
        recipe = recipes.load_config(recipes.CONFIGS / f"simclr_{dataset_name}.yaml")
        state = None
    else:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
        recipe, prefix = ckpt["hyper_parameters"]["cfg"], "backbone."
        state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
        if recipe["dataset"] != dataset_name:
            raise SystemExit(f"{checkpoint} was pretrained on {recipe['dataset']}, not {dataset_name}")
    backbone, feature_dim = recipes.build_backbone(recipe["backbone"])
    if state is not None:
        backbone.load_state_dict(state)
    deactivate_requires_grad(backbone)
    return backbone, feature_dim, recipe


def transforms(cfg: recipes.Config, normalize: Sequence[Sequence[float]]) -> tuple[T.Compose, T.Compose]:
    """Training and test transforms of the linear evaluation."""
    t = cfg["transforms"]
    norm = [T.ToTensor(), T.Normalize(*normalize)]
    flip = [T.RandomHorizontalFlip()] if t["hflip"] else []
    mode = T.InterpolationMode(t["interpolation"])  # the official code: bicubic
    crop = T.RandomResizedCrop(t["size"], scale=tuple(t["crop_scale"]), interpolation=mode)
    train = T.Compose([crop, *flip, *norm])
    test = T.Compose([T.Resize(t["test_resize"], interpolation=mode), T.CenterCrop(t["size"]), *norm])
    return train, test


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["cifar10", "imagenet"], default="cifar10")
    parser.add_argument("--checkpoint", type=Path, help="pretrain.py checkpoint (default: random init)")
    recipes.add_run_args(parser, "linear evaluation")
    args = parser.parse_args(argv)
    if args.config is None:
        args.config = recipes.CONFIGS / f"linear_{args.dataset}.yaml"
    return args


def run(argv: Sequence[str] | None = None, callbacks: Sequence[pl.Callback] = ()) -> tuple[pl.Trainer, LinearEval]:
    """Train and validate the linear layer as the command line says."""
    args = parse_args(argv)
    cfg = recipes.finish_config(recipes.load_config(args.config, args.overrides), args)
    if cfg["dataset"] != args.dataset:
        raise SystemExit(f"--dataset {args.dataset} but {args.config} is for {cfg['dataset']}")
    pl.seed_everything(cfg["seed"], workers=True)
    backbone, feature_dim, recipe = load_backbone(args.checkpoint, args.dataset)
    world = args.devices * args.num_nodes
    model = LinearEval(backbone, feature_dim, cfg, cfg["train"]["batch_size"] // world)
    train_tf, test_tf = transforms(cfg, recipe["data"]["normalize"])
    smoke_size = recipes.SMOKE_STEPS * cfg["train"]["batch_size"]
    train = recipes.dataset(args.dataset, True, train_tf, args, smoke_size)
    val = recipes.dataset(args.dataset, False, test_tf, args, smoke_size)
    output_dir = args.output_dir or Path("runs/paper/linear") / (
        args.checkpoint.parent.parent.name if args.checkpoint else f"random-init_{args.dataset}"
    )
    trainer = recipes.build_trainer(cfg, args, output_dir, callbacks, sync_batchnorm=False)
    trainer.fit(
        model,
        train_dataloaders=recipes.loader(train, cfg, args, train=True),
        val_dataloaders=recipes.loader(val, cfg, args, train=False),
    )
    return trainer, model


def main() -> None:
    trainer, _ = run()
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    if trainer.is_global_zero:
        print(
            f"linear evaluation: val top-1 {100 * metrics['val_top1']:.2f} %, top-5 {100 * metrics['val_top5']:.2f} %"
        )
    if not math.isfinite(metrics["val_loss"]):
        sys.exit(f"the loss is not finite: {metrics['val_loss']}")


if __name__ == "__main__":
    main()
