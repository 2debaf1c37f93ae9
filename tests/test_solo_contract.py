"""The solo-learn integration against solo-learn's method contract, without solo-learn.

``ContractMethod`` is a small LightningModule written here from the contract that solo-learn's
``BaseMethod`` documents: ``__init__(cfg)``, ``backbone``, ``features_dim``, crops counted in
``cfg.data``, ``learnable_params`` (the only source of the optimizer), ``training_step`` on
``[indexes, [X_1, X_2], targets]`` returning per-view lists, inputs turned ``channels_last``
unless ``no_channel_last``. ``ContractBYOL`` adds a predictor, a momentum branch updated from
``momentum_pairs`` after each step, and returns a scalar loss; ``ContractSimCLR`` is a
contrastive method without momentum. ``tests/test_solo_real.py`` runs the real solo-learn.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from equimod_plugin import EquiModTerm, SteeringTerm, augment
from equimod_plugin.augment.normalize import IMAGENET_NORMALIZE
from equimod_plugin.integrations.solo import (
    EquiModSettings,
    EquivariantMixin,
    OriginalTransform,
    equivariant,
)

# training_step called directly, without a Trainer, logs nothing
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")

SIZE, BATCH, WIDTH = 16, 4, 8
HEAD = {"hidden_dim": 16, "output_dim": 8, "param_embed_dim": 8}
CIFAR_NORMALIZE = ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))


def make_cfg(equimod: dict[str, Any] | None = None, **data: Any) -> DictConfig:
    cfg = OmegaConf.create(
        {
            "data": {"dataset": "cifar10", "num_classes": 3, **data},
            "optimizer": {"lr": 0.05},
            "momentum": {"base_tau": 0.9},
            "equimod": {"size": SIZE, "term_kwargs": HEAD, **(equimod or {})},
        }
    )
    OmegaConf.set_struct(cfg, True)  # hydra's default; the mixin must not need it lifted
    return cfg


class ContractMethod(pl.LightningModule):
    """solo-learn's method contract; its ``training_step`` returns per-view lists."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, WIDTH, 3, padding=1),
            nn.BatchNorm2d(WIDTH),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.features_dim = WIDTH
        self.classifier = nn.Linear(WIDTH, cfg.data.num_classes)
        self.num_large_crops = cfg.data.num_large_crops
        self.num_small_crops = cfg.data.num_small_crops
        self.no_channel_last = False
        self.lr = cfg.optimizer.lr
        self.seen: list[list[Tensor]] = []  # the crops each training_step received

    @property
    def learnable_params(self) -> list[dict[str, Any]]:
        return [
            {"name": "backbone", "params": self.backbone.parameters()},
            {"name": "classifier", "params": self.classifier.parameters(), "weight_decay": 0},
        ]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.learnable_params, lr=self.lr)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if not self.no_channel_last:
            x = x.to(memory_format=torch.channels_last)
        feats = self.backbone(x)
        return {"feats": feats, "logits": self.classifier(feats.detach())}

    def base_training_step(self, x: Tensor, targets: Tensor) -> dict[str, Tensor]:
        out = self(x)
        out["loss"] = F.cross_entropy(out["logits"], targets)
        return out

    def training_step(self, batch: list[Any], batch_idx: int) -> Any:
        _, crops, targets = batch
        crops = [crops] if isinstance(crops, Tensor) else crops
        assert len(crops) == self.num_large_crops + self.num_small_crops
        self.seen.append(list(crops))
        outs = [self.base_training_step(x, targets) for x in crops]
        per_view = {key: [out[key] for out in outs] for key in outs[0]}
        per_view["loss"] = sum(per_view["loss"]) / len(outs)
        self.log("train_class_loss", per_view["loss"], on_epoch=True)
        return per_view


