"""CPU-scale reproduction of EquiMod's claim: SimCLR and BYOL, with and without EquiMod, on two
colour tasks, seeded and anchored to a random-init encoder.

EquiMod's claim (Devillers & Lefort, ICLR 2023) is that the equivariance term keeps what the
invariance loss removes, without costing the object probe. On images whose colour is a second
label that colour jitter and grayscale teach an invariant model to ignore, that shows as colour
information left in the features. Datasets (``--only DATASET/METHOD``):

- ``tint24``: Fashion-MNIST items tinted with one of 24 hues 15 degrees apart (neighbours lie
  inside the +-36 degree hue jitter: a fine-grained colour task); also ``tint8`` and ``fmnist``.
- ``photo24``: 32 px crops of scikit-image's 7 colour photos (content label: the photo), each
  hue-rotated by one of 24 angles (colour label): natural colours instead of a tint.

Methods: ``random-init`` (the BYOL model untrained), ``simclr`` (NT-Xent, tau 0.5 as EquiMod's
CIFAR-10 run), ``byol``, each ``+equimod`` (tau 0.2, the paper's; weights from ``--weights``) and
each ``+steering`` variant of :data:`STEERING` (issue 15). Every run uses the quickstart's
6-layer 32-wide convnet (D = 32) and the presets' CIFAR views through one branch; the baselines keep
their EquiMod head as a :class:`~equimod_plugin.terms.Monitor` (trained on detached features),
so equivariance metrics exist for them too while their encoder trains on the invariance loss
alone. BYOL's recipe at this budget (calibrated on tint24 seed 0, see
``docs/results/reproduction/byol_calibration``): predictor lr 10x, batch 64, target momentum
0.99 -> 1 per step.

Evaluated on held-out images with the frozen backbone (and the projector output): linear probe
and kNN (k = 20, cosine, temperature 0.07) accuracy of the object and hue labels, eta squared,
and EquiMod's absolute / relative equivariance on test views. The report gives mean +- sd over
seeds, the differences paired by seed (inside one sd: "no difference"), the goals of issue 14,
and ``weights.png`` (accuracy against the EquiMod weight). Each run's JSON (and its weights,
``.pt``) is cached in ``runs/`` of the output directory: an interrupted command resumes, several
commands with one ``--out`` add up to one report, and ``--reevaluate`` evaluates saved weights
again without training.

    python experiments/reproduce_cpu.py --smoke                  # < 2 min, a temp dir
    python experiments/reproduce_cpu.py --out docs/results/reproduction --only tint24/simclr \
        tint24/simclr+equimod --seeds 0 1 2 --weights 0.1 0.3 1

Budget: 5000 training and up to 2000 test images (the shipped Fashion-MNIST sample has 1000
test images; Debian's complete set is used where installed), 4 epochs, one torch thread per
run, two runs at a time: about 5 min per run on one core of an AMD EPYC. CPU only by design
(one thread per run, runs side by side).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from lightly.loss import NegativeCosineSimilarity, NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.models.utils import update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import Tensor, nn

from _cli import output_dir
from _tinted import normalize, photo_split, tinted_split
from equimod_plugin import EquiModLoss, augment, equimod_branch, steering_branch
from equimod_plugin.branch import EquivarianceBranch
from equimod_plugin.eval.batchnorm import recalibrate_batchnorm
from equimod_plugin.eval.datasets import fashion_mnist_source
from equimod_plugin.eval.probes import eta_squared, extract_features, knn_accuracy, linear_probe
from equimod_plugin.quickstart import BYOL, convnet
from equimod_plugin.terms import Monitor

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "reproduction"
DATASETS = {"fmnist": 0, "tint8": 8, "tint24": 24, "photo24": 24}  # number of hues (0: grey)
#: The steering variants (issue 15): ``SteeringTerm`` options of each ``+steering...`` method.
STEERING: dict[str, dict[str, Any]] = {
    "steering": {"objective": "regression"},  # SteeringLoss on standardised backbone features
    "steering-nce": {"objective": "contrastive"},  # NT-Xent, sibling view among the negatives
    "steering-nce-proj": {"objective": "contrastive", "projector": (512, 128)},  # its own space
    "steering-nce-w3": {"objective": "contrastive", "weight": 3.0},  # a heavier contrastive term
}
METHODS = (
    "simclr",
    "simclr+equimod",
    "byol",
    "byol+equimod",
    *(f"{base}+{variant}" for base in ("byol", "simclr") for variant in STEERING),
)
RANDOM_INIT = "random-init"  # the BYOL model and its monitor head, evaluated untrained
#: The default grid: both colour tasks, both invariance methods with and without EquiMod.
RUNS = tuple((d, m) for d in ("tint24", "photo24") for m in (RANDOM_INIT, *METHODS[:4]))


@dataclass(frozen=True)
class Config:
    train_images: int = 5_000
    test_images: int = 2_000
    epochs: int = 4
    batch_size: int = 128  # SimCLR's
    byol_batch_size: int = 64  # BYOL's: twice the steps at the same cost (calibrated, see the docstring)
    lr: float = 0.06
    knn_k: int = 20
    equimod_weight: float = 1.0
    seed: int = 0
    momentum_base: float = 0.99
    momentum_per_step: bool = True
    predictor_lr_scale: float = 10.0
    param_norm: str = "batchnorm"  # "batchnorm" (the head's default), "constants" or "none"
    processes: int = 2
    shipped_sample: bool = False
    reevaluate: bool = False


SMOKE = Config(train_images=256, test_images=128, epochs=1, batch_size=64, byol_batch_size=64, shipped_sample=True)


# data


def load_split(dataset: str, split: str, n: int, config: Config) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` images of a split as RGB (n, 3, 32, 32) in [0, 1], object and hue labels.

    The same images and hue labels for every run (seeded by the split); ``fmnist``: grey.
    """
    seed = 0 if split == "train" else 1
    if dataset.startswith("photo"):
        return photo_split(split, n, DATASETS[dataset], seed)
    sample = True if config.shipped_sample else None
    return tinted_split(split, n, DATASETS[dataset], seed, sample=sample)


