"""Paper-scale pretraining: the EquiMod paper's Table 1 runs of SimCLR and BYOL, with or without EquiMod.

One PyTorch Lightning script for the 8 runs of Table 1 (Devillers & Lefort, ICLR 2023):
``--method simclr|byol`` x ``--equimod|--no-equimod`` x ``--dataset cifar10|imagenet``. The
hyper-parameters are in ``configs/{method}_{dataset}.yaml``, each with its source; the
``equimod:`` block of the file is used with ``--equimod`` only. Built from existing pieces:
torchvision's ResNet, lightly's heads, losses (``NTXentLoss(gather_distributed=True)``),
``LARS``, ``CosineWarmupScheduler`` and ``update_momentum``; the views come from the plugin's
on-device augmentations (``equimod_plugin.augment.simclr`` / ``byol_views``) in both the
baseline and the EquiMod runs, so the two differ by the equivariance term only.

Single GPU (CIFAR-10 is downloaded to ``--data-dir`` on first use)::

    python experiments/paper/pretrain.py --method simclr --equimod --dataset cifar10

Multi-GPU (DDP, SyncBatchNorm, negatives gathered from all GPUs; the config's batch is the
total, split over the devices)::

    python experiments/paper/pretrain.py --method byol --equimod --dataset imagenet \\
        --data-dir /data/imagenet --devices 8 --num-nodes 4

Checkpoints go to ``--output-dir`` (default ``runs/paper/{method}[-equimod]_{dataset}``):
``checkpoints/last.ckpt`` after every epoch, and every ``train.checkpoint_every_n_epochs``; a
rerun of the same command with ``--resume auto`` continues from ``last.ckpt``. Evaluate with
``experiments/paper/linear_eval.py --checkpoint .../checkpoints/last.ckpt``.

Smoke test (CPU, no download, about 10 s per run; 2 steps of the shipped Fashion-MNIST sample
with the recipe's model, optimizer and schedule)::

    python experiments/paper/pretrain.py --method byol --equimod --dataset cifar10 --smoke

These recipes were not run in this repository (no GPU); see docs/paper-recipes.md.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from lightly.loss import NegativeCosineSimilarity, NTXentLoss
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead, SimCLRProjectionHead
from lightly.models.utils import deactivate_requires_grad, get_weight_decay_parameters, update_momentum
from lightly.utils.lars import LARS
from lightly.utils.scheduler import CosineWarmupScheduler, cosine_schedule
from pytorch_lightning.callbacks import ModelCheckpoint
from recipes import (
    CONFIGS,
    SMOKE_STEPS,
    Config,
    add_run_args,
    build_backbone,
    build_trainer,
    dataset,
    finish_config,
    format_metrics,
    load_config,
    loader,
)
from torch import Tensor, nn

from equimod_plugin import EquiModLoss, equimod_branch
from equimod_plugin.augment import ParamAugment, byol_views, simclr
from equimod_plugin.integrations.lightly import OriginalTransform


def make_augments(cfg: Config) -> list[ParamAugment]:
    """The two views' augmentations of the recipe, from the plugin's presets."""
    aug, size = cfg["augment"], cfg["data"]["image_size"]
    kwargs = {"encoding": aug["encoding"], **aug["kwargs"]}
    if aug["preset"] == "simclr":
        view = simclr(size, aug["variant"], **kwargs)
        return [view, view]
    if aug["preset"] == "byol":
        return list(byol_views(size, aug["variant"], **kwargs))
    raise ValueError(f"unknown augment.preset {aug['preset']!r}: simclr or byol")


def peak_lr(cfg: Config, recipe_batch_size: int) -> float:
    """The config's lr, scaled linearly when the run's total batch differs from the recipe's."""
    opt = cfg["optimizer"]
    if opt["lr_batch_scaling"] == "linear":
        return float(opt["lr"]) * cfg["train"]["batch_size"] / recipe_batch_size
    if opt["lr_batch_scaling"] == "none":
        return float(opt["lr"])
    raise ValueError(f"optimizer.lr_batch_scaling must be linear or none, got {opt['lr_batch_scaling']!r}")


def warmup_steps(cfg: Config, total_steps: int) -> int:
    """Steps of the linear warm-up: ``train.warmup_epochs`` epochs' worth of ``total_steps``."""
    return round(total_steps * cfg["train"]["warmup_epochs"] / cfg["train"]["epochs"])


