"""Steering term vs invariant baseline on tinted Fashion-MNIST: steerability, probes, robustness, OOD.

Two BYOL runs (the quickstart's model: 6-layer 32-wide convnet at 32 px, D = 32) with the same
seed, data, epochs and views (``augment.byol(32, view=1/2, variant="cifar")`` through a
``steering_branch``, so both runs use the same batched backbone pass over originals and
views and draw the same augmentations): the baseline gives the steering term weight 0 (pure
BYOL, invariant), the steered run weight 1 (``0.5 * (BYOL) + branch.loss()``). Fashion-MNIST
items are tinted with one of 8 hues 45 degrees apart (a second, colour-only label); BYOL's
hue jitter (+-36 degrees) and grayscale push an invariant model to drop the hue.

The steering term standardises the backbone features (``e = term.embed(f)``, a BatchNorm
without affine parameters) and steers ``e``; the baseline's term runs at weight 0, so it has the
same standardisation statistics and both runs are evaluated in their own ``e``. Each run's
steering operators, all ``SteeringOperator(32, 18, "low_rank", rank=16)``:

- **post hoc**: fitted after training, with the encoder frozen, on eval-mode embeddings of
  training images and their views (same procedure for both runs); the baseline's only one.
- **joint**: the steered run's operator trained with the encoder (the baseline's gets no
  gradient at weight 0 and is not reported).

Reported per run, on held-out test images: (a) mean ``cos(M(a) e(x), e(a(x)))`` against the
unsteered ``cos(e(x), e(a(x)))``, and ``cos(e(x), e(x'))`` of two different images (and of raw
features: ReLU-then-pooling features are non-negative, so a component shared by all images
pushes raw cosines towards 1); (b) linear-probe accuracy of the class and of the hue (probe
fitted on clean training features f); (c) the class probe's accuracy on corrupted test sets
(``imagecorruptions``, ImageNet-C parameters applied at 32 px: harsh, so severities 1-2);
(d) OOD-detection ROC AUC, clean test (negatives) vs each corrupted set (positives), of the
steered-TTA dispersion (K = 16 steered embeddings) and of a non-TTA score (cosine distance to
the nearest training embedding). Writes ``steering_eval.md``, ``steering_eval.json`` and
``steering_eval.png``.

    pip install "equimod-plugin[experiments]"   # lightly, imagecorruptions-imaug, matplotlib
    python experiments/steering_eval.py           # 18-40 min on 2 shared CPU cores
    python experiments/steering_eval.py --smoke   # < 1 min, writes to a temp dir
    python experiments/steering_eval.py --out docs/results/steering_eval   # the committed run

Outputs go to ``--out`` (default: a new folder ``runs/steering_eval-<time>`` under the working
directory; with ``--smoke``, a new temporary directory); the committed results in
``docs/results/steering_eval`` are re-made only with the explicit ``--out`` above. Both runs
train on ``--device`` (default ``cuda`` when available, else ``cpu``, where the committed
results were made); the evaluation runs on the CPU. ``--seed`` (default 0) fixes the images,
the weights, the views, the corruptions and the steering fits.

Budget (full): 5000 random training images (of the complete Fashion-MNIST from Debian's
``dataset-fashion-mnist``, else all of the shipped 5000/1000 sample), 2000 test images, 6 epochs
of batch 128 per run, one torch thread. About 18 min in all on 2 cores with load average ~2;
the committed run (docs/results/steering_eval) took 50 min at load average 4-8, which changes
the time, not the numbers (the run is deterministic).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from equimod_plugin import SteeringOperator, SteeringTerm, augment, steering_branch
from equimod_plugin.augment import ParamAugment
from equimod_plugin.eval.datasets import fashion_mnist_source
from equimod_plugin.eval.probes import extract_features, linear_probe, roc_auc
from equimod_plugin.tta import SteeredTTA, tta_params
from equimod_plugin.wrap import EquivarianceBranch

try:  # the `experiments` extra, required by main() after the command line: --help works without it
    import matplotlib.pyplot as plt
    from imagecorruptions import corrupt

    from _tinted import fit_operator, normalize, tinted_split, train_byol
    from equimod_plugin.quickstart import BYOL, convnet
except ImportError as error:
    MISSING: ImportError | None = error
else:
    MISSING = None
MODELS = ("baseline", "steered")
LABELS = {"baseline": "BYOL (invariant)", "steered": "BYOL + steering"}


@dataclass(frozen=True)
class Config:
    train_images: int = 5_000
    test_images: int = 2_000
    epochs: int = 6
    batch_size: int = 128
    num_hues: int = 8
    corruptions: tuple[str, ...] = ("gaussian_noise", "motion_blur", "contrast", "brightness", "fog")
    severities: tuple[int, ...] = (1, 2)
    tta_k: int = 16
    fit_rounds: int = 1  # views per training image (per augmentation) for the post-hoc fit
    fit_epochs: int = 20
    seed: int = 0
    threads: int = 1  # on 2 shared cores, 2 threads ran 2-3x slower (contention)
    shipped_sample: bool = False  # True: the 5000/1000 sample shipped with the package


SMOKE = Config(
    train_images=128,
    test_images=64,
    epochs=1,
    batch_size=32,
    corruptions=("gaussian_noise",),
    severities=(1,),
    tta_k=8,
    fit_epochs=1,
    shipped_sample=True,
)


# data


def load_split(split: str, n: int, config: Config, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` random images of a split, tinted: images (n, 3, 32, 32), class and hue labels."""
    return tinted_split(split, n, config.num_hues, seed, sample=True if config.shipped_sample else None)