# models


class SimCLR(nn.Module):
    def __init__(self, backbone: nn.Module, dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(dim, 256, 64)

    def forward(self, x: Tensor) -> Tensor:
        return self.projection_head(self.backbone(x).flatten(1))


def base_method(method: str) -> str:
    """``"byol"`` or ``"simclr"``: the invariance method of ``method`` (random init: BYOL's model)."""
    return "byol" if method == RANDOM_INIT else method.partition("+")[0]


def training_views(method: str) -> augment.ParamAugment | tuple[augment.ParamAugment, augment.ParamAugment]:
    """The augmentation a run of ``method`` trains with: BYOL's two views, or SimCLR's one recipe (both views)."""
    if base_method(method) == "byol":
        return augment.byol_views(32, variant="cifar")
    return augment.simclr(32, variant="cifar")


def build(method: str, config: Config) -> tuple[nn.Module, EquivarianceBranch]:
    """The model and its branch; the baselines' term is a :class:`~equimod_plugin.terms.Monitor`."""
    base, extra = base_method(method), method.partition("+")[2]
    backbone = convnet()
    model = BYOL(backbone, dim=32) if base == "byol" else SimCLR(backbone, dim=32)
    views = training_views(method)
    if extra in STEERING:
        branch = steering_branch(backbone, views, **STEERING[extra])
    else:
        loss = EquiModLoss(temperature=0.2)
        standardize = config.param_norm == "batchnorm"
        branch = equimod_branch(
            backbone, views, weight=config.equimod_weight, hidden_dim=512, loss=loss, standardize_params=standardize
        )
        if config.param_norm == "constants":
            standardize_by_sampling(branch)
        if not extra:
            branch.term = Monitor(branch.term)
    model.equivariance = branch  # registers the term's parameters with the model
    return model, branch


class Standardize(nn.Module):
    """``(p - mean) / std`` with fixed per-column constants, as the official code feeds its projector."""

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, p: Tensor) -> Tensor:
        return (p - self.mean) / self.std