class ContractBYOL(ContractMethod):
    """Predictor, momentum backbone and projector (EMA of ``momentum_pairs``), scalar loss."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.projector = nn.Linear(WIDTH, 8)
        self.predictor = nn.Linear(8, 8)
        self.momentum_backbone = copy.deepcopy(self.backbone).requires_grad_(False)
        self.momentum_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.tau = cfg.momentum.base_tau
        self.method_loss: Tensor | None = None

    @property
    def learnable_params(self) -> list[dict[str, Any]]:
        return super().learnable_params + [
            {"name": "projector", "params": self.projector.parameters()},
            {"name": "predictor", "params": self.predictor.parameters()},
        ]

    @property
    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.momentum_backbone), (self.projector, self.momentum_projector)]

    def base_training_step(self, x: Tensor, targets: Tensor) -> dict[str, Tensor]:
        out = super().base_training_step(x, targets)
        out["p"] = self.predictor(self.projector(out["feats"]))
        with torch.no_grad():
            out["momentum_z"] = self.momentum_projector(self.momentum_backbone(x))
        return out

    def training_step(self, batch: list[Any], batch_idx: int) -> Tensor:
        out = super().training_step(batch, batch_idx)
        p, z = out["p"], out["momentum_z"]
        byol = sum(2 - 2 * F.cosine_similarity(p[i], z[1 - i]).mean() for i in range(2))
        self.method_loss = byol + out["loss"]
        return self.method_loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        with torch.no_grad():
            for online, target in self.momentum_pairs:
                for p_online, p_target in zip(
                    online.parameters(), target.parameters(), strict=True
                ):
                    p_target.mul_(self.tau).add_(p_online, alpha=1 - self.tau)


class ContractSimCLR(ContractMethod):
    """A contrastive method without momentum: InfoNCE between the two views."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.projector = nn.Linear(WIDTH, 8)

    @property
    def learnable_params(self) -> list[dict[str, Any]]:
        return super().learnable_params + [
            {"name": "projector", "params": self.projector.parameters()}
        ]

    def training_step(self, batch: list[Any], batch_idx: int) -> Tensor:
        out = super().training_step(batch, batch_idx)
        z1, z2 = (F.normalize(self.projector(f), dim=1) for f in out["feats"])
        logits = z1 @ z2.T / 0.2
        return F.cross_entropy(logits, torch.arange(len(z1))) + out["loss"]


class Originals(Dataset[tuple[int, Tensor, int]]):
    """solo-learn's ``dataset_with_index`` layout: ``(index, transform(image), target)``."""

    def __init__(self, n: int) -> None:
        generator = torch.Generator().manual_seed(0)
        pixels = torch.randint(0, 256, (n, SIZE, SIZE, 3), generator=generator, dtype=torch.uint8)
        self.images = [Image.fromarray(p.numpy()) for p in pixels]
        self.transform = OriginalTransform(SIZE)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[int, Tensor, int]:
        return index, self.transform(self.images[index]), index % 3


def fit(model: pl.LightningModule, steps: int = 2) -> pl.Trainer:
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = DataLoader(Originals(steps * BATCH), batch_size=BATCH, drop_last=True)
    trainer.fit(model, loader)
    return trainer


