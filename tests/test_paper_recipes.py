"""The paper-scale recipes of experiments/paper/: configs, optimizer and schedule, smoke runs.

The recipes themselves (800 epochs on GPUs) are not run here; the smoke runs train each
CIFAR-10 recipe for 2 steps on the CPU with the recipe's model, optimizer and schedule.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from lightly.utils.lars import LARS
from torch import Tensor
from torchvision.transforms import InterpolationMode

from equimod_plugin import EquiModLoss

PAPER = Path(__file__).resolve().parents[1] / "experiments" / "paper"


def load_script(name: str) -> ModuleType:
    """Import ``experiments/paper/<name>.py`` as its command line does: its folder on sys.path."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(PAPER))
        return importlib.import_module(name)


recipes = load_script("recipes")
pretrain = load_script("pretrain")
linear_eval = load_script("linear_eval")

# recipe -> (backbone feature width, augmentation parameter width P, total batch, lr, wd, epochs)
RECIPES = {
    ("simclr", "cifar10"): (512, 15, 512, 4.0, 1e-6, 800),
    ("byol", "cifar10"): (512, 18, 512, 2.0, 1e-6, 800),
    ("simclr", "imagenet"): (2048, 17, 4096, 2.4, 1e-6, 800),
    ("byol", "imagenet"): (2048, 18, 4096, 4.8, 1.5e-6, 1000),
}
SMOKE_BATCH = 8


def state(module: torch.nn.Module) -> dict[str, Tensor]:
    return {name: t.detach().clone() for name, t in module.state_dict().items()}


class Recorder(pl.Callback):
    """The learning rate of every step and the trainable parameters before the first one."""

    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.before: dict[str, Tensor] = {}

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.before = state(module)

    def on_train_batch_start(
        self, trainer: pl.Trainer, module: pl.LightningModule, *args: Any
    ) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


