"""Per-augmentation equivariance report of the quickstart's BYOL + EquiMod model.

Trains the quickstart's model (lightly BYOL, 6-layer 32-wide convnet at 32 px, D = 32, EquiMod
term through an ``equimod_branch`` on ``augment.byol_views(32, variant="cifar")``) on the
Fashion-MNIST sample shipped with the package, each item tinted with one of 8 hues 45 degrees
apart (grey images would make saturation, hue and grayscale no-ops), or loads it from
``--checkpoint``. Then fits a post-hoc steering operator on the frozen encoder's standardised
features, and runs ``equimod_plugin.eval.report.augmentation_report`` on held-out test images: one
augmentation knob at a time around the identity (BYOL view 2's knobs: crop scale and position,
flip, brightness, contrast, saturation, hue, grayscale, blur sigma, solarise), how far the
backbone features move, and how much of the move EquiMod's head and the steering operator
predict. Writes ``report.md``, ``report.json`` and ``report.png``.

Needs ``pip install "equimod-plugin[experiments]"`` (lightly, matplotlib). From the repository
root::

    python experiments/augmentation_report.py              # ~5 min, 1 CPU thread
    python experiments/augmentation_report.py --epochs 0   # random init
    python experiments/augmentation_report.py --checkpoint model.pt  # load or save
    python experiments/augmentation_report.py --smoke      # < 1 min, temp dir
    python experiments/augmentation_report.py --out docs/results/augmentation_report  # committed

Outputs go to ``--out`` (default: a new folder ``runs/augmentation_report-<time>`` under the
working directory; with ``--smoke``, a new temporary directory); the committed results in
``docs/results/augmentation_report`` are re-made only with the explicit ``--out`` above. The
model trains on ``--device`` (default ``cuda`` when available, else ``cpu``, where the
committed results were made); the steering fit and the report run on the CPU. ``--seed``
(default 0) fixes the images, the weights, the views and the steering fit.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from _cli import output_dir, torch_device
from equimod_plugin import SteeringOperator, augment, equimod_branch
from equimod_plugin.eval.datasets import fashion_mnist_source
from equimod_plugin.eval.probes import extract_features
from equimod_plugin.eval.report import AugmentationReport, augmentation_report
from equimod_plugin.wrap import EquivarianceBranch

try:  # the `experiments` extra, required by main() after the command line: --help works without it
    import matplotlib.pyplot as plt

    from _tinted import fit_operator, normalize, tinted_split, train_byol
    from equimod_plugin.quickstart import BYOL, convnet
except ImportError as error:
    MISSING: ImportError | None = error
else:
    MISSING = None


@dataclass(frozen=True)
class Config:
    train_images: int = 5_000
    test_images: int = 512
    epochs: int = 3
    batch_size: int = 128
    num_hues: int = 8
    steps: int = 9  # grid points per continuous knob
    fit_epochs: int = 20  # post-hoc steering operator
    seed: int = 0
    threads: int = 1


SMOKE = Config(train_images=256, test_images=32, epochs=1, batch_size=64, steps=3, fit_epochs=1)


def load_split(split: str, n: int, config: Config, seed: int) -> Tensor:
    """``n`` random images of the shipped sample's split, tinted, (n, 3, 32, 32) in [0, 1]."""
    return tinted_split(split, n, config.num_hues, seed, sample=True)[0]


def build(config: Config) -> tuple[BYOL, EquivarianceBranch]:
    torch.manual_seed(config.seed)
    model = BYOL(convnet(), dim=32)
    branch = equimod_branch(model.backbone, augment.byol_views(32, variant="cifar"), hidden_dim=512)
    model.equivariance = branch  # registers the head's parameters with the model
    return model, branch


def train(
    model: BYOL, branch: EquivarianceBranch, images: Tensor, config: Config, device: torch.device
) -> list[dict[str, float]]:
    """BYOL + EquiMod as in the quickstart, on ``device``; the seed fixes the order and the views.
    The model ends on the CPU, where the steering fit and the report run."""
    torch.manual_seed(config.seed)
    model.to(device)
    log = train_byol(model, branch, images.to(device), config.epochs, config.batch_size, "equimod_")
    model.cpu()
    return log


def standardizer(features: Tensor) -> nn.BatchNorm1d:
    """``BatchNorm1d(affine=False)`` in eval mode holding the features' mean and variance."""
    bn = nn.BatchNorm1d(features.shape[1], affine=False)
    bn.running_mean.copy_(features.mean(0))
    bn.running_var.copy_(features.var(0))
    return bn.eval()