def corrupted(images: Tensor, name: str, severity: int, seed: int) -> Tensor:
    """ImageNet-C corruption ``name`` at ``severity`` of images (N, 3, H, W) in [0, 1]."""
    np.random.seed(seed)  # imagecorruptions draws from numpy's global generator
    pixels = (images.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    out = np.stack([corrupt(p, corruption_name=name, severity=severity) for p in pixels])
    return torch.from_numpy(out.astype(np.float32) / 255).permute(0, 3, 1, 2).clamp(0, 1).contiguous()


# training


def views_pair() -> tuple[ParamAugment, ParamAugment]:
    return augment.byol(32, view=1, variant="cifar"), augment.byol(32, view=2, variant="cifar")


def train(
    images: Tensor, weight: float, config: Config, device: torch.device
) -> tuple[BYOL, EquivarianceBranch, list[dict[str, float]]]:
    """BYOL with a steering branch of weight ``weight`` on ``device``; the seed fixes init, order and views.
    The model ends on the CPU, where the evaluation runs."""
    torch.manual_seed(config.seed)
    model = BYOL(convnet(), dim=32)
    branch = steering_branch(model.backbone, views_pair(), kind="low_rank", weight=weight)
    model.steering = branch  # registers the operator's parameters with the model
    model.to(device)
    log = train_byol(model, branch, images.to(device), config.epochs, config.batch_size, "steering_")
    model.cpu()
    return model, branch, log


# steering operators


def encode(backbone: nn.Module, images: Tensor) -> Tensor:
    """Eval-mode features (N, D) of images in [0, 1]."""
    return extract_features(backbone, images, batch_size=512, transform=normalize)


def view_features(
    backbone: nn.Module, images: Tensor, rounds: int, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """``rounds`` views per image with each BYOL augmentation: f(x), f(a(x)), a, each stacked."""
    f_o = encode(backbone, images)
    originals, targets, params = [], [], []
    for _ in range(rounds):
        for aug in views_pair():
            views, p = zip(*(aug(chunk, generator=generator) for chunk in images.split(512)), strict=True)
            originals.append(f_o)
            targets.append(encode(backbone, torch.cat(views)))
            params.append(torch.cat(p))
    return torch.cat(originals), torch.cat(targets), torch.cat(params)


def mean_cos(a: Tensor, b: Tensor) -> float:
    return F.cosine_similarity(a, b).mean().item()


def steering_cosines(
    operators: dict[str, SteeringOperator], e_o: Tensor, e_a: Tensor, params: Tensor, f_o: Tensor
) -> dict[str, float]:
    """cos(e(x), e(a(x))) and, per operator, cos(M(a) e(x), e(a(x))) of the embeddings ``e``.

    ``cos_between_images`` (e(x) against another image's e(x')) and its raw-feature version
    tell how much of a cosine near 1 a component shared by all images explains.
    """
    with torch.no_grad():
        out = {
            "cos_unsteered": mean_cos(e_o, e_a),
            "cos_between_images": mean_cos(e_o, e_o.roll(1, dims=0)),
            "cos_between_images_raw": mean_cos(f_o, f_o.roll(1, dims=0)),
        }
        for name, operator in operators.items():
            out[f"cos_steered_{name}"] = mean_cos(operator(e_o, params), e_a)
    return out


# scores and evaluation


def nearest_distance(train: Tensor, test: Tensor) -> Tensor:
    """Cosine distance of each test embedding to its nearest training embedding, (M,)."""
    similarity = F.normalize(test, dim=1) @ F.normalize(train, dim=1).T
    return 1 - similarity.max(dim=1).values


def ood_scores(operators: dict[str, SteeringOperator], tta: Tensor, train: Tensor, test: Tensor) -> dict[str, Tensor]:
    """Per test embedding: the steered-TTA dispersion per operator and the kNN distance."""
    with torch.no_grad():
        scores = {
            f"dispersion_{name}": SteeredTTA(nn.Identity(), operator, tta).steer(test).score
            for name, operator in operators.items()
        }
    return {**scores, "knn_distance": nearest_distance(train, test)}


def evaluate(
    backbone: nn.Module, term: SteeringTerm, joint: bool, data: dict[str, Any], config: Config
) -> dict[str, Any]:
    """All metrics of one trained backbone and its steering term (``joint``: report its operator).

    Steering, dispersion and kNN distance work on the embeddings ``e = term.embed(f)`` (its
    running statistics); the linear probes on the features ``f``.
    """
    backbone.eval()
    standardize = term.embed.eval()

    def embed(f: Tensor) -> Tensor:
        with torch.no_grad():
            return standardize(f)

    generator = torch.Generator().manual_seed(config.seed + 1)
    f_o, f_a, params = view_features(backbone, data["train"][0], config.fit_rounds, generator)
    identity = views_pair()[0].identity_params(1)[0]
    posthoc = fit_operator(embed(f_o), embed(f_a), params, identity, config.fit_epochs, config.seed)
    operators = {"posthoc": posthoc}
    if joint:
        operators["joint"] = term.operator.eval()
    f_o, f_a, params = view_features(backbone, data["test"][0], 1, torch.Generator().manual_seed(config.seed + 2))
    result: dict[str, Any] = steering_cosines(operators, embed(f_o), embed(f_a), params, f_o)
    train_f, test_f = encode(backbone, data["train"][0]), encode(backbone, data["test"][0])
    (_, train_y, train_h), (_, test_y, test_h) = data["train"], data["test"]
    result["probe_class"] = linear_probe(train_f, train_y, test_f, test_y)
    result["probe_hue"] = linear_probe(train_f, train_h, test_f, test_h)
    train_e = embed(train_f)
    clean = ood_scores(operators, data["tta_params"], train_e, embed(test_f))
    result["probe_corrupted"], result["auc"] = {}, {score: {} for score in clean}
    for key, images in data["corrupted"].items():
        features = encode(backbone, images)
        result["probe_corrupted"][key] = linear_probe(train_f, train_y, features, test_y)
        for score, values in ood_scores(operators, data["tta_params"], train_e, embed(features)).items():
            result["auc"][score][key] = roc_auc(clean[score], values)
    result["probe_corrupted_mean"] = float(np.mean(list(result["probe_corrupted"].values())))
    result["auc_mean"] = {score: float(np.mean(list(v.values()))) for score, v in result["auc"].items()}
    return result


# report


def hardware(minutes: dict[str, float], data: dict[str, Any], config: Config, device: torch.device) -> str:
    return (
        f"CPU ({platform.machine()}, {os.cpu_count()} cores, shared), {torch.get_num_threads()} torch threads, "
        f"training on {device}, torch {torch.__version__}; "
        f"{len(data['train'][1])} train / {len(data['test'][1])} test images "
        f"({data['source']}), {config.epochs} epochs x 2 runs; training {minutes['train_baseline']:.1f} + "
        f"{minutes['train_steered']:.1f} min, total {minutes['total']:.1f} min "
        f"(load average at start {data['load_average']:.1f})"
    )


COSINE_ROWS = {
    "cos(f(x), f(x')), two different images, raw features": "cos_between_images_raw",
    "cos(e(x), e(x')), two different images": "cos_between_images",
    "cos(e(x), e(a(x))), unsteered": "cos_unsteered",
    "cos(M(a) e(x), e(a(x))), post-hoc operator": "cos_steered_posthoc",
    "cos(M(a) e(x), e(a(x))), joint operator": "cos_steered_joint",
}
PROBE_ROWS = {
    "linear probe, class (clean)": "probe_class",
    "linear probe, hue (clean)": "probe_hue",
    "linear probe, class, corrupted (mean)": "probe_corrupted_mean",
}
SCORES = {
    "TTA dispersion, post-hoc M": "dispersion_posthoc",
    "TTA dispersion, joint M": "dispersion_joint",
    "kNN distance (no TTA)": "knn_distance",
}


def row(label: str, values: list[float | None]) -> str:
    return f"| {label} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in values) + " |"


def markdown(report: dict[str, Any]) -> str:
    """The summary table (means) and the per-corruption table."""
    models, config = report["models"], report["config"]
    lines = [
        "# Steering term vs invariant baseline (tinted Fashion-MNIST)",
        "",
        f"Made by `experiments/steering_eval.py`. {report['hardware']}.",
        "",
        "| metric | " + " | ".join(LABELS[m] for m in MODELS) + " |",
        "|---|" + "---:|" * len(MODELS),
    ]
    lines += [row(label, [models[m].get(key) for m in MODELS]) for label, key in COSINE_ROWS.items()]
    lines += [row(label, [models[m][key] for m in MODELS]) for label, key in PROBE_ROWS.items()]
    lines += [
        row(f"OOD AUC (mean), {label}", [models[m]["auc_mean"].get(key) for m in MODELS])
        for label, key in SCORES.items()
    ]
    keys = list(models["baseline"]["probe_corrupted"])
    lines += [
        "",
        "Held-out cosines on the test images and one view each of BYOL's two augmentations. e = the steering "
        "term's standardisation of the backbone features f (BatchNorm without affine, running statistics; the "
        "baseline's term runs at weight 0, so it has them too): the space the operators act in. Post-hoc "
        "operator: fitted after training on the frozen encoder's eval-mode embeddings (same procedure for both "
        "runs; the baseline's only operator). Joint operator: trained with the encoder (steered run only). "
        f"Hue: {config['num_hues']} tints {360 // config['num_hues']} degrees apart.",
        "",
        f"Corruptions (imagecorruptions, ImageNet-C parameters at 32 px): {', '.join(config['corruptions'])}; "
        f"severities {', '.join(map(str, config['severities']))}. OOD: clean test = negatives, each corrupted copy "
        f"of it = positives. TTA dispersion: mean cosine distance of K = {config['tta_k']} steered embeddings to their "
        "mean direction (`equimod_plugin.tta.dispersion`). kNN distance: cosine distance of e to the nearest "
        "training embedding.",
        "",
        "| corrupted set | " + " | ".join(keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    lines += [row(f"probe, {m}", [models[m]["probe_corrupted"][k] for k in keys]) for m in MODELS]
    for label, score in SCORES.items():
        lines += [
            row(f"AUC {label}, {m}", [models[m]["auc"][score][k] for k in keys])
            for m in MODELS
            if score in models[m]["auc"]
        ]
    return "\n".join(lines) + "\n"


def bar_values(report: dict[str, Any], model: str, panel: str, keys: list[str]) -> list[float]:
    """The model's values of ``keys`` (NaN where missing); OOD panels read the mean AUCs."""
    source = report["models"][model]
    if panel.startswith("OOD"):
        source = source["auc_mean"]
    return [np.nan if source.get(key) is None else source[key] for key in keys]


def figure(report: dict[str, Any], path: Path) -> None:
    """Bars per model: steerability cosines, probe accuracies, mean OOD AUCs."""
    panels = {
        "held-out cosines of embeddings e": {
            "e(x), e(x')": "cos_between_images",
            "e(x), e(a(x))": "cos_unsteered",
            "M(a) e(x), e(a(x))\npost-hoc M": "cos_steered_posthoc",
            "M(a) e(x), e(a(x))\njoint M": "cos_steered_joint",
        },
        "linear probe accuracy": {
            "class": "probe_class",
            "hue": "probe_hue",
            "class, corrupted": "probe_corrupted_mean",
        },
        "OOD AUC, clean vs corrupted (mean)": {
            "TTA disp.\npost-hoc M": "dispersion_posthoc",
            "TTA disp.\njoint M": "dispersion_joint",
            "kNN\ndistance": "knn_distance",
        },
    }
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), width_ratios=(4, 3, 5))
    for ax, (panel, metrics) in zip(axes, panels.items(), strict=True):
        x = np.arange(len(metrics))
        for i, m in enumerate(MODELS):
            ax.bar(x + (i - 0.5) * 0.38, bar_values(report, m, panel, list(metrics.values())), 0.38, label=LABELS[m])
        ax.set_xticks(x, list(metrics), fontsize=8)
        ax.set_title(panel, fontsize=10)
        ax.set_ylim(0, 1)
        if panel.startswith("OOD"):
            ax.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance")
            ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "steering_eval.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "steering_eval.md").write_text(markdown(report))
    figure(report, out / "steering_eval.png")


def prepare(config: Config) -> dict[str, Any]:
    """Tinted train/test sets, corrupted test sets and the TTA parameters shared by both runs."""
    train = load_split("train", config.train_images, config, config.seed)
    test = load_split("test", config.test_images, config, config.seed + 1)
    keys = [(name, s) for name in config.corruptions for s in config.severities]
    return {
        "train": train,
        "test": test,
        "corrupted": {f"{n}/{s}": corrupted(test[0], n, s, config.seed + i) for i, (n, s) in enumerate(keys)},
        "tta_params": tta_params(
            views_pair()[0], config.tta_k, (32, 32), torch.Generator().manual_seed(config.seed + 3)
        ),
        "source": fashion_mnist_source("train", sample=True if config.shipped_sample else None),
        "load_average": os.getloadavg()[0],
    }


def output_dir(out: Path | None, smoke: bool) -> Path:
    """``--out``; else a new temporary directory for ``--smoke``; else a new folder
    ``runs/steering_eval-<YYYYmmdd-HHMMSS>`` under the working directory (created when written).
    Never ``docs/results``: the committed results are re-made with ``--out``."""
    if out is not None:
        return out
    if smoke:
        return Path(tempfile.mkdtemp(prefix="steering_eval_"))
    return Path.cwd() / "runs" / f"steering_eval-{time.strftime('%Y%m%d-%H%M%S')}"


def torch_device(name: str) -> torch.device:
    """The type of ``--device``: a bad name is an error of the option, not a traceback."""
    try:
        return torch.device(name)
    except RuntimeError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        help="output directory (default: a new folder runs/steering_eval-<time> under the working directory; "
        "with --smoke, a new temporary directory; the committed results: --out docs/results/steering_eval)",
    )
    parser.add_argument(
        "--epochs", type=int, help=f"training epochs per run (default {Config.epochs}, smoke {SMOKE.epochs})"
    )
    parser.add_argument(
        "--train-images",
        type=int,
        help=f"training images (default {Config.train_images}, smoke {SMOKE.train_images})",
    )
    parser.add_argument(
        "--device",
        type=torch_device,
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="where both runs train; the evaluation runs on the CPU (default: cuda if available, else cpu)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=Config.seed,
        help="seeds the images, weights, views, corruptions and steering fits (default: 0)",
    )
    parser.add_argument("--threads", type=int, help=f"torch threads (default {Config.threads})")
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI (< 1 min, a temporary directory)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if MISSING is not None:
        name = MISSING.name or getattr(MISSING.__cause__, "name", None) or MISSING
        sys.exit(f"steering_eval.py needs {name}: pip install 'equimod-plugin[experiments]'")
    config = SMOKE if args.smoke else Config()
    overrides = {"epochs": args.epochs, "train_images": args.train_images, "threads": args.threads, "seed": args.seed}
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    out = output_dir(args.out, args.smoke)
    print(f"device: {args.device}, seed: {config.seed}; writing to {out}")
    torch.set_num_threads(config.threads)

    start = time.perf_counter()
    data = prepare(config)
    sizes = f"{len(data['train'][1])} train, {len(data['test'][1])} test, {len(data['corrupted'])} corrupted sets"
    print(f"data: {data['source']}, {sizes}")
    report: dict[str, Any] = {"config": asdict(config), "models": {}, "training": {}}
    minutes: dict[str, float] = {}
    for name, weight in zip(MODELS, (0.0, 1.0), strict=True):
        print(f"training {name} (steering weight {weight})")
        t0 = time.perf_counter()
        model, branch, log = train(data["train"][0], weight, config, args.device)
        minutes[f"train_{name}"] = (time.perf_counter() - t0) / 60
        report["training"][name] = log
        report["models"][name] = evaluate(model.backbone, branch.term, weight > 0, data, config)
    minutes["total"] = (time.perf_counter() - start) / 60
    report["minutes"] = minutes
    report["device"] = str(args.device)
    report["hardware"] = hardware(minutes, data, config, args.device)
    write(report, out)
    print(markdown(report))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
