"""The solo-learn integration against the real solo-learn: its methods train with EquiMod.

Needs a checkout of solo-learn's source (https://github.com/vturrisi/solo-learn, tested at
main @ 9187ea3) and its imports (``timm``, ``einops``, ``scikit-learn``); nothing is installed::

    SOLO_LEARN_SRC=/path/to/solo-learn python -m pytest tests/test_solo_real.py

Each method takes its recipe (``method_kwargs``, ``momentum``, optimizer) from solo-learn's
``scripts/pretrain/cifar/<recipe>.yaml``, with the widths shrunk for a CPU, and is prepared as
``main_pretrain.py`` does (``make_contiguous``, ``channels_last``). The training data is
solo-learn's ``dataset_with_index(FakeData)`` with :class:`OriginalTransform`; the validation
data uses solo-learn's own CIFAR validation transform.
"""

from __future__ import annotations

import importlib
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import FakeData

from equimod_plugin import SteeringTerm
from equimod_plugin.integrations.solo import EquiModSettings, OriginalTransform, equivariant

SOLO_LEARN_SRC = os.environ.get("SOLO_LEARN_SRC")
pytestmark = pytest.mark.skipif(
    not SOLO_LEARN_SRC,
    reason="set SOLO_LEARN_SRC to a checkout of solo-learn's source to test against it",
)

REPO = Path(__file__).resolve().parents[1]
BATCH = 8
HEAD = {"hidden_dim": 64, "output_dim": 32, "param_embed_dim": 16}
RECIPES = {  # solo-learn's method name -> its recipe in scripts/pretrain/cifar/
    "byol": "byol",
    "simclr": "simclr",
    "mocov3": "mocov3",
    "mocov2plus": "mocov2plus",
    "simsiam": "simsiam",
    "vicreg": "vicreg",
    "vibcreg": "vibcreg",
    "barlow_twins": "barlow",
    "wmse": "wmse",
    "nnclr": "nnclr",
    "nnbyol": "nnbyol",
    "nnsiam": "nnsiam",
    "all4one": "all4one",
    "dino": "dino",
    "swav": "swav",
    "deepclusterv2": "deepclusterv2",
    "ressl": "ressl",
    "supcon": "supcon",
}
# DeepClusterV2 has no cluster assignments before its first epoch ends: its loss is NaN in the
# first epoch in solo-learn itself, so it trains for a second epoch here.
EPOCHS = {"deepclusterv2": 2}


@pytest.fixture(scope="module")
def solo() -> Iterator[SimpleNamespace]:
    """solo-learn's modules, imported from SOLO_LEARN_SRC."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(SOLO_LEARN_SRC))
        yield SimpleNamespace(
            methods=importlib.import_module("solo.methods"),
            pretrain_data=importlib.import_module("solo.data.pretrain_dataloader"),
            classification_data=importlib.import_module("solo.data.classification_dataloader"),
            misc=importlib.import_module("solo.utils.misc"),
        )


def recipe_cfg(method: str, **equimod: Any) -> DictConfig:
    """solo-learn's CIFAR recipe of ``method``, small enough for a CPU."""
    assert SOLO_LEARN_SRC is not None
    path = Path(SOLO_LEARN_SRC, "scripts", "pretrain", "cifar", f"{RECIPES[method]}.yaml")
    recipe = OmegaConf.load(path)
    kwargs = recipe.method_kwargs
    for key, value in kwargs.items():
        if key.endswith("_dim"):
            kwargs[key] = 32
        elif key == "queue_size":
            kwargs[key] = 2 * BATCH
        elif key == "num_prototypes":
            kwargs[key] = 16 if isinstance(value, int) else [16] * len(value)
    if method == "wmse":  # whitening needs more samples per slice than dimensions
        kwargs.whitening_size, kwargs.proj_output_dim = BATCH, 4
    cfg = OmegaConf.create(
        {
            "name": f"equimod-{method}",
            "method": recipe.method,
            "backbone": recipe.backbone,
            "method_kwargs": kwargs,
            "data": {"dataset": "cifar10", "num_classes": 10, "train_path": "."},
            "optimizer": {
                "name": recipe.optimizer.name,
                "batch_size": BATCH,
                "lr": 0.01,
                "classifier_lr": 0.01,
                "weight_decay": 1e-5,
                "kwargs": recipe.optimizer.get("kwargs", {}),
            },
            "scheduler": {"name": "warmup_cosine"},
            "max_epochs": EPOCHS.get(method, 1),
            "equimod": {"term_kwargs": HEAD, **equimod},
        }
    )
    if "momentum" in recipe:
        cfg.momentum = recipe.momentum
    OmegaConf.set_struct(cfg, False)
    return cfg