def count_backbone_passes(model: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Batch sizes of the backbone's own computations (served views are not computed)."""
    sizes: list[int] = []
    cls = type(model.backbone)
    forward = cls.forward

    def counted(module: nn.Module, x: Tensor) -> Tensor:
        if module is model.backbone:
            sizes.append(x.shape[0])
        return forward(module, x)

    monkeypatch.setattr(cls, "forward", counted)
    return sizes


def batch() -> list[Any]:
    return [torch.arange(BATCH), torch.rand(BATCH, 3, SIZE, SIZE), torch.arange(BATCH) % 3]


def snapshot(module: nn.Module) -> list[Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(before: list[Tensor], module: nn.Module) -> bool:
    return any(not torch.equal(b, p) for b, p in zip(before, module.parameters(), strict=True))


@pytest.mark.parametrize("method", [ContractBYOL, ContractSimCLR])
def test_trains_with_one_backbone_pass_per_step(
    method: type[ContractMethod], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = equivariant(method)(make_cfg())
    passes = count_backbone_passes(model, monkeypatch)
    head = snapshot(model.equivariance)
    trainer = fit(model)

    assert passes == [3 * BATCH, 3 * BATCH]  # cat[originals, view 1, view 2], once per step
    # solo-learn's channels_last conversion is on: the views are made channels_last, so it
    # returns the very views and the shared pass serves them (3B images, once per step)
    assert model.no_channel_last is False
    assert changed(head, model.equivariance)
    for crops in model.seen:  # two normalised views of size SIZE, on the device
        assert [tuple(x.shape) for x in crops] == [(BATCH, 3, SIZE, SIZE)] * 2
        assert float(min(x.min() for x in crops)) < 0
    metrics = trainer.callback_metrics
    assert {"train_class_loss", "train_equimod_loss", "train_equimod_absolute"} <= set(metrics)
    assert all(math.isfinite(float(value)) for value in metrics.values())


def test_optimizer_is_built_from_learnable_params_with_the_head() -> None:
    model = equivariant(ContractBYOL)(make_cfg())
    groups = model.configure_optimizers().param_groups
    assert [g["name"] for g in groups] == [
        "backbone",
        "classifier",
        "projector",
        "predictor",
        "equivariance",
    ]
    in_groups = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(in_groups) == sorted(trainable)  # every trainable parameter, exactly once


def test_momentum_pairs_keep_their_ema_and_exclude_the_head(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = equivariant(ContractBYOL)(make_cfg())
    assert [pair[0] for pair in model.momentum_pairs] == [model.backbone, model.projector]
    target = snapshot(model.momentum_backbone)
    fit(model, steps=1)
    assert changed(target, model.momentum_backbone)
    assert changed(snapshot(model.backbone), model.momentum_backbone)  # an average, not a copy


def test_loss_is_the_methods_plus_weight_times_the_term() -> None:
    model = equivariant(ContractBYOL)(make_cfg({"weight": 0.25}))
    loss = model.training_step(batch(), 0)
    assert model.method_loss is not None
    term = float(model.equivariance.metrics()["loss"])
    expected = float(model.method_loss.detach()) + 0.25 * term
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in model.equivariance.parameters())


def test_a_one_element_crop_list_is_taken_as_the_originals() -> None:
    model = equivariant(ContractSimCLR)(make_cfg())
    indexes, originals, targets = batch()
    assert model.training_step([indexes, [originals], targets], 0).ndim == 0


def test_defaults_follow_the_dataset_and_fill_the_crop_counts() -> None:
    cfg = OmegaConf.create({"data": {"dataset": "cifar100"}})
    settings = EquiModSettings.from_cfg(cfg)
    assert (settings.term, settings.weight, settings.preset) == ("equimod", 1.0, "byol")
    assert (settings.size, settings.variant, settings.normalize) == (32, "cifar", CIFAR_NORMALIZE)
    imagenet = EquiModSettings.from_cfg(OmegaConf.create({"data": {"dataset": "imagenet"}}))
    assert (imagenet.size, imagenet.variant, imagenet.normalize) == (
        224,
        "imagenet",
        IMAGENET_NORMALIZE,
    )
    model = equivariant(ContractSimCLR)(make_cfg())
    assert (model.num_large_crops, model.num_small_crops) == (2, 0)
    assert model.equivariance.term.param_dim == augment.byol(SIZE).layout.param_dim


def test_constructor_arguments_override_the_cfg_block() -> None:
    normalize = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    cfg = make_cfg({"weight": 3.0, "normalize": normalize})
    model = equivariant(ContractSimCLR)(cfg, weight=0.5, preset="simclr")
    assert model.equivariance.weight == 0.5
    assert model.equimod_settings.preset == "simclr"
    assert model.equimod_settings.normalize == ([0.5] * 3, [0.25] * 3)
    assert float(model.equivariance.normalize.std.flatten()[0]) == 0.25
    first, second = model.equivariance.augments
    assert first is second  # SimCLR's recipe for both views
    assert isinstance(model.equivariance.term, EquiModTerm)


def test_custom_augmentations_and_the_steering_term() -> None:
    views = list(augment.byol_views(SIZE, variant="cifar", blur_p=0.0))
    model = equivariant(ContractBYOL)(make_cfg(), augment=views, term="steering", term_kwargs={})
    assert list(model.equivariance.augments) == views
    assert isinstance(model.equivariance.term, SteeringTerm)
    model.training_step(batch(), 0).backward()
    assert set(model.equivariance.metrics()) >= {"loss", "cos_steered"}


def test_state_dict_adds_only_the_term() -> None:
    plain = ContractBYOL(make_cfg(num_large_crops=2, num_small_crops=0)).state_dict()
    keys = equivariant(ContractBYOL)(make_cfg()).state_dict().keys()
    added = set(keys) - set(plain)
    assert added and all(key.startswith("equivariance.term.") for key in added)


def test_the_factory_caches_and_names_the_class() -> None:
    cls = equivariant(ContractBYOL)
    assert cls is equivariant(ContractBYOL)
    assert cls.__name__ == "EquivariantContractBYOL"
    assert issubclass(cls, EquivariantMixin) and issubclass(cls, ContractBYOL)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"num_large_crops": 3}, "3 large and 0 small crops"),
        ({"num_small_crops": 6}, "2 large and 6 small crops"),
    ],
)
def test_crop_counts_other_than_two_large_are_rejected(data: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        equivariant(ContractBYOL)(make_cfg(**data))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"wieght": 1.0}, r"unknown equimod settings \['wieght'\]"),
        ({"term": "simclr"}, "equimod.term must be one of"),
        ({"preset": "moco"}, "equimod.preset must be one of"),
    ],
)
def test_bad_settings_are_rejected(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        equivariant(ContractBYOL)(make_cfg(), **settings)


def test_a_batch_of_crops_from_solo_learns_transform_is_rejected() -> None:
    model = equivariant(ContractBYOL)(make_cfg())
    indexes, originals, targets = batch()
    with pytest.raises(ValueError, match="2 crops per image.*OriginalTransform"):
        model.training_step([indexes, [originals, originals], targets], 0)


def test_a_method_without_backbone_or_scalar_loss_is_rejected() -> None:
    class NoBackbone(ContractMethod):
        def __init__(self, cfg: DictConfig) -> None:
            super().__init__(cfg)
            del self.backbone

    with pytest.raises(TypeError, match="no nn.Module attribute 'backbone'"):
        equivariant(NoBackbone)(make_cfg())
    model = equivariant(ContractMethod)(make_cfg())  # its training_step returns a dict
    with pytest.raises(TypeError, match="must return a scalar loss tensor"):
        model.training_step(batch(), 0)


def test_the_factory_rejects_what_is_not_a_method_class() -> None:
    with pytest.raises(TypeError, match="solo-learn method class"):
        equivariant(ContractBYOL(make_cfg(num_large_crops=2, num_small_crops=0)))
    with pytest.raises(TypeError, match="already has the equivariance term"):
        equivariant(equivariant(ContractBYOL))


@pytest.mark.parametrize("large, small", [(2, 6), (4, 0), (1, 0)])
def test_multi_crop_recipes_are_rejected_without_a_misleading_fix(large: int, small: int) -> None:
    with pytest.raises(ValueError, match="multi-crop recipes are not supported") as error:
        equivariant(ContractBYOL)(make_cfg(num_large_crops=large, num_small_crops=small))
    assert "num_large_crops=2" not in str(error.value)  # Hydra rejects that override


def test_mae_is_rejected_whatever_its_crops() -> None:
    class MAE(ContractBYOL):  # solo-learn's MAE, by name: it trains on masked patches, not views
        pass

    with pytest.raises(ValueError, match="MAE, which is not supported"):
        equivariant(MAE)(make_cfg(num_large_crops=2, num_small_crops=0))


# --- the views from the config's `augmentations` (solo-learn's recipe of the method) ---------

N = 4000  # parameter rows per distribution check


def solo_entry(
    *,
    blur: float = 0.0,
    solarize: float = 0.0,
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1),
    min_scale: float = 0.08,
    crop_size: int = 32,
    num_crops: int = 1,
    equalization: float = 0.0,
) -> dict[str, Any]:
    """An entry of solo-learn's scripts/pretrain/<dataset>/augmentations/*.yaml."""
    brightness, contrast, saturation, hue = jitter
    return {
        "rrc": {"enabled": True, "crop_min_scale": min_scale, "crop_max_scale": 1.0},
        "color_jitter": {
            "prob": 0.8,
            "brightness": brightness,
            "contrast": contrast,
            "saturation": saturation,
            "hue": hue,
        },
        "grayscale": {"prob": 0.2},
        "gaussian_blur": {"prob": blur},
        "solarization": {"prob": solarize},
        "equalization": {"prob": equalization},
        "horizontal_flip": {"prob": 0.5},
        "crop_size": crop_size,
        "num_crops": num_crops,
    }


