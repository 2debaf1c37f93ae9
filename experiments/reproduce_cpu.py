"""CPU-scale reproduction: SimCLR / BYOL with and without EquiMod (and BYOL + steering) on
Fashion-MNIST and on colour-tinted Fashion-MNIST, side by side.

EquiMod's claim (Devillers & Lefort, ICLR 2023) is that the equivariance term keeps what the
invariance loss removes. On Fashion-MNIST tinted with one of K hues (a second label that colour
jitter and grayscale teach an invariant model to ignore), that shows as colour information
left in the features. Every run uses the same small backbone (the quickstart's 6-layer 32-wide
convnet, D = 32), data, epochs, seed and views: all go through one
:func:`~equimod_plugin.wrap.equimod_branch` / :func:`~equimod_plugin.wrap.steering_branch`.
The baselines keep their term with gradients cut at the backbone (a *monitor*: its head learns
to predict the views from frozen-in-time features, so EquiMod's equivariance metrics exist for
the baselines too, while their encoder trains on the invariance loss alone).

Datasets: ``fmnist`` (grey images as RGB), ``tint8`` (8 hues 45 degrees apart) and ``tint24``
(24 hues 15 degrees apart: neighbours lie inside the +-36 degree hue jitter, a fine-grained
colour task). Methods: ``simclr`` (NT-Xent, tau 0.5 as EquiMod's CIFAR-10 run), ``byol``, each
``+equimod`` (weight 1, tau 0.2, the paper's), and ``byol+steering`` (tint8 only).

Evaluated on held-out images with the frozen backbone (and the projector output): linear probe
(L-BFGS) and kNN (k = 20, cosine, temperature 0.07) accuracy of the object label and of the hue
label, eta squared (share of feature variance explained by the label), and EquiMod's absolute /
relative equivariance of the (monitor) head on test images. Writes ``reproduction.md``,
``reproduction.json``, ``probes.png`` and ``equivariance.png``.

    PYTHONPATH=. python experiments/reproduce_cpu.py              # all runs, 2 processes
    PYTHONPATH=. python experiments/reproduce_cpu.py --smoke      # < 1 min, a temp dir

Budget (default): 5000 training images (of the full Fashion-MNIST when Debian's
``dataset-fashion-mnist`` or ``--data-dir`` provides it, else the shipped 5000/1000 sample),
2000 test images, 4 epochs of batch 128, one torch thread per run, two runs at a time; each
run's JSON is cached in ``runs/`` of the output directory, so an interrupted command resumes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import tempfile
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

from _tinted import normalize, tinted_split
from equimod_plugin import EquiModLoss, augment, equimod_branch, steering_branch
from equimod_plugin.branch import EquivarianceBranch
from equimod_plugin.eval.datasets import fashion_mnist_source
from equimod_plugin.eval.probes import eta_squared, extract_features, knn_accuracy, linear_probe
from equimod_plugin.quickstart import BYOL, convnet
from equimod_plugin.terms import Monitor

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "reproduction"
DATASETS = {"fmnist": 0, "tint8": 8, "tint24": 24}  # number of hues (0: grey)
METHODS = ("simclr", "simclr+equimod", "byol", "byol+equimod", "byol+steering")
RUNS = tuple((d, m) for d in DATASETS for m in METHODS if m != "byol+steering" or d == "tint8")
RANDOM_INIT = "random-init"  # the BYOL model and its monitor head, evaluated untrained


@dataclass(frozen=True)
class Config:
    train_images: int = 5_000
    test_images: int = 2_000
    epochs: int = 4
    batch_size: int = 128
    lr: float = 0.06
    knn_k: int = 20
    equimod_weight: float = 1.0
    seed: int = 0
    momentum_base: float = 0.996
    momentum_per_step: bool = False
    processes: int = 2
    shipped_sample: bool = False


SMOKE = Config(train_images=256, test_images=128, epochs=1, batch_size=64, shipped_sample=True)


# data


def load_split(split: str, num_hues: int, n: int, config: Config) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` random images of a split as RGB (n, 3, 32, 32) in [0, 1], class and hue labels.

    The same images and hue labels for every run (seeded by the split); ``num_hues = 0``: grey.
    """
    sample = True if config.shipped_sample else None
    return tinted_split(split, n, num_hues, 0 if split == "train" else 1, sample=sample)


