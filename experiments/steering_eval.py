"""Steering at CPU scale: steered cosines, robustness and OOD detection of reproduce_cpu's runs.

Evaluates the runs of ``experiments/reproduce_cpu.py`` (its ``runs/*.json`` and their weights,
``.pt``) on one dataset, seeded and anchored like the reproduction: the random-init encoder,
BYOL, BYOL + EquiMod (weight 1), BYOL with each steering variant of
``reproduce_cpu.STEERING`` (the regression loss on standardised features, the contrastive
loss, the contrastive loss in a steering projector, the contrastive loss at weight 3), SimCLR
and SimCLR with the contrastive steering term, 3 seeds each, mean +- sd; the goals compare a
steering row with its own invariance method. Per run, on held-out images:

- **steered cosine**: mean ``cos(M(a) e(x), e(a(x)))`` of test images and one view each of the
  run's two augmentations, against the unsteered ``cos(e(x), e(a(x)))``, for the jointly trained
  operator (steering runs; ``e = term.embed(f)``, the space it was trained in) and for a
  post-hoc operator fitted on the frozen encoder (every run; ``e`` = the backbone features
  standardised with the training features' mean and sd; Adam, 20 epochs);
- **corrupted-set probe**: the object label's linear probe (fit on clean training embeddings)
  on corrupted test images (``imagecorruptions``, ImageNet-C parameters at 32 px), for the plain
  embedding ``e`` and for the steered-TTA mean embedding (mean of K = 16 steered embeddings);
- **OOD AUC**, clean test images (negatives) against each corrupted copy (positives), of four
  scores: the TTA dispersion (``equimod_plugin.tta.dispersion``), the cosine distance of ``e``
  to its nearest training embedding (kNN, no TTA), the same distance for the TTA mean
  embedding, and the steering residual ``1 - cos(M(a) e(x), e(a(x)))`` of one random view.

The TTA operator is the joint one where the run has one, else the post-hoc one. The object and
hue probes on clean images come from reproduce_cpu's JSON. Writes ``steering_eval.md`` and
``steering_eval.json``.

    pip install "equimod-plugin[experiments]"   # lightly, imagecorruptions-imaug, matplotlib
    python experiments/reproduce_cpu.py --out runs/grid --only tint24/random-init tint24/byol \
        tint24/byol+equimod tint24/byol+steering tint24/byol+steering-nce tint24/byol+steering-nce-proj \
        tint24/byol+steering-nce-w3 tint24/simclr tint24/simclr+steering-nce --weights 1
    python experiments/steering_eval.py --runs runs/grid --out docs/results/steering_eval
    python experiments/steering_eval.py --smoke   # trains tiny runs first; < 2 min, a temp dir

Outputs go to ``--out`` (default: a new folder ``runs/steering_eval-<time>`` under the working
directory); the committed results in ``docs/results/steering_eval`` are re-made only with the
explicit ``--out``. ``--seed`` fixes the corruptions, the views, the TTA parameters and the
post-hoc fits; the evaluation runs on ``--device`` (default cpu), ``--processes`` runs at a time
(one thread each); each run's result is cached in ``runs/`` of the output folder, so a command
resumes and a later one adds runs. Cost: about 1-2 min per run on one core, plus the corruptions
(once per dataset).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from _cli import output_dir, torch_device
from equimod_plugin import SteeringOperator, SteeringTerm, augment
from equimod_plugin.eval.probes import extract_features, linear_probe, roc_auc
from equimod_plugin.tta import SteeredTTA, tta_params

try:  # the `experiments` extra, required by main() after the command line: --help works without it
    from imagecorruptions import corrupt

    import reproduce_cpu as rc
    from _tinted import fit_operator, normalize
except ImportError as error:
    MISSING: ImportError | None = error
else:
    MISSING = None

#: The rows, in order: the random-init encoder, BYOL, BYOL + EquiMod and each BYOL steering
#: variant, then SimCLR and SimCLR with the default (contrastive) steering term.
METHODS = (
    "random-init",
    "byol",
    "byol+equimod",
    "byol+steering",
    "byol+steering-nce",
    "byol+steering-nce-proj",
    "byol+steering-nce-w3",
    "simclr",
    "simclr+steering-nce",
)


@dataclass(frozen=True)
class Config:
    corruptions: tuple[str, ...] = ("gaussian_noise", "motion_blur", "contrast", "brightness", "fog")
    severities: tuple[int, ...] = (1, 2)
    tta_k: int = 16
    fit_epochs: int = 20
    seed: int = 0


SMOKE = Config(corruptions=("gaussian_noise",), severities=(1,), tta_k=4, fit_epochs=1)


def corrupted(images: Tensor, name: str, severity: int, seed: int) -> Tensor:
    """ImageNet-C corruption ``name`` at ``severity`` of images (N, 3, H, W) in [0, 1]."""
    np.random.seed(seed)  # imagecorruptions draws from numpy's global generator
    pixels = (images.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    out = np.stack([corrupt(p, corruption_name=name, severity=severity) for p in pixels])
    return torch.from_numpy(out.astype(np.float32) / 255).permute(0, 3, 1, 2).clamp(0, 1).contiguous()


def views_pair(method: str) -> tuple[augment.ParamAugment, augment.ParamAugment]:
    """The two views ``method`` was trained with (SimCLR's: its one recipe, twice)."""
    views = rc.training_views(method)
    return views if isinstance(views, tuple) else (views, views)


def encode(backbone: nn.Module, images: Tensor) -> Tensor:
    """Eval-mode backbone features (N, D) of images in [0, 1]."""
    return extract_features(backbone, images, batch_size=512, transform=normalize)


def view_features(
    backbone: nn.Module, images: Tensor, views: tuple[augment.ParamAugment, ...], generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """One view per image with each of ``views``: f(x), f(a(x)), a, stacked (2N rows)."""
    f_o = encode(backbone, images)
    targets, params = [], []
    for aug in views:
        views, p = aug(images, generator=generator)
        targets.append(encode(backbone, views))
        params.append(p)
    return torch.cat([f_o, f_o]), torch.cat(targets), torch.cat(params)


def mean_cos(a: Tensor, b: Tensor) -> float:
    return F.cosine_similarity(a, b).mean().item()


def nearest_distance(train: Tensor, test: Tensor) -> Tensor:
    """Cosine distance of each test embedding to its nearest training embedding, (M,)."""
    similarity = F.normalize(test, dim=1) @ F.normalize(train, dim=1).T
    return 1 - similarity.max(dim=1).values


def load(path: Path, device: torch.device) -> tuple[dict[str, Any], nn.Module, Any]:
    """A reproduce_cpu run: its JSON, its model with the saved weights, and its config."""
    run = json.loads(path.read_text())
    config = rc.Config(
        train_images=run["train_images"],
        test_images=run["test_images"],
        equimod_weight=run["weight"] or 1.0,
        param_norm=run.get("param_norm", "batchnorm"),
        seed=run["seed"],
        shipped_sample=run.get("shipped_sample", False),
    )
    model, _ = rc.build(run["method"], config)
    model.load_state_dict(torch.load(path.with_suffix(".pt")))
    return run, model.to(device), config


def evaluate(model: nn.Module, method: str, config: Any, data: dict[str, Any], settings: Config) -> dict[str, Any]:
    """The steering metrics of one trained model of ``method`` (see the module docstring)."""
    (train_x, train_y, _), (test_x, test_y, _) = data["train"], data["test"]
    rc.recalibrate(model, train_x, config)  # the same eval-mode statistics as reproduce_cpu's probes
    model.eval()
    backbone, term = model.backbone, model.equivariance.term
    f_train = encode(backbone, train_x)
    mean, std = f_train.mean(0), f_train.std(0).clamp_min(1e-6)

    def standardised(f: Tensor) -> Tensor:
        return (f - mean) / std

    joint = isinstance(term, SteeringTerm)
    embed = term.embed.eval() if joint else standardised
    views = views_pair(method)
    generator = torch.Generator().manual_seed(settings.seed + 1)
    f_o, f_a, params = view_features(backbone, train_x, views, generator)
    identity = views[0].identity_params(1)[0]
    posthoc = fit_operator(standardised(f_o), standardised(f_a), params, identity, settings.fit_epochs, settings.seed)
    with torch.no_grad():
        operators: dict[str, SteeringOperator] = {"posthoc": posthoc}
        spaces = {"posthoc": standardised}
        if joint:
            operators["joint"], spaces["joint"] = term.operator.eval(), embed
        f_o, f_a, params = view_features(backbone, test_x, views, torch.Generator().manual_seed(settings.seed + 2))
        result: dict[str, Any] = {"cos_unsteered": mean_cos(embed(f_o), embed(f_a))}
        for name, operator in operators.items():
            space = spaces[name]
            result[f"cos_steered_{name}"] = mean_cos(operator(space(f_o), params), space(f_a))
            result[f"cos_unsteered_{name}"] = mean_cos(space(f_o), space(f_a))
        tta_operator = operators["joint" if joint else "posthoc"]
        tta = SteeredTTA(nn.Identity(), tta_operator, data["tta_params"][rc.base_method(method)])

        def scores(images: Tensor, f: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor]:
            e = embed(f)
            out = tta.steer(e)
            view, p = views[0](images, generator=torch.Generator().manual_seed(settings.seed + 4))
            target = embed(encode(backbone, view))
            residual = 1 - F.cosine_similarity(tta_operator(e, p), target)
            knn = {
                "knn_distance": nearest_distance(train_e, e),
                "knn_distance_tta": nearest_distance(train_tta, out.embedding),
            }
            return {"dispersion": out.score, **knn, "steering_residual": residual}, e, out.embedding

        train_e = embed(f_train)
        train_tta = tta.steer(train_e).embedding
        clean, _, _ = scores(test_x, encode(backbone, test_x))
        result["probe_corrupted"], result["probe_corrupted_tta"] = {}, {}
        result["auc"] = {score: {} for score in clean}
        for key, images in data["corrupted"].items():
            values, e, e_tta = scores(images, encode(backbone, images))
            result["probe_corrupted"][key] = linear_probe(train_e, train_y, e, test_y)
            result["probe_corrupted_tta"][key] = linear_probe(train_tta, train_y, e_tta, test_y)
            for score, v in values.items():
                result["auc"][score][key] = roc_auc(clean[score], v)
    for key in ("probe_corrupted", "probe_corrupted_tta"):
        result[f"{key}_mean"] = float(np.mean(list(result[key].values())))
    result["auc_mean"] = {score: float(np.mean(list(v.values()))) for score, v in result["auc"].items()}
    return result


_SHARED: dict[str, Any] = {}  # what the worker processes inherit (fork): data, settings, device, cache


def evaluate_path(path: Path) -> str:
    """Evaluates one run (in a worker process) and caches its result; returns a log line."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    run, model, config = load(path, _SHARED["device"])
    result = {k: v for k, v in run.items() if k != "training"}
    result.update(evaluate(model, run["method"], config, _SHARED["data"], _SHARED["settings"]))
    result["eval_minutes"] = (time.perf_counter() - t0) / 60
    (_SHARED["cache"] / path.name).write_text(json.dumps(result, indent=2) + "\n")
    return f"{path.stem:40s} {result['eval_minutes']:.1f} min"


# report: mean +- sd over seeds per method

ROWS = {
    "object probe, clean (reproduce_cpu)": ("backbone/object/linear", 100),
    "hue probe, clean (reproduce_cpu)": ("backbone/hue/linear", 100),
    "cos, unsteered (term space)": ("cos_unsteered", 1),
    "cos, steered, joint M": ("cos_steered_joint", 1),
    "cos, unsteered (standardised f)": ("cos_unsteered_posthoc", 1),
    "cos, steered, post-hoc M": ("cos_steered_posthoc", 1),
    "object probe, corrupted, plain e": ("probe_corrupted_mean", 100),
    "object probe, corrupted, TTA mean": ("probe_corrupted_tta_mean", 100),
    "OOD AUC, TTA dispersion": ("auc_mean/dispersion", 1),
    "OOD AUC, kNN distance": ("auc_mean/knn_distance", 1),
    "OOD AUC, kNN distance of the TTA mean": ("auc_mean/knn_distance_tta", 1),
    "OOD AUC, steering residual": ("auc_mean/steering_residual", 1),
}


def get(r: dict[str, Any], key: str) -> float | None:
    value: Any = r
    for part in key.split("/") if key.startswith("auc_mean/") else [key]:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def mean_sd(values: list[float], scale: float) -> str:
    if not values:
        return "-"
    v = np.asarray(values) * scale
    digits = 1 if scale == 100 else 3
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}" if len(v) > 1 else f"{v[0]:.{digits}f}"


def goals(by: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Issue 15's goals for each steering row (means over seeds)."""
    lines = [
        "| run | object >= base - 1 | hue linear >= base + 10 | steered >= 0.9 and >= unsteered + 0.15 | "
        "a steered-TTA OOD score >= kNN distance | TTA mean beats plain e on corrupted probe |",
        "|---|---|---|---|---|---|",
    ]
    for method, runs in by.items():
        base = by.get(rc.base_method(method))
        if "+steering" not in method or base is None:
            continue

        def avg(key: str, rs: list[dict[str, Any]] = runs) -> float:
            return float(np.mean([get(r, key) for r in rs]))

        obj = 100 * (avg("backbone/object/linear") - avg("backbone/object/linear", base))
        hue = 100 * (avg("backbone/hue/linear") - avg("backbone/hue/linear", base))
        steered, unsteered = avg("cos_steered_joint"), avg("cos_unsteered")
        knn = avg("auc_mean/knn_distance")
        tta_best = max(avg(f"auc_mean/{s}") for s in ("dispersion", "knn_distance_tta", "steering_residual"))
        corrupted = 100 * (avg("probe_corrupted_tta_mean") - avg("probe_corrupted_mean"))
        cells = [
            f"{obj:+.1f} {'yes' if obj >= -1 else 'no'}",
            f"{hue:+.1f} {'yes' if hue >= 10 else 'no'}",
            f"{steered:.3f} vs {unsteered:.3f} {'yes' if steered >= 0.9 and steered >= unsteered + 0.15 else 'no'}",
            f"{tta_best:.3f} vs {knn:.3f} {'yes' if tta_best >= knn else 'no'}",
            f"{corrupted:+.1f} {'yes' if corrupted > 0 else 'no'}",
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def headline(by: dict[str, list[dict[str, Any]]]) -> str:
    """Per steering variant: object probe and steered cosine, and its best TTA OOD score
    against the kNN distance, means over seeds."""
    parts = []
    for method, runs in by.items():
        if "+steering" not in method:
            continue

        def avg(key: str, rs: list[dict[str, Any]] = runs) -> float:
            return float(np.mean([get(r, key) for r in rs]))

        best = max(avg(f"auc_mean/{s}") for s in ("dispersion", "knn_distance_tta", "steering_residual"))
        parts.append(
            f"{method}: object probe {100 * avg('backbone/object/linear'):.1f}, steered cos "
            f"{avg('cos_steered_joint'):.3f} (unsteered {avg('cos_unsteered'):.3f}), best TTA OOD AUC "
            f"{best:.3f} vs kNN {avg('auc_mean/knn_distance'):.3f}"
        )
    for name, base in (("SimCLR", "simclr"), ("BYOL", "byol")):
        if base in by:
            accuracy = 100 * float(np.mean([get(r, "backbone/object/linear") for r in by[base]]))
            parts.insert(0, f"{name}: object probe {accuracy:.1f}")
    return "; ".join(parts) + f" ({len(next(iter(by.values())))} seeds)" if parts else "-"


def markdown(report: dict[str, Any]) -> str:
    by: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(report["runs"], key=lambda r: (METHODS.index(r["method"]), r["seed"])):
        by.setdefault(r["method"], []).append(r)
    header = " | ".join(f"{m} ({len(rs)})" for m, rs in by.items())
    lines = [
        f"# Steering at CPU scale: steered cosines, robustness and OOD ({report['dataset']})",
        "",
        f"Made by `experiments/steering_eval.py` from the runs of `experiments/reproduce_cpu.py`. "
        f"{report['hardware']}.",
        "",
        f"**Headline:** {headline(by)}",
        "",
        "Mean ± sd over seeds (the number of seeds in brackets); accuracies in points.",
        "",
        f"| metric | {header} |",
        "|---|" + "---:|" * len(by),
    ]
    for label, (key, scale) in ROWS.items():
        cells = [mean_sd([v for r in rs if (v := get(r, key)) is not None], scale) for rs in by.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    config = report["config"]
    lines += [
        "",
        "e: the embedding the TTA operator acts on (a steering run's `term.embed`, else the backbone features "
        "standardised with the training features' mean and sd). Corrupted sets (imagecorruptions, ImageNet-C "
        f"parameters at 32 px): {', '.join(config['corruptions'])} at severities "
        f"{', '.join(map(str, config['severities']))}; OOD: clean test images against each corrupted copy, "
        f"AUC averaged over the sets. TTA: K = {config['tta_k']} steered embeddings.",
        "",
        "## Goals (issue 15, means over seeds)",
        "",
        *goals(by),
    ]
    return "\n".join(lines) + "\n"


def prepare(dataset: str, config: Any, settings: Config) -> dict[str, Any]:
    """The data every run shares: train/test splits, corrupted test sets and the TTA parameters."""
    train = rc.load_split(dataset, "train", config.train_images, config)
    test = rc.load_split(dataset, "test", config.test_images, config)
    keys = [(name, s) for name in settings.corruptions for s in settings.severities]
    return {
        "train": train,
        "test": test,
        "corrupted": {f"{n}/{s}": corrupted(test[0], n, s, settings.seed + i) for i, (n, s) in enumerate(keys)},
        "tta_params": {  # per invariance method: the K parameter sets of its view 1
            base: tta_params(
                views_pair(base)[0], settings.tta_k, (32, 32), torch.Generator().manual_seed(settings.seed + 3)
            )
            for base in ("byol", "simclr")
        },
    }


def smoke_runs() -> Path:
    """Tiny reproduce_cpu runs of every method in a temporary directory (1 seed)."""
    out = Path(tempfile.mkdtemp(prefix="steering_eval_runs_"))
    config = rc.SMOKE
    for method in METHODS:
        rc.run_one(("tint8", method, config, str(out)))
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs", type=Path, help="a reproduce_cpu output folder (its runs/*.json and .pt weights); not with --smoke"
    )
    parser.add_argument("--dataset", default="tint24", help="the dataset whose runs are evaluated (default tint24)")
    parser.add_argument(
        "--out",
        type=Path,
        help="output directory (default: a new folder runs/steering_eval-<time> under the working directory; "
        "with --smoke, a new temporary directory; the committed results: --out docs/results/steering_eval)",
    )
    parser.add_argument(
        "--device",
        type=torch_device,
        default="cpu",
        help="where the runs are evaluated (default: cpu)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=Config.seed,
        help="seeds the corruptions, views, TTA parameters and post-hoc fits (default: 0)",
    )
    parser.add_argument(
        "--processes", type=int, default=2, help="runs evaluated at a time, one thread each (default 2)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny runs trained first, for CI (a temporary directory)")
    args = parser.parse_args()
    if args.runs is None and not args.smoke:
        parser.error("--runs is required (a reproduce_cpu output folder), unless --smoke")
    return args


def main() -> None:
    args = parse_args()
    if MISSING is not None:
        name = MISSING.name or getattr(MISSING.__cause__, "name", None) or MISSING
        sys.exit(f"steering_eval.py needs {name}: pip install 'equimod-plugin[experiments]'")
    torch.set_num_threads(1)
    settings = SMOKE if args.smoke else Config()
    settings = Config(**{**asdict(settings), "seed": args.seed})
    dataset = "tint8" if args.smoke else args.dataset
    runs_dir = smoke_runs() if args.smoke else args.runs
    out = output_dir(args.out, args.smoke, "steering_eval")
    print(f"device: {args.device}, seed: {settings.seed}; runs from {runs_dir}; writing to {out}")

    def wanted(run: dict[str, Any]) -> bool:  # the methods above, at weight 1, default standardisation
        return (
            run["method"] in METHODS
            and run.get("param_norm", "batchnorm") == "batchnorm"
            and run["weight"] in (0.0, 1.0)
        )

    paths = sorted(
        p
        for p in (runs_dir / "runs").glob(f"{dataset}_*.json")
        if p.with_suffix(".pt").exists() and wanted(json.loads(p.read_text()))
    )
    if not paths:
        sys.exit(f"no {dataset} runs with weights (.pt) of {METHODS} in {runs_dir / 'runs'}")
    cache = out / "runs"  # one JSON per evaluated run: an interrupted command resumes
    todo = [p for p in paths if not (cache / p.name).exists()]
    if todo:
        _, _, config = load(todo[0], args.device)
        _SHARED.update(data=prepare(dataset, config, settings), settings=settings, device=args.device, cache=cache)
        cache.mkdir(parents=True, exist_ok=True)
        with multiprocessing.get_context("fork").Pool(min(args.processes, len(todo))) as pool:
            for name in pool.imap(evaluate_path, todo):
                print(f"  {name}", flush=True)
    results = [json.loads((cache / p.name).read_text()) for p in paths]
    report = {
        "dataset": dataset,
        "config": asdict(settings),
        "runs": results,
        "hardware": (
            f"{rc.cpu_name()} ({platform.machine()}, {os.cpu_count()} cores, shared), 1 torch thread, on "
            f"{args.device}, torch {torch.__version__}; {len(results)} runs, "
            f"{sum(r['eval_minutes'] for r in results):.1f} min of evaluation in all"
        ),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "steering_eval.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "steering_eval.md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