@pytest.mark.parametrize(("method", "dataset"), list(RECIPES))
def test_full_recipe_builds_lars_with_the_published_lr_after_warmup(
    method: str, dataset: str
) -> None:
    feature_dim, param_dim, batch, lr, wd, epochs = RECIPES[(method, dataset)]
    cfg = recipes.load_config(recipes.CONFIGS / f"{method}_{dataset}.yaml")
    assert (cfg["method"], cfg["dataset"], cfg["train"]["epochs"]) == (method, dataset, epochs)
    assert cfg["train"]["batch_size"] == batch and cfg["train"]["warmup_epochs"] == 10
    assert cfg["backbone"]["cifar_stem"] == (dataset == "cifar10")
    model = pretrain.Pretrain(cfg, equimod=True, recipe_batch_size=batch)
    if dataset == "cifar10":  # CIFAR stem: 3x3 stride-1 first convolution, no max-pool
        assert model.backbone.conv1.kernel_size == (3, 3) and model.backbone.conv1.stride == (1, 1)
        assert isinstance(model.backbone.maxpool, torch.nn.Identity)
    assert model.equivariance.term.feature_dim == feature_dim
    assert model.equivariance.term.param_dim == param_dim
    loss = model.equivariance.term.loss
    assert isinstance(loss, EquiModLoss) and loss.gather_distributed and loss.temperature == 0.2
    if method == "simclr":
        assert model.criterion.gather_distributed and model.criterion.temperature == (
            0.5 if dataset == "cifar10" else 0.2
        )

    steps_per_epoch = {"cifar10": 50_000, "imagenet": 1_281_167}[dataset] // batch
    total = epochs * steps_per_epoch
    model.trainer = SimpleNamespace(estimated_stepping_batches=total)
    configured = model.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, LARS) and configured["lr_scheduler"]["interval"] == "step"
    decay, no_decay = optimizer.param_groups
    assert decay["lr"] == pytest.approx(lr / (10 * steps_per_epoch))  # first warm-up step
    assert decay["weight_decay"] == wd and no_decay["weight_decay"] == 0
    assert decay["momentum"] == 0.9 and decay["trust_coefficient"] == 1e-3
    # biases and BatchNorm are out of weight decay and LARS; momentum copies are not trained
    bn = [p for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()]
    no_decay_ids = {id(p) for p in no_decay["params"]}
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert all(id(p) in no_decay_ids for p in bn if p.requires_grad)
    assert trained == {id(p) for p in model.parameters() if p.requires_grad}
    # after the 10 warm-up epochs: the published lr, then cosine to 0
    warmup = 10 * steps_per_epoch
    assert scheduler.lr_lambdas[0](warmup - 1) == pytest.approx(1.0)
    assert scheduler.lr_lambdas[0](warmup) == pytest.approx(1.0)
    assert scheduler.lr_lambdas[0](total - 1) == pytest.approx(0.0, abs=1e-9)
    assert scheduler.base_lrs[0] == pytest.approx(lr)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Runs (once) the smoke pretraining of a CIFAR-10 recipe: (trainer, module, recorder, dir)."""
    runs: dict[tuple[str, bool], Any] = {}

    def get(method: str, equimod: bool) -> Any:
        if (method, equimod) not in runs:
            out = tmp_path_factory.mktemp(f"{method}-{equimod}")
            flag = "--equimod" if equimod else "--no-equimod"
            argv = [
                "--method",
                method,
                flag,
                "--dataset",
                "cifar10",
                "--smoke",
                "--output-dir",
                str(out),
            ]
            recorder = Recorder()
            trainer, module = pretrain.run(argv, callbacks=[recorder])
            runs[(method, equimod)] = (trainer, module, recorder, out)
        return runs[(method, equimod)]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("equimod", [False, True], ids=["baseline", "equimod"])
@pytest.mark.parametrize("method", ["simclr", "byol"])
def test_smoke_pretraining_trains_the_recipe(smoke: Any, method: str, equimod: bool) -> None:
    trainer, module, recorder, out = smoke(method, equimod)
    _, _, batch, lr, _, _ = RECIPES[(method, "cifar10")]
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    assert trainer.global_step == recipes.SMOKE_STEPS
    assert math.isfinite(metrics["loss_epoch"])
    # LARS at the recipe's lr (scaled to the smoke batch) once the warm-up ends (first step),
    # then the cosine schedule reaches its end value 0
    assert isinstance(trainer.optimizers[0], LARS)
    assert recorder.lrs == pytest.approx([lr * SMOKE_BATCH / batch, 0.0])
    # the EquiMod term only in +EquiMod runs, and added to the invariance loss
    assert (module.equivariance is not None) == equimod
    assert any(name.startswith("equimod/") for name in metrics) == equimod
    expected = metrics["loss_invariance"] + (metrics["equimod/loss"] if equimod else 0.0)
    assert metrics["loss_epoch"] == pytest.approx(expected, rel=1e-5)
    if equimod:
        assert module.equivariance.step is None  # the step was closed by loss()
    # the trained parameters changed (the first step runs at the full lr), all finite
    after = state(module)
    for prefix in [
        "backbone.",
        "projection_head.",
        *(["prediction_head."] if method == "byol" else []),
        *(["equivariance.term.head."] if equimod else []),
    ]:
        names = [n for n in after if n.startswith(prefix) and n.endswith("weight")]
        assert names, prefix
        assert any(not torch.equal(recorder.before[n], after[n]) for n in names), prefix
    assert all(torch.isfinite(t).all() for t in after.values() if t.is_floating_point())
    assert (out / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
# the resumed run keeps the schedule of the checkpoint (1 epoch) while it trains a 2nd one
@pytest.mark.filterwarnings("ignore:Current step number:RuntimeWarning")
def test_resume_continues_from_the_last_checkpoint(smoke: Any) -> None:
    _, module, _, out = smoke("simclr", True)
    recorder = Recorder()
    argv = ["--method", "simclr", "--equimod", "--dataset", "cifar10", "--smoke", "--epochs", "2"]
    trainer, _ = pretrain.run(
        [*argv, "--output-dir", str(out), "--resume", "auto"], callbacks=[recorder]
    )
    assert trainer.current_epoch == 2 and trainer.global_step == 2 * recipes.SMOKE_STEPS
    # the resumed run started from the weights the first run ended with
    first = state(module)
    assert all(torch.equal(recorder.before[name], first[name]) for name in first)


@pytest.mark.slow
def test_linear_eval_trains_a_linear_layer_on_the_frozen_backbone(
    smoke: Any, tmp_path: Path
) -> None:
    _, module, _, out = smoke("byol", True)
    pretrained = {
        name[len("backbone.") :]: t
        for name, t in state(module).items()
        if name.startswith("backbone.")
    }
    checkpoint = out / "checkpoints" / "last.ckpt"
    argv = [
        "--dataset",
        "cifar10",
        "--smoke",
        "--checkpoint",
        str(checkpoint),
        "--output-dir",
        str(tmp_path),
    ]
    recorder = Recorder()
    trainer, model = linear_eval.run(argv, callbacks=[recorder])
    # the backbone is the pretrained one, and stayed as it was (weights and BatchNorm statistics)
    backbone = state(model.model)
    assert backbone.keys() == pretrained.keys()
    assert all(torch.equal(backbone[name], pretrained[name]) for name in pretrained)
    assert not any(p.requires_grad for p in model.model.parameters())
    # the linear layer trained, with SGD Nesterov at lr 0.2 * batch / 256
    assert model.classification_head.weight.shape == (10, 512)
    assert not torch.equal(
        model.classification_head.weight, recorder.before["classification_head.weight"]
    )
    optimizer = trainer.optimizers[0]
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.SGD) and group["nesterov"] and group["momentum"] == 0.9
    assert group["initial_lr"] == pytest.approx(0.2 * SMOKE_BATCH / 256)
    assert {id(p) for p in group["params"]} == {
        id(p) for p in model.classification_head.parameters()
    }
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    assert (
        math.isfinite(metrics["val_loss"]) and 0 <= metrics["val_top1"] <= metrics["val_top5"] <= 1
    )


@pytest.mark.parametrize("dataset", ["cifar10", "imagenet"])
def test_linear_eval_transforms_are_bicubic(dataset: str) -> None:
    # PAPERS.md §1: the official linear evaluation crops and resizes bicubic (CIFAR test:
    # Resize 36 + CenterCrop 32); torchvision's default would be bilinear
    cfg = recipes.load_config(PAPER / "configs" / f"linear_{dataset}.yaml")
    train, test = linear_eval.transforms(cfg, [[0.5] * 3, [0.5] * 3])
    bicubic = InterpolationMode.BICUBIC
    assert train.transforms[0].interpolation == bicubic
    assert test.transforms[0].interpolation == bicubic
    if dataset == "cifar10":
        assert (test.transforms[0].size, test.transforms[1].size) == (36, (32, 32))


@pytest.mark.parametrize(("method", "dataset"), list(RECIPES))
def test_paper_configs_feed_the_official_standardised_parameters(method: str, dataset: str) -> None:
    # PAPERS.md §1: the official projector receives (p - p_mean) / p_std with the official
    # constants of the dataset and method
    cfg = recipes.load_config(PAPER / "configs" / f"{method}_{dataset}.yaml")
    for aug in pretrain.make_augments(cfg):
        assert aug.layout.encoding == "official_standardized"
        assert aug.layout.param_dim == RECIPES[(method, dataset)][1]