def build(solo: SimpleNamespace, method: str, **equimod: Any) -> Any:
    """``equivariant(<method>)(cfg)``, prepared as solo-learn's main_pretrain.py does."""
    model = equivariant(solo.methods.METHODS[method])(recipe_cfg(method, **equimod))
    solo.misc.make_contiguous(model)
    return model.to(memory_format=torch.channels_last)


class LastLoss(pl.Callback):
    def __init__(self) -> None:
        self.loss = math.nan

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, *args: Any) -> None:
        self.loss = float(outputs["loss"])


def fit(solo: SimpleNamespace, model: Any) -> tuple[pl.Trainer, float]:
    """One step per epoch and one validation batch; returns the last step's loss."""
    dataset_with_index = solo.pretrain_data.dataset_with_index
    train = dataset_with_index(FakeData)(
        size=2 * BATCH, image_size=(3, 32, 32), num_classes=10, transform=OriginalTransform(32)
    )
    _, val_transform = solo.classification_data.prepare_transforms("cifar10")
    val = FakeData(size=BATCH, image_size=(3, 32, 32), num_classes=10, transform=val_transform)
    last = LastLoss()
    trainer = pl.Trainer(
        max_epochs=model.max_epochs,
        limit_train_batches=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=[last],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(
        model,
        DataLoader(train, batch_size=BATCH, shuffle=True, drop_last=True),
        DataLoader(val, batch_size=BATCH),
    )
    return trainer, last.loss


def count_training_passes(model: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Batch sizes of the online backbone's own computations in training mode."""
    sizes: list[int] = []
    cls = type(model.backbone)
    forward = cls.forward

    def counted(module: nn.Module, x: Tensor, *args: Any, **kwargs: Any) -> Any:
        if module is model.backbone and module.training:
            sizes.append(x.shape[0])
        return forward(module, x, *args, **kwargs)

    monkeypatch.setattr(cls, "forward", counted)
    return sizes


def snapshot(module: nn.Module) -> list[Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(before: list[Tensor], module: nn.Module) -> bool:
    return any(not torch.equal(b, p) for b, p in zip(before, module.parameters(), strict=True))


@pytest.mark.parametrize("method", list(RECIPES))
def test_method_trains_with_equimod(
    solo: SimpleNamespace, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = build(solo, method)
    passes = count_training_passes(model, monkeypatch)
    head = snapshot(model.equivariance)
    momentum = snapshot(model.momentum_backbone) if hasattr(model, "momentum_pairs") else None

    trainer, loss = fit(solo, model)

    assert math.isfinite(loss)
    assert passes == [3 * BATCH] * model.max_epochs  # one pass on cat[originals, views] per step
    assert changed(head, model.equivariance)
    groups = [group.get("name") for group in trainer.optimizers[0].param_groups]
    assert "equivariance" in groups and "backbone" in groups
    if momentum is not None:  # the EMA of momentum_pairs still runs
        assert changed(momentum, model.momentum_backbone)
    metrics = trainer.callback_metrics
    expected = {"train_equimod_loss", "train_equimod_relative", "train_class_loss", "val_acc1"}
    assert expected <= set(metrics)
    assert all(math.isfinite(float(metrics[name])) for name in expected)


def test_steering_term_with_byol(solo: SimpleNamespace) -> None:
    model = build(solo, "byol", term="steering", term_kwargs={"rank": 4})
    assert isinstance(model.equivariance.term, SteeringTerm)
    trainer, loss = fit(solo, model)
    assert math.isfinite(loss)
    assert {"train_steering_loss", "train_steering_cos_steered"} <= set(trainer.callback_metrics)


def test_views_are_normalised_like_solo_learns_validation_data(solo: SimpleNamespace) -> None:
    for dataset in ("cifar10", "cifar100", "stl10", "imagenet"):
        _, val_transform = solo.classification_data.prepare_transforms(dataset)
        (normalize,) = [t for t in val_transform.transforms if isinstance(t, transforms.Normalize)]
        cfg = OmegaConf.create({"data": {"dataset": dataset}})
        mean, std = EquiModSettings.from_cfg(cfg).normalize
        assert list(mean) == pytest.approx(list(normalize.mean), abs=1e-4)
        assert list(std) == pytest.approx(list(normalize.std), abs=1e-4)


def test_example_smoke_run() -> None:
    paths = [str(REPO), str(SOLO_LEARN_SRC), *filter(None, [os.environ.get("PYTHONPATH")])]
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "solo_byol_cifar.py"), "--smoke"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    line = result.stdout.strip().splitlines()[-1]
    values = dict(pair.split(": ") for pair in line.split(", "))
    assert {"train_equimod_loss_epoch", "train_neg_cos_sim_epoch", "val_acc1"} <= set(values)