def fit_steering(backbone: nn.Module, images: Tensor, config: Config) -> tuple[SteeringOperator, nn.BatchNorm1d]:
    """Post-hoc operator on the frozen encoder's standardised features of training images and one
    view each of BYOL's two augmentations; Adam on the steering term's cosine loss."""
    generator = torch.Generator().manual_seed(config.seed + 1)
    f_o = extract_features(backbone, images, 512, transform=normalize)
    embed = standardizer(f_o)
    originals, targets, params = [], [], []
    for aug in augment.byol_views(32, variant="cifar"):
        views, p = aug(images, generator=generator)
        originals.append(f_o)
        targets.append(extract_features(backbone, views, 512, transform=normalize))
        params.append(p)
    with torch.no_grad():
        e_o, e_a = embed(torch.cat(originals)), embed(torch.cat(targets))
    identity = augment.byol(32, view=1, variant="cifar").identity_params(1)[0]
    operator = fit_operator(e_o, e_a, torch.cat(params), identity, config.fit_epochs, config.seed)
    return operator, embed


# output


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


COLUMNS = """\
Columns (per knob value, means over the held-out images; `f` the backbone features, `x_o` the
image, `a(x)` its view with only this knob changed, `d = 1 - cos`):

- `1 - cos(f_o, f_a)`: `mean d(f(x_o), f(a(x)))`; `rel. L2`: `sqrt(sum |f(a(x)) - f(x_o)|^2 /
  sum |f(x_o)|^2)`. How far the backbone features move.
- head: EquiMod's head in its projection space `y = g'(f)`: `cos(pred, a)` = `1 - mean d(u(y_o,
  a), y_a)`, `cos(o, a)` = `1 - mean d(y_o, y_a)`, `explained` = `1 - mean d(u(y_o, a), y_a) /
  mean d(y_o, y_a)` (1 perfect, 0 no better than predicting no move, negative worse; `-` when
  nothing moved).
- steering: the same for the post-hoc steering operator in the standardised feature space
  `e = (f - mean) / std` (training features' statistics): `M(a) e(x_o)` against `e(a(x))`.
- summary `explained`: pooled over the knob's values, `1 - sum d_pred / sum d_orig`.
"""


def markdown(report: dict[str, Any], result: AugmentationReport) -> str:
    c, m = report["config"], report["machine"]
    minutes = report["minutes"]
    trained = (
        f"loaded from `{report['checkpoint']}`"
        if report.get("loaded")
        else f"{c['epochs']} epochs of batch {c['batch_size']} in {minutes['train']:.1f} min"
    )
    return "\n".join(
        [
            "# Per-augmentation equivariance report (BYOL + EquiMod, tinted Fashion-MNIST)",
            "",
            "Made by `experiments/augmentation_report.py`"
            + (" (`--smoke`)" if report["smoke"] else "")
            + f". Model: quickstart BYOL, 6-layer 32-wide convnet at 32 px (D = {result.feature_dim}), "
            f"EquiMod term (head hidden 512), {c['train_images']} training images of the shipped Fashion-MNIST "
            f"sample tinted with {c['num_hues']} hues, {trained}; post-hoc low-rank steering operator "
            f"({c['fit_epochs']} epochs on standardised features). Report on {result.num_images} held-out "
            f'test images, knobs of `augment.byol(32, view=2, variant="cifar")`, {c["steps"]} grid points per '
            f"continuous knob. Machine: {m['cpu']}, {m['cpu_count']} cores (shared), {m['torch_threads']} torch "
            f"thread(s), training on {m['device']}, torch {m['torch']}, "
            f"load average {m['load_average_1min']:.1f} at start, "
            f"{m['date'][:10]}; wall time {minutes['total']:.1f} min in all (report {minutes['report']:.1f} min), "
            f"{minutes['total_cpu']:.1f} min of CPU time.",
            "",
            "## Summary per knob",
            "",
            result.to_markdown(summary=True),
            COLUMNS,
            "## Every value",
            "",
            result.to_markdown(),
        ]
    )


def positive(values: list[float | None]) -> list[float]:
    """NaN where a distance is missing or 0 (the identity), for a log axis."""
    return [v if v is not None and v > 0 else math.nan for v in values]