# solo-learn's asymmetric.yaml (BYOL: blur 1.0 / 0.1, solarisation 0.0 / 0.2) at 32 px and its
# CIFAR symmetric.yaml (SimCLR: one entry, two crops)
BYOL_ENTRIES = [solo_entry(blur=1.0, solarize=0.0), solo_entry(blur=0.1, solarize=0.2)]
SIMCLR_ENTRIES = [solo_entry(blur=0.5, jitter=(0.8, 0.8, 0.8, 0.2), num_crops=2)]


def recipe_cfg(
    entries: list[dict[str, Any]], dataset: str = "cifar10", **equimod: Any
) -> DictConfig:
    """A solo-learn config with an ``augmentations`` list and no ``equimod.size``."""
    cfg = OmegaConf.create(
        {
            "data": {"dataset": dataset, "num_classes": 3},
            "optimizer": {"lr": 0.05},
            "momentum": {"base_tau": 0.9},
            "augmentations": entries,
            "equimod": {"term_kwargs": HEAD, **equimod},
        }
    )
    OmegaConf.set_struct(cfg, True)
    return cfg


def assert_rate(flags: Tensor, p: float) -> None:
    """The mean of 0 / 1 ``flags`` is ``p`` within 4.5 binomial standard errors."""
    assert set(flags.unique().tolist()) <= {0.0, 1.0}
    tolerance = 4.5 * math.sqrt(p * (1 - p) / len(flags)) + 1e-9
    assert abs(float(flags.mean()) - p) <= tolerance, (float(flags.mean()), p)