def standardize_by_sampling(branch: EquivarianceBranch, samples: int = 8192) -> None:
    """Prepends to the head's parameter projector the standardisation with constants measured
    on ``samples`` parameter vectors of each view (the ``param_norm="constants"`` alternative)."""
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(samples, 3, 32, 32)
    params = torch.cat([aug.sample(x, generator=g) for aug in branch.augments])
    std = params.std(0)
    branch.term.head.param_projector.insert(0, Standardize(params.mean(0), torch.where(std > 1e-6, std, 1.0)))


def invariance_loss(model: nn.Module, x0: Tensor, x1: Tensor, criterion: nn.Module) -> Tensor:
    if isinstance(model, BYOL):
        p0, p1 = model(x0), model(x1)
        z0, z1 = model.forward_momentum(x0), model.forward_momentum(x1)
        return 0.5 * (criterion(p0, z1) + criterion(p1, z0))
    return criterion(model(x0), model(x1))


def train(
    method: str, images: Tensor, config: Config, built: tuple[nn.Module, EquivarianceBranch] | None = None
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Trains ``build(method, config)`` (or the prebuilt ``(model, branch)``) on ``images``."""
    torch.manual_seed(config.seed)
    model, branch = build(method, config) if built is None else built
    is_byol = isinstance(model, BYOL)
    criterion = NegativeCosineSimilarity() if is_byol else NTXentLoss(temperature=0.5)
    predictor = list(model.prediction_head.parameters()) if is_byol else []
    others = [p for p in model.parameters() if all(p is not q for q in predictor)]
    groups = [{"params": others}, {"params": predictor, "lr": config.lr * config.predictor_lr_scale}]
    optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=0.9, weight_decay=5e-4)
    batch_size = config.byol_batch_size if is_byol else config.batch_size
    loader = torch.utils.data.DataLoader(images, batch_size=batch_size, shuffle=True, drop_last=True)
    log = []
    epochs = 0 if method == RANDOM_INIT else config.epochs
    for epoch in range(epochs):
        start, totals = time.perf_counter(), torch.zeros(2)
        momentum = cosine_schedule(epoch, config.epochs, config.momentum_base, 1)
        sums: dict[str, float] = {}
        for i, batch in enumerate(loader):
            if config.momentum_per_step:  # BYOL's schedule over steps, as in its paper
                steps = epoch * len(loader) + i
                momentum = cosine_schedule(steps, config.epochs * len(loader), config.momentum_base, 1)
            x0, x1 = branch.views(batch)
            if is_byol:
                update_momentum(model.backbone, model.backbone_momentum, m=momentum)
                update_momentum(model.projection_head, model.projection_head_momentum, m=momentum)
            invariance = invariance_loss(model, x0, x1, criterion)
            equivariance = branch.loss()
            (invariance + equivariance).backward()
            optimizer.step()
            optimizer.zero_grad()
            totals += torch.stack([invariance.detach(), equivariance.detach()])
            for key, value in branch.metrics().items():
                sums[key] = sums.get(key, 0.0) + float(value)
        if not bool(torch.isfinite(totals).all()):
            raise SystemExit(f"{method}: the loss is not finite")
        log.append(
            {
                "epoch": epoch,
                "invariance_loss": float(totals[0]) / len(loader),
                "term_loss": float(totals[1]) / len(loader),
                "minutes": (time.perf_counter() - start) / 60,
                **{f"term_{k}": v / len(loader) for k, v in sums.items()},
            }
        )
    return model, log


# evaluation


def recalibrate(model: nn.Module, images: Tensor, config: Config) -> None:
    """Eval-mode BatchNorm statistics for the final weights: an exact average over 20 training
    batches run as a training step runs them (``equimod_plugin.eval.batchnorm``). Without it the
    running statistics lag the weights and eval-mode metrics drift (docs/quickstart.md)."""
    torch.manual_seed(2)
    batch_size = config.byol_batch_size if isinstance(model, BYOL) else config.batch_size
    order = torch.randperm(len(images))[: 20 * batch_size]

    def training_pass(batch: Tensor) -> None:
        x0, x1 = model.equivariance.views(batch)
        model(x0), model(x1)
        model.equivariance.loss()

    recalibrate_batchnorm(model, images[order].split(batch_size), training_pass)


def held_out_equivariance(model: nn.Module, images: Tensor) -> dict[str, float]:
    """The term's metrics on test images (eval mode, fixed seed)."""
    model.eval()
    torch.manual_seed(1)
    branch = model.equivariance
    with torch.no_grad():
        metrics = []
        for chunk in images.split(500):
            branch.views(chunk)
            branch.loss()
            metrics.append({k: float(v) for k, v in branch.metrics().items()})
    return {key: float(np.mean([m[key] for m in metrics])) for key in metrics[0]}


def evaluate(model: nn.Module, data: dict[str, Any], config: Config) -> dict[str, Any]:
    (train_x, train_y, train_h), (test_x, test_y, test_h) = data["train"], data["test"]
    recalibrate(model, train_x, config)
    model.eval()
    out: dict[str, Any] = {
        "train_images": len(train_x),
        "test_images": len(test_x),
        "equivariance": held_out_equivariance(model, test_x),
    }
    projector = nn.Sequential(model.backbone, nn.Flatten(), model.projection_head)
    labels = {"object": (train_y, test_y)}
    if data["num_hues"]:
        labels["hue"] = (train_h, test_h)
    for space, encoder in (("backbone", model.backbone), ("projector", projector)):
        f_train = extract_features(encoder, train_x, batch_size=512, transform=normalize)
        f_test = extract_features(encoder, test_x, batch_size=512, transform=normalize)
        for label, (y_train, y_test) in labels.items():
            out[f"{space}/{label}/linear"] = linear_probe(f_train, y_train, f_test, y_test)
            out[f"{space}/{label}/knn"] = knn_accuracy(f_train, y_train, f_test, y_test, k=config.knn_k)
            out[f"{space}/{label}/eta2"] = eta_squared(f_test, y_test)
    return out


def run_name(dataset: str, method: str, config: Config) -> str:
    """The run's file name: dataset, method, EquiMod weight, parameter standardisation, seed."""
    name = f"{dataset}_{method.replace('+', '_')}"
    if method.endswith("+equimod"):
        name += f"_w{config.equimod_weight:g}"
        if config.param_norm != "batchnorm":
            name += f"_{config.param_norm}"
    return f"{name}_s{config.seed}"


def run_one(job: tuple[str, str, Config, str]) -> dict[str, Any]:
    """Train and evaluate one (dataset, method, weight, seed); cached as JSON in ``runs/``.

    The trained weights are saved next to the JSON (``.pt``, not committed) so ``--reevaluate``
    can evaluate again without training.
    """
    dataset, method, config, out = job
    path = Path(out) / "runs" / f"{run_name(dataset, method, config)}.json"
    checkpoint = path.with_suffix(".pt")
    if path.exists() and not (config.reevaluate and checkpoint.exists()):
        return json.loads(path.read_text())
    torch.set_num_threads(1)
    data = {
        "train": load_split(dataset, "train", config.train_images, config),
        "test": load_split(dataset, "test", config.test_images, config),
        "num_hues": DATASETS[dataset],
    }
    if path.exists():  # re-evaluate the saved weights
        result = json.loads(path.read_text())
        model, _ = build(method, config)
        model.load_state_dict(torch.load(checkpoint))
    else:
        start = time.perf_counter()
        model, log = train(method, data["train"][0], config)
        result = {
            "dataset": dataset,
            "method": method,
            "seed": config.seed,
            "weight": config.equimod_weight if method.endswith("+equimod") else 0.0,
            "param_norm": config.param_norm,
            "train_minutes": (time.perf_counter() - start) / 60,
            "load_average": os.getloadavg()[0],
            "training": log,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), checkpoint)
    result.update(evaluate(model, data, config))
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"  {path.stem:40s} {result['train_minutes']:5.1f} min  {summary(result)}", flush=True)
    return result