def figure(result: AugmentationReport, path: Path) -> None:
    """One panel per knob, log axis: the move ``1 - cos`` of the backbone features and, per
    predictor, the move in its space (solid) and its prediction's error (dashed)."""
    groups = result.by_sweep()
    cols = 4
    rows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    panels = list(axes.flat)
    styles = {
        "backbone move 1 - cos(f_o, f_a)": ("k", "-", lambda r: r.move_cos),
        "head: move 1 - cos(y_o, y_a)": ("tab:blue", "-", lambda r: 1 - r.head_cos_orig),
        "head: error 1 - cos(u(y_o, a), y_a)": ("tab:blue", "--", lambda r: 1 - r.head_cos_pred),
        "steering: move 1 - cos(e_o, e_a)": ("tab:orange", "-", lambda r: 1 - r.steer_cos_orig),
        "steering: error 1 - cos(M(a) e_o, e_a)": ("tab:orange", "--", lambda r: 1 - r.steer_cos_pred),
    }
    for ax, (name, group) in zip(panels[: len(groups)], groups.items(), strict=True):
        x = [r.value for r in group]
        for label, (colour, style, value) in styles.items():
            style = style if len(group) > 2 else "none"  # 0 / 1 knobs: no line between them
            ax.plot(x, positive([value(r) for r in group]), color=colour, ls=style, marker="o", ms=3, label=label)
        ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(group[0].unit, fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in panels[len(groups) :]:
        ax.axis("off")
    handles, labels = panels[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower right", fontsize=8)
    fig.suptitle(
        "Cosine distance vs knob value (log): how far each knob moves the embedding (solid) and how far the "
        "prediction is from the view (dashed); a predictor helps where dashed < solid",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        help="output directory (default: a new folder runs/augmentation_report-<time> under the working directory; "
        "with --smoke, a new temporary directory; the committed results: --out docs/results/augmentation_report)",
    )
    parser.add_argument(
        "--epochs", type=int, help=f"training epochs (default {Config.epochs}, smoke {SMOKE.epochs}; 0: random init)"
    )
    parser.add_argument("--checkpoint", type=Path, help="load the model from here if it exists, else save it here")
    parser.add_argument(
        "--device",
        type=torch_device,
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="where the model trains; the steering fit and the report run on the CPU (default: cuda if available, "
        "else cpu)",
    )
    parser.add_argument(
        "--seed", type=int, default=Config.seed, help="seeds the images, weights, views and steering fit (default: 0)"
    )
    parser.add_argument("--threads", type=int, help=f"torch threads (default {Config.threads})")
    parser.add_argument("--smoke", action="store_true", help="tiny run for tests (< 1 min, a temporary directory)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if MISSING is not None:
        name = MISSING.name or getattr(MISSING.__cause__, "name", None) or MISSING
        sys.exit(f"augmentation_report.py needs {name}: pip install 'equimod-plugin[experiments]'")
    config = SMOKE if args.smoke else Config()
    overrides = {"epochs": args.epochs, "threads": args.threads, "seed": args.seed}
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    out = output_dir(args.out, args.smoke, "augmentation_report")
    print(f"device: {args.device}, seed: {config.seed}; writing to {out}")
    torch.set_num_threads(config.threads)
    info = {**machine(), "device": str(args.device)}

    start, cpu_start = time.perf_counter(), time.process_time()
    train_images = load_split("train", config.train_images, config, config.seed)
    test_images = load_split("test", config.test_images, config, config.seed + 1)
    print(f"data: {fashion_mnist_source('train', sample=True)}, {len(train_images)} train, {len(test_images)} test")
    model, branch = build(config)
    loaded = args.checkpoint is not None and args.checkpoint.exists()
    log: list[dict[str, float]] = []
    if loaded:
        model.load_state_dict(torch.load(args.checkpoint, map_location="cpu"))
        print(f"loaded {args.checkpoint}")
    else:
        print(f"training BYOL + EquiMod for {config.epochs} epochs")
        log = train(model, branch, train_images, config, args.device)
        if args.checkpoint is not None:
            args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), args.checkpoint)
    train_minutes = (time.perf_counter() - start) / 60
    operator, embed = fit_steering(model.backbone, train_images, config)
    t0 = time.perf_counter()
    result = augmentation_report(
        model.backbone,
        augment.byol(32, view=2, variant="cifar"),
        test_images,
        normalize=normalize,
        head=branch.term.head,
        steering=operator,
        embed=embed,
        steps=config.steps,
    )
    minutes = {
        "train": train_minutes,
        "report": (time.perf_counter() - t0) / 60,
        "total": (time.perf_counter() - start) / 60,
        "total_cpu": (time.process_time() - cpu_start) / 60,
    }
    report = {
        "config": asdict(config),
        "smoke": args.smoke,
        "loaded": loaded,
        "checkpoint": str(args.checkpoint) if args.checkpoint else None,
        "data": fashion_mnist_source("train", sample=True),
        "machine": info,
        "minutes": minutes,
        "training": log,
        "report": result.to_dict(),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown(report, result))
    figure(result, out / "report.png")
    print(result.to_markdown(summary=True))
    print(f"wrote {out} ({minutes['total']:.1f} min)")


if __name__ == "__main__":
    main()