def torchvision_crop_areas(scale: tuple[float, float], n: int) -> Tensor:
    """Area fractions of torchvision's RandomResizedCrop boxes (solo-learn's crop) at 32 px."""
    image = torch.empty(3, 32, 32)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        boxes = [
            transforms.RandomResizedCrop.get_params(image, scale, (3 / 4, 4 / 3)) for _ in range(n)
        ]
    return torch.tensor([h * w / 32**2 for _, _, h, w in boxes])


def check_view(
    view: augment.ParamAugment,
    *,
    jitter: tuple[float, float, float, float],
    blur: float,
    solarize: float,
    scale: tuple[float, float],
    seed: int,
) -> None:
    """The sampled parameters of ``view`` follow a solo-learn entry with these values."""
    assert view.output_size == (32, 32)
    params = view.sample_params(N, 32, generator=torch.Generator().manual_seed(seed))
    rows = view.layout.split(params)
    assert_rate(rows["flip"][:, 0], 0.5)
    assert_rate(rows["color_jitter"][:, 0], 0.8)
    assert_rate(rows["grayscale"][:, 0], 0.2)
    if "blur" in rows:
        assert_rate(rows["blur"][:, 0], blur)
    else:
        assert blur == 0
    if "solarize" in rows:
        assert_rate(rows["solarize"][:, 0], solarize)
    else:
        assert solarize == 0
    # factor - 1 (hue: the shift) is uniform on [-s, s]: its extremes and standard deviation
    factors = rows["jitter_factors"][rows["color_jitter"][:, 0] == 1]
    for k, s in enumerate(jitter):
        values = factors[:, k]
        assert 0.97 * s <= float(values.abs().max()) <= s + 1e-6
        assert float(values.std()) == pytest.approx(s / math.sqrt(3), rel=0.05)
    if blur > 0:  # solo-learn's GaussianBlur: sigma ~ U[0.1, 2.0]
        sigma = rows["blur"][rows["blur"][:, 0] == 1, 1]
        assert 0.1 <= float(sigma.min()) and float(sigma.max()) <= 2.0
        assert abs(float(sigma.mean()) - 1.05) <= 4.5 * (1.9 / math.sqrt(12)) / len(sigma) ** 0.5
    # crop: area fractions distributed as torchvision's RandomResizedCrop with the entry's scale
    areas = rows["crop"][:, 2] * rows["crop"][:, 3]
    reference = torchvision_crop_areas(scale, N)
    assert float(areas.min()) >= scale[0] - 0.02 and float(areas.max()) <= scale[1] + 1e-6
    standard_error = math.sqrt((areas.var() + reference.var()) / N)
    assert abs(float(areas.mean() - reference.mean())) <= 4.5 * standard_error