class Pretrain(pl.LightningModule):
    """SimCLR or BYOL (lightly's modules) on the plugin's views, with EquiMod's term if asked.

    Args:
        cfg: the recipe (a ``configs/*.yaml``, after the command line's changes).
        equimod: add EquiMod's equivariance term.
        recipe_batch_size: the batch the config's lr is given for (before ``--batch-size``).
    """

    def __init__(self, cfg: Config, equimod: bool, recipe_batch_size: int) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.cfg = cfg
        self.method = cfg["method"]
        m = cfg["model"]
        self.backbone, feature_dim = build_backbone(cfg["backbone"])
        self.prediction_head: nn.Module | None = None
        if self.method == "simclr":
            self.projection_head = SimCLRProjectionHead(
                feature_dim, m["projection_hidden_dim"], m["projection_output_dim"], m["projection_num_layers"]
            )
            self.criterion: nn.Module = NTXentLoss(m["temperature"], gather_distributed=True)
        elif self.method == "byol":
            self.projection_head = BYOLProjectionHead(
                feature_dim, m["projection_hidden_dim"], m["projection_output_dim"]
            )
            self.prediction_head = BYOLPredictionHead(
                m["projection_output_dim"], m["prediction_hidden_dim"], m["projection_output_dim"]
            )
            # momentum copies before the branch is added (it changes the backbone's forward)
            self.backbone_momentum = copy.deepcopy(self.backbone)
            self.projection_head_momentum = copy.deepcopy(self.projection_head)
            deactivate_requires_grad(self.backbone_momentum)
            deactivate_requires_grad(self.projection_head_momentum)
            self.criterion = NegativeCosineSimilarity()
        else:
            raise ValueError(f"unknown method {self.method!r}: simclr or byol")

        augments = make_augments(cfg)
        normalize = cfg["data"]["normalize"]
        self.equivariance = None
        if equimod:
            e = cfg["equimod"]
            self.equivariance = equimod_branch(
                self.backbone,
                augments,
                weight=e["weight"],
                loss=EquiModLoss(e["temperature"], exclude_sibling=e["exclude_sibling"], gather_distributed=True),
                normalize=normalize,
                **e["head"],
            )
        else:  # the same views, without the term
            self.augments = nn.ModuleList(augments)
            mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in normalize)
            self.register_buffer("mean", mean, persistent=False)
            self.register_buffer("std", std, persistent=False)

    def views(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Two normalised views of ``images`` in [0, 1], made on the device."""
        if self.equivariance is not None:
            x0, x1 = self.equivariance.views(images)
            return x0, x1
        x0, x1 = ((aug(images)[0] - self.mean) / self.std for aug in self.augments)
        return x0, x1

    def project(self, x: Tensor) -> Tensor:
        return self.projection_head(self.backbone(x).flatten(start_dim=1))

    def forward_momentum(self, x: Tensor) -> Tensor:
        return self.projection_head_momentum(self.backbone_momentum(x).flatten(start_dim=1)).detach()

    def invariance_loss(self, x0: Tensor, x1: Tensor) -> Tensor:
        if self.method == "simclr":
            return self.criterion(self.project(x0), self.project(x1))
        assert self.prediction_head is not None
        m = self.cfg["model"]
        momentum = cosine_schedule(
            self.global_step, int(self.trainer.estimated_stepping_batches), m["momentum_base"], m["momentum_final"]
        )
        update_momentum(self.backbone, self.backbone_momentum, m=momentum)
        update_momentum(self.projection_head, self.projection_head_momentum, m=momentum)
        p0 = self.prediction_head(self.project(x0))
        p1 = self.prediction_head(self.project(x1))
        # NegativeCosineSimilarity is -cos: (2 - 2cos(p0, z1)) + (2 - 2cos(p1, z0)) for "sum"
        loss = 4 + 2 * (self.criterion(p0, self.forward_momentum(x1)) + self.criterion(p1, self.forward_momentum(x0)))
        if m["symmetric_loss"] == "mean":
            return loss / 2
        if m["symmetric_loss"] != "sum":
            raise ValueError(f"model.symmetric_loss must be sum or mean, got {m['symmetric_loss']!r}")
        return loss

    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> Tensor:
        x0, x1 = self.views(batch[0])
        loss_inv = self.invariance_loss(x0, x1)
        loss = loss_inv
        if self.equivariance is not None:
            loss = loss + self.equivariance.loss()
            metrics = {f"equimod/{k}": v for k, v in self.equivariance.metrics().items()}
            self.log_dict(metrics, on_step=False, on_epoch=True, sync_dist=True)
        self.log("loss", loss, prog_bar=True, on_step=True, on_epoch=True, sync_dist=True)
        self.log("loss_invariance", loss_inv, on_step=False, on_epoch=True, sync_dist=True)
        self.log("lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False)
        return loss

    def trainable_modules(self) -> list[nn.Module]:
        modules = [self.backbone, self.projection_head, self.prediction_head, self.equivariance]
        return [module for module in modules if module is not None]

    def configure_optimizers(self) -> dict[str, object]:
        opt = self.cfg["optimizer"]
        if opt["name"] != "lars":
            raise ValueError(f"optimizer.name must be lars, got {opt['name']!r}")
        modules = self.trainable_modules()
        if opt["exclude_bias_and_norm"]:
            decay, no_decay = get_weight_decay_parameters(modules)
        else:
            decay, no_decay = [p for module in modules for p in module.parameters()], []
        # lightly's LARS leaves parameters with weight decay 0 out of the layer-wise scaling
        optimizer = LARS(
            [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=peak_lr(self.cfg, self.hparams["recipe_batch_size"]),
            momentum=opt["momentum"],
            weight_decay=opt["weight_decay"],
            trust_coefficient=opt["trust_coefficient"],
        )
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = CosineWarmupScheduler(
            optimizer,
            warmup_epochs=warmup_steps(self.cfg, total),  # steps, despite the name
            max_epochs=total,
            end_value=opt["final_lr_ratio"],
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=["simclr", "byol"], help="default: the config's")
    parser.add_argument("--dataset", choices=["cifar10", "imagenet"], help="default: the config's")
    parser.add_argument(
        "--equimod", action=argparse.BooleanOptionalAction, default=False, help="add EquiMod's term (default: no)"
    )
    parser.add_argument(
        "--resume", help="a checkpoint to continue from, or 'auto' for OUTPUT_DIR/checkpoints/last.ckpt if it exists"
    )
    add_run_args(parser, "recipe")
    args = parser.parse_args(argv)
    if args.config is None:
        if args.method is None or args.dataset is None:
            parser.error("give --method and --dataset, or --config")
        args.config = CONFIGS / f"{args.method}_{args.dataset}.yaml"
    return args


def run(argv: Sequence[str] | None = None, callbacks: Sequence[pl.Callback] = ()) -> tuple[pl.Trainer, Pretrain]:
    """Train as the command line says; returns the trainer and the trained module."""
    args = parse_args(argv)
    recipe = load_config(args.config, args.overrides)
    for name in ("method", "dataset"):
        if getattr(args, name) not in (None, recipe[name]):
            raise SystemExit(f"--{name} {getattr(args, name)} but {args.config} is for {recipe[name]}")
    cfg = finish_config(recipe, args)
    name = f"{cfg['method']}{'-equimod' if args.equimod else ''}_{cfg['dataset']}"
    output_dir = args.output_dir or Path("runs/paper") / name
    pl.seed_everything(cfg["seed"], workers=True)

    model = Pretrain(cfg, args.equimod, recipe_batch_size=recipe["train"]["batch_size"])
    transform = OriginalTransform(cfg["data"]["original_size"])
    data = dataset(cfg["dataset"], True, transform, args, smoke_size=SMOKE_STEPS * cfg["train"]["batch_size"])
    checkpoints = output_dir / "checkpoints"
    callbacks = [
        *callbacks,
        # latest.ckpt and its copy last.ckpt after every epoch, for --resume
        ModelCheckpoint(checkpoints, filename="latest", save_last=True),
        ModelCheckpoint(
            checkpoints,
            filename="{epoch:04d}",
            every_n_epochs=cfg["train"]["checkpoint_every_n_epochs"],
            save_top_k=-1,
        ),
    ]
    trainer = build_trainer(cfg, args, output_dir, callbacks, sync_batchnorm=cfg["trainer"]["sync_batchnorm"])
    resume = args.resume
    if resume == "auto":
        resume = str(checkpoints / "last.ckpt") if (checkpoints / "last.ckpt").exists() else None
    trainer.fit(model, train_dataloaders=loader(data, cfg, args, train=True), ckpt_path=resume)
    return trainer, model


def main() -> None:
    trainer, _ = run()
    metrics = trainer.callback_metrics  # epoch means of the last epoch
    equimod = {name: value for name, value in metrics.items() if name.startswith("equimod/")}
    loss = float(metrics["loss_epoch"])
    if trainer.is_global_zero:
        print(f"epoch: {trainer.current_epoch - 1:>02}, loss: {loss:.5f}, {format_metrics(equimod)}")
    if not math.isfinite(loss):
        sys.exit(f"the loss is not finite: {loss}")


if __name__ == "__main__":
    main()