def summary(result: dict[str, Any]) -> str:
    keys = ["backbone/object/linear", "backbone/hue/knn", "backbone/hue/linear"]
    return ", ".join(f"{k} {result[k]:.3f}" for k in keys if k in result)


# report: mean +- sd over seeds, differences paired by seed

COLUMNS = {
    "object, linear": "backbone/object/linear",
    "object, kNN": "backbone/object/knn",
    "hue, linear": "backbone/hue/linear",
    "hue, kNN": "backbone/hue/knn",
    "hue, linear (proj.)": "projector/hue/linear",
}
DIFFERENCES = ("object, linear", "object, kNN", "hue, linear", "hue, kNN")


def label(r: dict[str, Any]) -> str:
    """The row of a run: its method, with the EquiMod weight and a non-default standardisation."""
    if not r["method"].endswith("+equimod"):
        return r["method"]
    norm = "" if r.get("param_norm", "batchnorm") == "batchnorm" else f", {r['param_norm']}"
    return f"{r['method']} (w {r['weight']:g}{norm})"


def groups(results: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Runs by (dataset, row), each sorted by seed; rows in the order of :data:`METHODS`."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    order = {m: i for i, m in enumerate((RANDOM_INIT, *METHODS))}
    for r in sorted(results, key=lambda r: (r["dataset"], order[r["method"]], r.get("weight", 0), r["seed"])):
        out.setdefault((r["dataset"], label(r)), []).append(r)
    return out


def value(r: dict[str, Any], key: str) -> float:
    return r["equivariance"]["relative"] if key == "relative" else r[key]


def mean_sd(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    if not values:
        return "-"
    v = np.asarray(values) * scale
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}" if len(v) > 1 else f"{v[0]:.{digits}f}"


def paired(a: list[dict[str, Any]], b: list[dict[str, Any]], key: str) -> list[float]:
    """``b - a`` per seed the two share."""
    by_seed = {r["seed"]: r for r in a}
    return [value(r, key) - value(by_seed[r["seed"]], key) for r in b if r["seed"] in by_seed]


def verdict(diffs: list[float]) -> str:
    """The mean difference in points, or "no difference" when it is inside one sd."""
    if len(diffs) < 2:
        return f"{100 * diffs[0]:+.1f} (1 seed)" if diffs else "-"
    mean, sd = 100 * np.mean(diffs), 100 * np.std(diffs, ddof=1)
    return f"{mean:+.1f} ± {sd:.1f}" + (" (no difference)" if abs(mean) <= sd else "")


def baseline_of(row: str) -> str:
    return row.split("+")[0]


def markdown(report: dict[str, Any]) -> str:
    results = report["results"]
    by = groups(results)
    datasets = sorted({d for d, _ in by}, key=list(DATASETS).index)
    header = ["dataset", "run", "seeds", *COLUMNS, "rel. equiv.", "train min"]
    lines = [
        "# CPU-scale reproduction: invariance vs + EquiMod, seeded, with a random-init reference",
        "",
        f"Made by `experiments/reproduce_cpu.py`. {report['hardware']}.",
        "",
        f"**Headline:** {headline(by)}",
        "",
        "Accuracies in points (mean ± sd over seeds) on held-out images:",
        "",
        "| " + " | ".join(header) + " |",
        "|---|---|---:|" + "---:|" * (len(header) - 3),
    ]
    for (dataset, row), runs in by.items():
        cells = [mean_sd([value(r, k) for r in runs if k in r]) for k in COLUMNS.values()]
        relative = [r["equivariance"]["relative"] for r in runs if "relative" in r["equivariance"]]
        cells.append("-" if row == RANDOM_INIT else mean_sd(relative, scale=1.0, digits=2))
        minutes = np.mean([r["train_minutes"] for r in runs])
        lines.append(f"| {dataset} | {row} | {len(runs)} | " + " | ".join(cells) + f" | {minutes:.1f} |")
    lines += [
        "",
        "Linear: L-BFGS probe on standardised frozen backbone features (D = 32); kNN: k = 20, cosine, "
        "temperature 0.07; proj.: the projector output. rel. equiv.: EquiMod's relative equivariance of the "
        "equivariance head on test views (baselines and random init: a monitor head trained on detached "
        "features). w: the EquiMod term's weight. The random-init row is the BYOL model untrained.",
        "",
        "## Differences (paired by seed, points, mean ± sd; inside one sd: no difference)",
        "",
        "| dataset | run | minus | " + " | ".join(DIFFERENCES) + " |",
        "|---|---|---|" + "---:|" * len(DIFFERENCES),
    ]
    for (dataset, row), runs in by.items():
        reference = RANDOM_INIT if row in ("simclr", "byol") else baseline_of(row)
        if row == RANDOM_INIT or (dataset, reference) not in by:
            continue
        cells = [verdict(paired(by[dataset, reference], runs, COLUMNS[k])) for k in DIFFERENCES]
        lines.append(f"| {dataset} | {row} | {reference} | " + " | ".join(cells) + " |")
    lines += ["", "## Goals", "", *goals(by, datasets)]
    if any("+steering" in row for _, row in by):
        lines += ["", "## Steering (issue 15)", "", *steering(by)]
    return "\n".join(lines) + "\n"


def steering(by: dict[tuple[str, str], list[dict[str, Any]]]) -> list[str]:
    """Per steering row: held-out steered and unsteered cosines, and issue 15's goals."""
    lines = [
        "cos(M(a) e(x), e(a(x))) (steered) and cos(e(x), e(a(x))) (unsteered) on test views, in the "
        "space the operator acts on; object and hue differences to the baseline in points.",
        "",
        "| dataset | run | steered cos | unsteered cos | object >= baseline - 1 | hue linear >= +10 | "
        "steered >= 0.9 and >= unsteered + 0.15 |",
        "|---|---|---:|---:|---|---|---|",
    ]
    for (dataset, row), runs in by.items():
        base = baseline_of(row)
        if "+steering" not in row or (dataset, base) not in by:
            continue
        steered = [r["equivariance"]["cos_steered"] for r in runs]
        unsteered = [r["equivariance"]["cos_original"] for r in runs]
        cells = [mean_sd(steered, scale=1.0, digits=3), mean_sd(unsteered, scale=1.0, digits=3)]
        for key, threshold in (("backbone/object/linear", -1.0), ("backbone/hue/linear", 10.0)):
            mean = 100 * float(np.mean(paired(by[dataset, base], runs, key)))
            cells.append(f"{mean:+.1f} {'yes' if mean >= threshold else 'no'}")
        met = np.mean(steered) >= 0.9 and np.mean(steered) >= np.mean(unsteered) + 0.15
        cells.append("yes" if met else "no")
        lines.append(f"| {dataset} | {row} | " + " | ".join(cells) + " |")
    return lines


def headline(by: dict[tuple[str, str], list[dict[str, Any]]]) -> str:
    """Each ``+equimod`` row at the paper's weight 1 minus its baseline, in points."""
    parts = []
    for (dataset, row), runs in by.items():
        if not row.endswith("+equimod (w 1)") or (dataset, baseline_of(row)) not in by:
            continue
        base = by[dataset, baseline_of(row)]
        cells = [f"{name} {verdict(paired(base, runs, COLUMNS[name]))}" for name in DIFFERENCES]
        parts.append(f"{dataset}, {row} minus {baseline_of(row)}: " + ", ".join(cells))
    return "; ".join(parts) + " (points, mean ± sd over seeds)" if parts else "-"


def goals(by: dict[tuple[str, str], list[dict[str, Any]]], datasets: list[str]) -> list[str]:
    """The issue's goals per EquiMod row, each as the measured value and whether it is met."""
    lines = [
        "| dataset | run | object >= baseline - 1 | hue linear >= +10 | hue kNN >= +10 | rel. equiv. > 1 |",
        "|---|---|---|---|---|---|",
    ]

    def check(diffs: list[float], threshold: float) -> str:
        mean = 100 * float(np.mean(diffs))
        return f"{mean:+.1f} {'yes' if mean >= threshold else 'no'}"

    for (dataset, row), runs in by.items():
        base = baseline_of(row)
        if "+equimod" not in row or (dataset, base) not in by:
            continue
        cells = [check(paired(by[dataset, base], runs, "backbone/object/linear"), -1.0)]
        for key in ("backbone/hue/linear", "backbone/hue/knn"):
            cells.append(check(paired(by[dataset, base], runs, key), 10.0) if key in runs[0] else "-")
        relative = float(np.mean([value(r, "relative") for r in runs]))
        cells.append(f"{relative:.2f} {'yes' if relative > 1 else 'no'}")
        lines.append(f"| {dataset} | {row} | " + " | ".join(cells) + " |")
    return lines


def figures(report: dict[str, Any], out: Path) -> None:
    """``weights.png``: object and hue accuracy against the EquiMod weight (0: the baseline)."""
    results = [r for r in report["results"] if r.get("param_norm", "batchnorm") == "batchnorm"]
    datasets = [d for d in DATASETS if any(r["dataset"] == d and r["method"].endswith("+equimod") for r in results)]
    if not datasets:
        return
    fig, axes = plt.subplots(1, len(datasets), figsize=(3.8 * len(datasets), 3.2), squeeze=False, sharey=True)
    metrics = {"object, linear": "backbone/object/linear", "hue, linear": "backbone/hue/linear"}
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for base, colour in (("simclr", "tab:blue"), ("byol", "tab:orange")):
            runs = [r for r in results if r["dataset"] == dataset and r["method"] in (base, f"{base}+equimod")]
            weights = sorted({r["weight"] for r in runs})
            if len(weights) < 2:
                continue
            for (name, key), style in zip(metrics.items(), ("-o", "--s"), strict=True):
                values = [[100 * r[key] for r in runs if r["weight"] == w] for w in weights]
                ax.errorbar(
                    range(len(weights)),
                    [np.mean(v) for v in values],
                    yerr=[np.std(v, ddof=1) if len(v) > 1 else 0 for v in values],
                    fmt=style,
                    color=colour,
                    capsize=3,
                    label=f"{base}: {name}",
                )
            ax.set_xticks(range(len(weights)), [f"{w:g}" for w in weights])
        random_init = [
            100 * r["backbone/object/linear"]
            for r in report["results"]
            if r["dataset"] == dataset and r["method"] == RANDOM_INIT
        ]
        if random_init:
            ax.axhline(np.mean(random_init), color="grey", linestyle=":", label="random init: object")
        ax.set_xlabel("EquiMod weight (0: baseline)", fontsize=9)
        ax.set_title(dataset, fontsize=10)
        ax.tick_params(labelsize=8)
    axes[0][0].set_ylabel("held-out accuracy (%)", fontsize=9)
    handles, labels_ = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels_, loc="lower center", ncol=3, fontsize=8)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    fig.savefig(out / "weights.png", dpi=110)
    plt.close(fig)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def counts(runs: list[dict[str, Any]], key: str) -> str:
    """The runs' numbers of images, e.g. ``"5000"`` (``"?"`` for runs that predate the key)."""
    return "/".join(str(n) for n in sorted({r.get(key, "?") for r in runs}, key=str))