def test_a_byol_config_gives_each_view_its_own_entry() -> None:
    model = equivariant(ContractBYOL)(recipe_cfg(BYOL_ENTRIES))
    settings = model.equimod_settings
    assert (settings.preset, settings.size, len(settings.recipes)) == (None, 32, 2)
    view_1, view_2 = model.equivariance.augments
    assert view_1 is not view_2 and view_1.layout == view_2.layout
    jitter = (0.4, 0.4, 0.2, 0.1)
    check_view(view_1, jitter=jitter, blur=1.0, solarize=0.0, scale=(0.08, 1.0), seed=1)
    check_view(view_2, jitter=jitter, blur=0.1, solarize=0.2, scale=(0.08, 1.0), seed=2)
    model.training_step(batch(), 0).backward()
    assert [tuple(x.shape) for x in model.seen[0]] == [(BATCH, 3, 32, 32)] * 2


def test_a_simclr_config_gives_one_recipe_for_both_views() -> None:
    model = equivariant(ContractSimCLR)(recipe_cfg(SIMCLR_ENTRIES))
    view_1, view_2 = model.equivariance.augments
    assert view_1 is view_2
    assert "solarize" not in view_1.layout.fields  # in neither view: no column for it
    jitter = (0.8, 0.8, 0.8, 0.2)
    check_view(view_1, jitter=jitter, blur=0.5, solarize=0.0, scale=(0.08, 1.0), seed=3)


def test_solo_learns_fixed_choices_carry_over() -> None:
    view_1, _ = EquiModSettings.from_cfg(recipe_cfg(BYOL_ENTRIES)).augmentations()
    crop, blur, solarize = view_1.ops[0], view_1.ops[4], view_1.ops[5]
    assert isinstance(crop, augment.RandomResizedCrop)
    assert (crop.interpolation, crop.ratio) == ("bicubic", (3 / 4, 4 / 3))
    assert isinstance(blur, augment.GaussianBlur) and blur.sigma == (0.1, 2.0)
    assert blur.kernel_size >= 2 * 3 * 2.0 + 1  # +-3 sigma at the largest sigma, as PIL's blur
    assert isinstance(solarize, augment.RandomSolarize)
    x = torch.tensor([127, 128]).div(255).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    out = solarize.apply(x, torch.ones(1, 1))[0, 0, 0]
    assert out.tolist() == pytest.approx([127 / 255, 127 / 255])  # PIL: invert from 128 of 255


def test_a_disabled_crop_and_an_unused_jitter_leave_their_columns_out() -> None:
    entry = solo_entry(num_crops=2)  # as solo-learn's reconstruction.yaml
    entry["rrc"] = {"enabled": False}
    entry["color_jitter"] = {"prob": 0.0}
    entry["grayscale"] = {"prob": 0.0}
    view, _ = EquiModSettings.from_cfg(recipe_cfg([entry])).augmentations()
    assert list(view.layout.fields) == ["crop", "flip"]
    crops = view.layout.split(view.sample_params(64, 48))["crop"]
    assert torch.equal(crops, torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(64, 4))