# models


class SimCLR(nn.Module):
    def __init__(self, backbone: nn.Module, dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(dim, 256, 64)

    def forward(self, x: Tensor) -> Tensor:
        return self.projection_head(self.backbone(x).flatten(1))


def build(method: str, equimod_weight: float = 1.0) -> tuple[nn.Module, EquivarianceBranch]:
    """The model and its branch; the baselines' term is a :class:`~equimod_plugin.terms.Monitor`."""
    base, _, extra = method.partition("+")
    base = "byol" if method == RANDOM_INIT else base
    backbone = convnet()
    model = BYOL(backbone, dim=32) if base == "byol" else SimCLR(backbone, dim=32)
    views = augment.byol_views(32, variant="cifar") if base == "byol" else augment.simclr(32, variant="cifar")
    if extra == "steering":
        branch = steering_branch(backbone, views)
    else:
        loss = EquiModLoss(temperature=0.2)
        branch = equimod_branch(backbone, views, weight=equimod_weight, hidden_dim=512, loss=loss)
        if not extra:
            branch.term = Monitor(branch.term)
    model.equivariance = branch  # registers the term's parameters with the model
    return model, branch


def invariance_loss(model: nn.Module, x0: Tensor, x1: Tensor, criterion: nn.Module) -> Tensor:
    if isinstance(model, BYOL):
        p0, p1 = model(x0), model(x1)
        z0, z1 = model.forward_momentum(x0), model.forward_momentum(x1)
        return 0.5 * (criterion(p0, z1) + criterion(p1, z0))
    return criterion(model(x0), model(x1))


def train(method: str, images: Tensor, config: Config) -> tuple[nn.Module, list[dict[str, float]]]:
    torch.manual_seed(config.seed)
    model, branch = build(method, config.equimod_weight)
    is_byol = isinstance(model, BYOL)
    criterion = NegativeCosineSimilarity() if is_byol else NTXentLoss(temperature=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, weight_decay=5e-4)
    loader = torch.utils.data.DataLoader(images, batch_size=config.batch_size, shuffle=True, drop_last=True)
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
                sums[key] = sums.get(key, 0.0) + value
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
            metrics.append(branch.metrics())
    return {key: float(np.mean([m[key] for m in metrics])) for key in metrics[0]}


def evaluate(model: nn.Module, data: dict[str, Any], config: Config) -> dict[str, Any]:
    model.eval()
    (train_x, train_y, train_h), (test_x, test_y, test_h) = data["train"], data["test"]
    out: dict[str, Any] = {"equivariance": held_out_equivariance(model, test_x)}
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


def run_one(job: tuple[str, str, Config, str]) -> dict[str, Any]:
    """Train and evaluate one (dataset, method); cached as JSON in ``runs/``."""
    dataset, method, config, out = job
    path = Path(out) / "runs" / f"{dataset}_{method.replace('+', '_')}.json"
    if path.exists():
        return json.loads(path.read_text())
    torch.set_num_threads(1)
    num_hues = DATASETS[dataset]
    data = {
        "train": load_split("train", num_hues, config.train_images, config),
        "test": load_split("test", num_hues, config.test_images, config),
        "num_hues": num_hues,
    }
    start = time.perf_counter()
    model, log = train(method, data["train"][0], config)
    minutes = (time.perf_counter() - start) / 60
    result = {
        "dataset": dataset,
        "method": method,
        "train_minutes": minutes,
        "load_average": os.getloadavg()[0],
        "training": log,
        **evaluate(model, data, config),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"  {dataset:7s} {method:15s} {minutes:5.1f} min  {summary(result)}", flush=True)
    return result


def summary(result: dict[str, Any]) -> str:
    keys = ["backbone/object/linear", "backbone/hue/knn", "backbone/hue/linear"]
    return ", ".join(f"{k} {result[k]:.3f}" for k in keys if k in result)


# report

COLUMNS = {
    "object, linear": "backbone/object/linear",
    "object, kNN": "backbone/object/knn",
    "hue, linear": "backbone/hue/linear",
    "hue, kNN": "backbone/hue/knn",
    "hue eta2": "backbone/hue/eta2",
    "hue, linear (proj.)": "projector/hue/linear",
    "hue, kNN (proj.)": "projector/hue/knn",
    "hue eta2 (proj.)": "projector/hue/eta2",
    "object eta2": "backbone/object/eta2",
}
EQUIVARIANCE = {"abs. equiv.": "absolute", "rel. equiv.": "relative", "cos steered": "cos_steered"}


def cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def markdown(report: dict[str, Any]) -> str:
    results, config = report["results"], report["config"]
    header = ["dataset", "method", *COLUMNS, *EQUIVARIANCE, "train min"]
    lines = [
        "# CPU-scale reproduction: invariance vs + EquiMod (Fashion-MNIST, tinted Fashion-MNIST)",
        "",
        f"Made by `experiments/reproduce_cpu.py`. {report['hardware']}.",
        "",
        "| " + " | ".join(header) + " |",
        "|---|---|" + "---:|" * (len(header) - 2),
    ]
    for r in results:
        values = [r.get(key) for key in COLUMNS.values()]
        values += [r["equivariance"].get(key) for key in EQUIVARIANCE.values()]
        lines.append(
            f"| {r['dataset']} | {r['method']} | "
            + " | ".join(cell(v) for v in values)
            + f" | {r['train_minutes']:.1f} |"
        )
    lines += [
        "",
        f"Accuracies in [0, 1] on {config['test_images']} held-out images; linear: L-BFGS probe on standardised "
        f"frozen features; kNN: k = {config['knn_k']}, cosine, temperature 0.07; eta2: share of the features' "
        "variance explained by the label. Backbone: the convnet's pooled features (D = 32); proj.: the projector "
        "output (64). abs./rel. equiv.: EquiMod's absolute and relative equivariance of the equivariance head on "
        "test views (baselines: a monitor head trained on detached features); cos steered: cos(M(a) e(x), e(a(x))) "
        "of the steering run. tint8: 8 hues 45 degrees apart; tint24: 24 hues 15 degrees apart.",
    ]
    lines += ["", *goals(results)]
    return "\n".join(lines) + "\n"


def goals(results: list[dict[str, Any]]) -> list[str]:
    """The issue's goals, each as the measured difference against its invariant baseline."""
    by = {(r["dataset"], r["method"]): r for r in results}
    lines = ["| goal | base | measured (+EquiMod minus baseline) | met |", "|---|---|---:|---|"]
    checks = [
        ("object probe no more than 1 point below", "backbone/object/linear", -0.01, ("fmnist", "tint8", "tint24")),
        ("kNN hue accuracy >= +20 points", "backbone/hue/knn", 0.20, ("tint8",)),
        ("linear hue probe >= +10 points", "backbone/hue/linear", 0.10, ("tint24",)),
    ]
    for text, key, threshold, datasets in checks:
        for dataset in datasets:
            for base in ("simclr", "byol"):
                a, b = by.get((dataset, base)), by.get((dataset, f"{base}+equimod"))
                if a is None or b is None or key not in a:
                    continue
                delta = b[key] - a[key]
                lines.append(
                    f"| {dataset}: {text} | {base} | {100 * delta:+.1f} | {'yes' if delta >= threshold else 'no'} |"
                )
    return lines


def figures(report: dict[str, Any], out: Path) -> None:
    results = report["results"]
    datasets = [d for d in DATASETS if any(r["dataset"] == d for r in results)]
    metrics = {
        "object, linear": "backbone/object/linear",
        "hue, linear": "backbone/hue/linear",
        "hue, kNN": "backbone/hue/knn",
    }
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        runs = [r for r in results if r["dataset"] == dataset]
        x = np.arange(len(metrics))
        width = 0.8 / len(runs)
        for i, r in enumerate(runs):
            ax.bar(
                x + (i - (len(runs) - 1) / 2) * width,
                [r.get(k, np.nan) for k in metrics.values()],
                width,
                label=r["method"],
            )
        ax.set_xticks(x, list(metrics))
        ax.set_ylim(0, 1)
        ax.set_title(f"{dataset}: backbone features, held-out accuracy", fontsize=10)
    counts = [sum(r["dataset"] == d for r in results) for d in datasets]
    handles, labels = axes[0][counts.index(max(counts))].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(out / "probes.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.6), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for r in results:
            if r["dataset"] == dataset and r["training"] and "term_relative" in r["training"][0]:
                epochs = [e["epoch"] + 1 for e in r["training"]]
                ax.plot(epochs, [e["term_relative"] for e in r["training"]], marker="o", label=r["method"])
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("relative equivariance (training views)")
        ax.set_title(dataset, fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "equivariance.png", dpi=110)
    plt.close(fig)


def hardware(report: dict[str, Any], config: Config, source: str) -> str:
    runs = report["results"]
    return (
        f"CPU ({platform.machine()}, {os.cpu_count()} cores, shared), 1 torch thread per run, {config.processes} runs "
        f"at a time, torch {torch.__version__}; {config.train_images} train / {config.test_images} test images "
        f"({source}), {config.epochs} epochs of batch {config.batch_size}, seed {config.seed}, EquiMod weight "
        f"{config.equimod_weight:g}; "
        f"{len(runs)} runs, {sum(r['train_minutes'] for r in runs):.0f} min of training in all "
        f"(load average {np.mean([r['load_average'] for r in runs]):.1f} at run ends)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help=f"output directory (default {DEFAULT_OUT}; smoke: a temp dir)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--train-images", type=int)
    parser.add_argument("--processes", type=int)
    parser.add_argument("--equimod-weight", type=float, help="weight of the EquiMod term (default 1, the paper's)")
    parser.add_argument("--only", nargs="*", help=f"runs to do, e.g. tint8/byol tint8/byol+equimod tint8/{RANDOM_INIT}")
    parser.add_argument("--seed", type=int, help="seed of the weights and the views (default 0)")
    parser.add_argument("--lr", type=float, help="SGD learning rate (default 0.06)")
    parser.add_argument("--momentum-base", type=float, help="BYOL target momentum at the start (default 0.996)")
    parser.add_argument(
        "--momentum-per-step", action="store_true", help="cosine momentum schedule per step, not per epoch"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI")
    args = parser.parse_args()
    config = SMOKE if args.smoke else Config()
    overrides = {
        "epochs": args.epochs,
        "train_images": args.train_images,
        "processes": args.processes,
        "equimod_weight": args.equimod_weight,
        "seed": args.seed,
        "lr": args.lr,
        "momentum_base": args.momentum_base,
        "momentum_per_step": args.momentum_per_step or None,
    }
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    out = args.out or (Path(tempfile.mkdtemp(prefix="reproduction_")) if args.smoke else DEFAULT_OUT)
    runs = [r for r in RUNS if not args.only or "/".join(r) in args.only]
    runs += [(d, RANDOM_INIT) for d in DATASETS if f"{d}/{RANDOM_INIT}" in (args.only or [])]
    source = fashion_mnist_source("train", sample=True if config.shipped_sample else None)
    print(f"data: {source}; {len(runs)} runs, {config.processes} at a time")
    jobs = [(d, m, config, str(out)) for d, m in runs]
    with multiprocessing.get_context("spawn").Pool(config.processes) as pool:
        results = pool.map(run_one, jobs, chunksize=1)
    report: dict[str, Any] = {"config": asdict(config), "results": results}
    report["hardware"] = hardware(report, config, source)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reproduction.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "reproduction.md").write_text(markdown(report))
    figures(report, out)
    print(markdown(report))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