def hardware(report: dict[str, Any], config: Config, source: str) -> str:
    if "equimod_plugin/_data" in source:
        source = "the sample shipped with the package"
    runs = report["results"]
    trained = [r for r in runs if r["method"] != RANDOM_INIT]
    return (
        f"{cpu_name()} ({os.cpu_count()} cores, shared), 1 torch thread per run, {config.processes} runs at a time, "
        f"torch {torch.__version__}; {counts(runs, 'train_images')} train / {counts(runs, 'test_images')} test images "
        "per dataset "
        f"(Fashion-MNIST: {source}; photo24: scikit-image's photos), {config.epochs} epochs of batch "
        f"{config.batch_size} (SimCLR) / {config.byol_batch_size} (BYOL), SGD lr {config.lr:g}, "
        f"BYOL predictor lr x{config.predictor_lr_scale:g}, "
        f"BYOL momentum {config.momentum_base:g} -> 1 per {'step' if config.momentum_per_step else 'epoch'}; "
        f"{len(trained)} trained runs, {sum(r['train_minutes'] for r in trained):.0f} min of training in all, "
        f"{np.mean([r['train_minutes'] for r in trained]):.1f} min per run "
        f"(load average {np.mean([r['load_average'] for r in trained]):.1f} at run ends)"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="output directory; runs already in its runs/ are reused and every run there enters the report "
        "(default: a new folder runs/reproduction-<time> under the working directory; the committed results "
        "are made with --out docs/results/reproduction)",
    )
    parser.add_argument(
        "--only",
        nargs="*",
        metavar="DATASET/METHOD",
        help=f"runs to do (default: {' '.join('/'.join(r) for r in RUNS)}); datasets {', '.join(DATASETS)}; "
        f"methods {RANDOM_INIT}, {', '.join(METHODS)}",
    )
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds of the weights and the views (default 0 1 2)")
    parser.add_argument(
        "--weights", type=float, nargs="+", help="EquiMod term weights of the +equimod runs (default 0.1 0.3 1)"
    )
    parser.add_argument(
        "--param-norm",
        choices=("batchnorm", "constants", "none"),
        help="how the EquiMod head standardises the augmentation parameters: the head's non-affine BatchNorm "
        "(default), constants measured by sampling, or not at all",
    )
    parser.add_argument("--epochs", type=int, help=f"training epochs (default {Config.epochs})")
    parser.add_argument("--train-images", type=int, help=f"training images (default {Config.train_images})")
    parser.add_argument("--batch-size", type=int, help=f"SimCLR's training batch size (default {Config.batch_size})")
    parser.add_argument(
        "--byol-batch-size", type=int, help=f"BYOL's training batch size (default {Config.byol_batch_size})"
    )
    parser.add_argument("--lr", type=float, help=f"SGD learning rate (default {Config.lr})")
    parser.add_argument(
        "--predictor-lr-scale", type=float, help=f"BYOL predictor lr / lr (default {Config.predictor_lr_scale})"
    )
    parser.add_argument(
        "--momentum-base", type=float, help=f"BYOL target momentum at the start (default {Config.momentum_base})"
    )
    parser.add_argument(
        "--momentum-per-step",
        action=argparse.BooleanOptionalAction,
        help=f"cosine momentum schedule per step rather than per epoch (default {Config.momentum_per_step})",
    )
    parser.add_argument("--processes", type=int, help=f"runs at a time, one thread each (default {Config.processes})")
    parser.add_argument(
        "--reevaluate", action="store_true", help="evaluate saved runs again from their weights (.pt) without training"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI (< 1 min, a temp dir)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    config = SMOKE if args.smoke else Config()
    overrides = {
        "epochs": args.epochs,
        "train_images": args.train_images,
        "processes": args.processes,
        "batch_size": args.batch_size,
        "byol_batch_size": args.byol_batch_size,
        "predictor_lr_scale": args.predictor_lr_scale,
        "param_norm": args.param_norm,
        "lr": args.lr,
        "momentum_base": args.momentum_base,
        "momentum_per_step": args.momentum_per_step,
        "reevaluate": args.reevaluate or None,
    }
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    out = output_dir(args.out, args.smoke, "reproduction")
    runs = [tuple(r.split("/")) for r in args.only] if args.only else list(RUNS)
    for dataset, method in runs:
        if dataset not in DATASETS or method not in (RANDOM_INIT, *METHODS):
            raise SystemExit(f"--only: unknown run {dataset}/{method}")
    seeds = args.seeds or ([0] if args.smoke else [0, 1, 2])
    weights = args.weights or ([1.0] if args.smoke else [0.1, 0.3, 1.0])
    jobs = [
        (d, m, replace(config, seed=s, equimod_weight=w), str(out))
        for d, m in runs
        for s in seeds
        for w in (weights if m.endswith("+equimod") else [config.equimod_weight])
    ]
    source = fashion_mnist_source("train", sample=True if config.shipped_sample else None)
    print(f"data: {source}; {len(jobs)} runs, {config.processes} at a time; writing to {out}", flush=True)
    with multiprocessing.get_context("spawn").Pool(config.processes) as pool:
        pool.map(run_one, jobs, chunksize=1)
    results = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    report: dict[str, Any] = {"config": asdict(config), "results": results}
    report["hardware"] = hardware(report, config, source)
    (out / "reproduction.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "reproduction.md").write_text(markdown(report))
    figures(report, out)
    print(markdown(report))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