def test_a_custom_dataset_takes_the_crop_size() -> None:
    cfg = recipe_cfg([solo_entry(crop_size=24, num_crops=2)], dataset="custom")
    model = equivariant(ContractSimCLR)(cfg)
    assert model.equimod_settings.size == 24
    indexes, _, targets = batch()
    model.training_step([indexes, torch.rand(BATCH, 3, 24, 24), targets], 0)
    assert [tuple(x.shape) for x in model.seen[0]] == [(BATCH, 3, 24, 24)] * 2
    with_preset = EquiModSettings.from_cfg(cfg, preset="byol")
    assert with_preset.size == 24 and with_preset.augmentations()[0].output_size == (24, 24)
    assert EquiModSettings.from_cfg(cfg, size=16).augmentations()[0].output_size == (16, 16)
    no_crops = OmegaConf.create({"data": {"dataset": "custom"}})
    with pytest.raises(ValueError, match="'custom' has no default view size.*equimod.size"):
        EquiModSettings.from_cfg(no_crops)


@pytest.mark.parametrize("how", ["cfg", "constructor"])
def test_an_explicit_preset_wins_over_the_configs_augmentations(how: str) -> None:
    if how == "cfg":
        model = equivariant(ContractSimCLR)(recipe_cfg(BYOL_ENTRIES, preset="simclr"))
    else:
        model = equivariant(ContractSimCLR)(recipe_cfg(BYOL_ENTRIES), preset="simclr")
    assert model.equimod_settings.recipes == ()
    view_1, view_2 = model.equivariance.augments
    assert view_1 is view_2
    assert view_1.layout == augment.simclr(32, variant="cifar").layout  # no blur, no solarize


def test_views_given_to_the_mixin_win_and_the_entries_are_not_read() -> None:
    entries = [solo_entry(equalization=0.3, num_crops=2)]  # unsupported, but not used
    views = augment.byol_views(24, variant="cifar")
    model = equivariant(ContractBYOL)(recipe_cfg(entries, dataset="custom"), augment=views)
    assert list(model.equivariance.augments) == list(views)
    assert model.equimod_settings.recipes == ()


def test_augment_kwargs_replace_the_recipes_values_for_both_views() -> None:
    cfg = recipe_cfg(BYOL_ENTRIES, augment_kwargs={"interpolation": "bilinear", "blur_p": 0.0})
    views = EquiModSettings.from_cfg(cfg).augmentations()
    assert [v.ops[0].interpolation for v in views] == ["bilinear", "bilinear"]
    assert all("blur" not in v.layout.fields for v in views)
    with pytest.raises(ValueError, match=r"augment_kwargs \['blur_prob'\] are not keys"):
        EquiModSettings.from_cfg(recipe_cfg(BYOL_ENTRIES, augment_kwargs={"blur_prob": 0.1}))


def test_equalization_is_rejected_as_unsupported() -> None:
    entries = [BYOL_ENTRIES[0], solo_entry(blur=0.1, solarize=0.2, equalization=0.3)]
    with pytest.raises(ValueError, match=r"augmentations\.1\.equalization\.prob is 0\.3.*not supp"):
        equivariant(ContractBYOL)(recipe_cfg(entries))
    equivariant(ContractBYOL)(recipe_cfg(entries, preset="byol"))  # a preset does not read it


def test_an_incomplete_entry_names_the_missing_key_and_the_preset() -> None:
    cfg = recipe_cfg([{"crop_size": 32, "num_crops": 2}])
    with pytest.raises(ValueError, match=r"augmentations\.0\.rrc\.enabled is missing.*preset"):
        EquiModSettings.from_cfg(cfg)
    entry = solo_entry(num_crops=2)
    del entry["color_jitter"]["hue"]
    with pytest.raises(ValueError, match=r"augmentations\.0\.color_jitter\.hue is missing"):
        EquiModSettings.from_cfg(recipe_cfg([entry]))
    assert EquiModSettings.from_cfg(cfg, preset="byol").size == 32


@pytest.mark.parametrize(
    "entries",
    [
        [solo_entry(num_crops=3)],
        [solo_entry(num_crops=1), solo_entry(num_crops=1, crop_size=16)],
    ],
)
def test_configs_without_two_crops_of_one_size_are_rejected(entries: list[dict[str, Any]]) -> None:
    with pytest.raises(ValueError, match="multi-crop recipes are not supported"):
        EquiModSettings.from_cfg(recipe_cfg(entries)).augmentations()
