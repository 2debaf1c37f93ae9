"""Augmentation throughput: the plugin's batched BYOL views against lightly's per-image ones.

What is measured, at B = 256 images of S x S pixels for S = 32 and S = 224, in one run:

- **lightly**: ``BYOLTransform(BYOLView1Transform(S), BYOLView2Transform(S))`` called on one
  PIL image at a time, as a lightly ``Dataset`` does, then the two lists of views stacked into
  ``(B, 3, S, S)`` batches as the ``DataLoader``'s collate would. Its output includes
  ``ToTensor`` and the ImageNet ``Normalize``. Runs in this process with one torch thread, as
  in a ``DataLoader`` worker (which sets one); PIL uses one core.
- **plugin**: ``augment.byol(S, view=1|2, interpolation="bilinear", blur_kernel=23)`` (the
  ``"imagenet"`` recipe as lightly runs it at every size: bilinear crops, kernel 23) on the
  same images as one float ``(B, 3, S, S)`` batch in [0, 1] (uint8 -> float conversion done
  beforehand, not timed), followed by the same ImageNet normalisation;
  with one torch thread (per core, the comparison the targets apply to: lightly scales with
  workers, one core each) and with ``torch.set_num_threads(2)``.

Both pipelines get the same S x S source images (seeded random square crops of
``skimage.data`` colour photos, resized with PIL) and produce S x S views, so every crop is an
upscale and antialiasing plays no part. Repetitions alternate (lightly, plugin, plugin with one
thread, lightly, ...) after one warm-up of each; the report gives the median images/s (one
image = both views) and the median over the interleaved repetitions of the speedup
plugin / lightly. Targets (per core): 5x at 32 px, 1.5x at 224 px.

Distance to memory speed: the report gives the least memory traffic of an image (its float32
pixels read once, its two float32 views written once) and the copy bandwidth measured in the
same run (a 256 MB float32 tensor copied, with 1 and 2 threads), hence the images/s a pipeline
running at memory speed would reach, and the plugin's share of it.

A statistics check compares, at 32 px over 1024 images, the un-normalised views of both
pipelines (lightly's are de-normalised): the mean and std over images of the per-image mean
and of the per-channel spatial std (averaged over channels), and the fraction of grayscale
views. ``z`` is the difference over its standard error (both samples treated as independent).

lightly's pipeline runs on the CPU, where a ``DataLoader`` worker runs it; ``--device cuda``
puts the plugin's on the GPU (``benchmarks/gpu_check.sh``). Run (needs
``pip install "equimod-plugin[bench]"``: lightly and scikit-image)::

    PYTHONPATH=. python benchmarks/augment_throughput.py            # about 1-2 minutes
    PYTHONPATH=. python benchmarks/augment_throughput.py --quick    # smoke run, temp dir
    PYTHONPATH=. python benchmarks/augment_throughput.py --out benchmarks/results  # committed

Writes ``augment_throughput.md`` and ``augment_throughput.json`` to ``--out`` (default: a new
folder ``runs/augment_throughput-<time>`` under the working directory; with ``--quick``, a
new temporary directory). The committed results in ``benchmarks/results`` are re-made only
with the explicit ``--out benchmarks/results`` above.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from _report import add_device_option, add_output_options, machine, output_dir, require, synchronize
from torch import Tensor

from equimod_plugin import augment
from equimod_plugin.augment.normalize import IMAGENET_NORMALIZE

try:  # the `bench` extra, required by main() after the command line: --help works without it
    import lightly
    from lightly.transforms.byol_transform import (
        BYOLTransform,
        BYOLView1Transform,
        BYOLView2Transform,
    )
    from PIL import Image
    from skimage import data as skdata
except ImportError as error:
    MISSING: ImportError | None = error
else:
    MISSING = None

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")
# ImageNet's mean and std, as lightly's IMAGENET_NORMALIZE (its transforms' Normalize)
MEAN = torch.tensor(IMAGENET_NORMALIZE[0]).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_NORMALIZE[1]).view(1, 3, 1, 1)
TARGETS = {32: 5.0, 224: 1.5}
THREADS = 2
GRAY_ATOL = 1e-4

Pipeline = Callable[[], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class Config:
    """Batch size, repetitions per image size, the statistics sample size and the seed."""

    batch_size: int
    reps: dict[int, int]
    stats_images: int
    stats_size: int = 32
    seed: int = 0
    device: str = "cpu"  # where the plugin runs (lightly: always the CPU, as in a DataLoader)


FULL = Config(batch_size=256, reps={32: 7, 224: 7}, stats_images=1024)
QUICK = Config(batch_size=8, reps={32: 1, 224: 1}, stats_images=32)


@dataclass(frozen=True)
class Timing:
    """Seconds per repetition of each timed run and the per-repetition speedups."""

    size: int
    batch_size: int
    seconds: dict[str, list[float]]

    def speedups(self, name: str) -> list[float]:
        """lightly's time over run ``name``'s, per interleaved repetition."""
        pairs = zip(self.seconds["lightly"], self.seconds[name], strict=True)
        return [lightly / other for lightly, other in pairs]

    def summary(self) -> dict[str, float]:
        """Median images/s of every run and median speedup of the plugin runs."""
        out = {
            f"{name}_img_per_s": self.batch_size / statistics.median(s)
            for name, s in self.seconds.items()
        }
        out |= {
            f"{name}_speedup": statistics.median(self.speedups(name))
            for name in self.seconds
            if name != "lightly"
        }
        return out


def load_photos() -> list[np.ndarray]:
    """The ``skimage.data`` colour photographs, ``(H, W, 3)`` uint8."""
    return [getattr(skdata, name)() for name in PHOTOS]


def random_crops(photos: Sequence[np.ndarray], n: int, size: int, seed: int) -> list[Image.Image]:
    """``n`` seeded random square crops (side 1/4 to all of the short side), resized to ``size``."""
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(n):
        photo = photos[rng.integers(len(photos))]
        h, w = photo.shape[:2]
        side = int(rng.integers(min(h, w) // 4, min(h, w) + 1))
        top, left = rng.integers(h - side + 1), rng.integers(w - side + 1)
        crop = Image.fromarray(photo[top : top + side, left : left + side])
        crops.append(crop.resize((size, size), Image.Resampling.BILINEAR))
    return crops


def to_batch(images: Sequence[Image.Image]) -> Tensor:
    """PIL images -> one float batch ``(B, 3, S, S)`` in [0, 1]."""
    array = np.stack([np.asarray(im) for im in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2).float().div(255).contiguous()


def lightly_pipeline(images: Sequence[Image.Image], size: int) -> Pipeline:
    """lightly's BYOL transform per image, views stacked into two normalised batches."""
    transform = BYOLTransform(
        view_1_transform=BYOLView1Transform(input_size=size),
        view_2_transform=BYOLView2Transform(input_size=size),
    )

    def run() -> tuple[Tensor, Tensor]:
        views = [transform(image) for image in images]
        return torch.stack([v[0] for v in views]), torch.stack([v[1] for v in views])

    return run


def plugin_pipeline(batch: Tensor, size: int, normalize: bool = True) -> Pipeline:
    """The plugin's BYOL views 1 and 2 on the whole batch (on its device), optionally
    normalised."""
    # lightly's recipe at every size: bilinear crops, PIL blur up to sigma 2 (kernel 23 here)
    recipe = {"interpolation": "bilinear", "blur_kernel": 23}
    aug1, aug2 = augment.byol(size, view=1, **recipe), augment.byol(size, view=2, **recipe)
    mean, std = MEAN.to(batch.device), STD.to(batch.device)

    def run() -> tuple[Tensor, Tensor]:
        v1, v2 = aug1(batch)[0], aug2(batch)[0]
        if normalize:  # in place: the views are this function's own tensors
            return v1.sub_(mean).div_(std), v2.sub_(mean).div_(std)
        return v1, v2

    return run


def seconds(pipeline: Pipeline) -> float:
    """Wall-clock seconds of one call (and of its queued GPU work)."""
    synchronize()
    start = time.perf_counter()
    pipeline()
    synchronize()
    return time.perf_counter() - start


def time_size(photos: Sequence[np.ndarray], size: int, config: Config) -> Timing:
    """Interleaved repetitions of every run on the same ``size`` x ``size`` images.

    lightly runs with one torch thread, as in a ``DataLoader`` worker (which sets it); the
    plugin with ``THREADS`` and with one (a per-core comparison). Repetition 0 is a warm-up.
    """
    images = random_crops(photos, config.batch_size, size, config.seed + size)
    plugin = plugin_pipeline(to_batch(images).to(config.device), size)
    runs = {
        "lightly": (lightly_pipeline(images, size), 1),
        "plugin": (plugin, THREADS),
        "plugin_1thread": (plugin, 1),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for rep in range(config.reps[size] + 1):
        for name, (pipeline, threads) in runs.items():
            torch.set_num_threads(threads)
            elapsed = seconds(pipeline)
            if rep:
                times[name].append(elapsed)
    torch.set_num_threads(THREADS)
    return Timing(size, config.batch_size, times)


def bytes_per_image(size: int) -> int:
    """The least memory traffic of one image: its float32 pixels read once and its two float32
    views written once (``3 S^2 * 4`` bytes each)."""
    return 3 * 3 * size * size * 4


def copy_bandwidth(threads: int, megabytes: int = 256, reps: int = 5) -> float:
    """Measured memory bandwidth (bytes/s): the median of ``reps`` copies of a ``megabytes``
    float32 tensor into another, counting the bytes read and written."""
    torch.set_num_threads(threads)
    src = torch.rand(megabytes * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)  # first touch of dst
    times = [seconds(lambda: dst.copy_(src)) for _ in range(reps)]
    torch.set_num_threads(THREADS)
    return 2 * src.numel() * 4 / statistics.median(times)


def view_stats(views: Tensor) -> dict[str, tuple[float, float]]:
    """(value, standard error) of the statistics of un-normalised views ``(N, 3, S, S)``."""
    n = views.shape[0]
    image_mean = views.mean(dim=(1, 2, 3)).double()
    channel_std = views.std(dim=(2, 3)).mean(dim=1).double()
    gray = ((views - views[:, :1]).abs().amax(dim=(1, 2, 3)) <= GRAY_ATOL).double().mean().item()
    out = {"grayscale fraction": (gray, math.sqrt(gray * (1 - gray) / n))}
    for name, q in (("per-image mean", image_mean), ("per-channel std", channel_std)):
        sd = q.std().item()
        out[f"mean of {name}"] = (q.mean().item(), sd / math.sqrt(n))
        out[f"std of {name}"] = (sd, sd / math.sqrt(2 * (n - 1)))
    return out


def compare_stats(photos: Sequence[np.ndarray], config: Config) -> list[dict[str, object]]:
    """Statistics of both views of both pipelines on the same images, with their z-scores."""
    size = config.stats_size
    images = random_crops(photos, config.stats_images, size, config.seed + 1)
    lightly_views = [v * STD + MEAN for v in lightly_pipeline(images, size)()]
    plugin_views = [
        v.cpu()
        for v in plugin_pipeline(to_batch(images).to(config.device), size, normalize=False)()
    ]
    rows = []
    for view, lv, pv in zip((1, 2), lightly_views, plugin_views, strict=True):
        ls, ps = view_stats(lv), view_stats(pv)
        for name, (lval, lse) in ls.items():
            pval, pse = ps[name]
            z = (pval - lval) / math.hypot(lse, pse) if lse or pse else 0.0
            rows.append({"view": view, "statistic": name, "lightly": lval, "plugin": pval, "z": z})
    return rows


def hardware() -> dict[str, object]:
    """The machine (see ``_report.machine``) and lightly's version."""
    return {**machine(), "lightly": lightly.__version__}


def markdown(
    hw: dict[str, object],
    timings: list[Timing],
    stats: list[dict[str, object]],
    bandwidth: dict[int, float],
) -> str:
    """The report: hardware line, throughput table and statistics table."""
    lines = [
        "# BYOL augmentation throughput: equimod_plugin vs lightly",
        "",
        f"{hw['cpu']}, {hw['cpu_count']} cores, plugin on {hw['device']}, "
        f"torch threads: lightly 1, plugin {THREADS} "
        f"(and 1), load average {hw['load_average_1min']:.1f} at start, "
        f"torch {hw['torch']}, lightly {hw['lightly']}, {hw['date']}.",
        "",
        "Images/s: one image = its two BYOL views. lightly: per PIL image, in-process, one torch "
        "thread as in a DataLoader worker (PIL uses one core), views stacked; plugin: "
        '`augment.byol(S, view=1|2, interpolation="bilinear", blur_kernel=23)` (lightly\'s '
        "recipe) on the float batch, "
        f"1 torch thread (per core: the target) and {THREADS}. Both include ImageNet "
        "normalisation. Speedup: median over interleaved repetitions of lightly's time / the "
        "plugin's. lightly scales with DataLoader workers, one core each: the per-core speedup "
        "is the one that holds on any number of cores.",
        "",
        "Distance to memory speed: **bytes/image** is the least traffic of one image (its "
        "float32 pixels read once, its two float32 views written once); **memory speed** is "
        "the measured copy bandwidth (a 256 MB float32 tensor copied, bytes read + written; "
        f"1 thread: {bandwidth[1] / 1e9:.1f} GB/s, {THREADS} threads: "
        f"{bandwidth[THREADS] / 1e9:.1f} GB/s) over bytes/image; the last column is the "
        "1-thread plugin's share of it.",
        "",
        "| size | B | reps | lightly img/s, 1 worker | plugin img/s, 1 thread | speedup per core "
        f"| target | met | plugin img/s, {THREADS} threads | speedup, {THREADS} threads "
        "| bytes/image | memory speed, 1 thread (img/s) | plugin / memory speed |",
        "|---:|---:|---:|---:|---:|---:|---:|:---:|---:|---:|---:|---:|---:|",
    ]
    for t in timings:
        s = t.summary()
        target = TARGETS[t.size]
        limit = bandwidth[1] / bytes_per_image(t.size)
        lines.append(
            f"| {t.size} | {t.batch_size} | {len(t.seconds['lightly'])} "
            f"| {s['lightly_img_per_s']:.0f} | {s['plugin_1thread_img_per_s']:.0f} "
            f"| {s['plugin_1thread_speedup']:.2f}x | {target}x "
            f"| {'yes' if s['plugin_1thread_speedup'] >= target else 'no'} "
            f"| {s['plugin_img_per_s']:.0f} | {s['plugin_speedup']:.2f}x "
            f"| {bytes_per_image(t.size) / 1e3:.0f} kB | {limit:.0f} "
            f"| {s['plugin_1thread_img_per_s'] / limit:.1%} |"
        )
    lines += [
        "",
        "Un-normalised view statistics at 32 px (z = difference / standard error):",
        "",
        "| view | statistic | lightly | plugin | z |",
        "|---:|:---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['view']} | {r['statistic']} | {r['lightly']:.4f} | {r['plugin']:.4f} "
        f"| {r['z']:+.1f} |"
        for r in stats
    ]
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_output_options(parser, "augment_throughput", quick="tiny smoke run (B = 8, 1 rep)")
    add_device_option(parser, "the plugin")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    require(MISSING)
    config = replace(QUICK if args.quick else FULL, seed=args.seed, device=str(args.device))
    out = output_dir(args, "augment_throughput")
    print(f"seed {config.seed}; writing to {out}")
    torch.set_num_threads(THREADS)
    torch.manual_seed(config.seed)  # lightly's transforms draw from torch's and Python's generators
    np.random.seed(config.seed)
    random.seed(config.seed)
    photos = load_photos()
    hw = {**hardware(), "device": config.device}
    timings = [time_size(photos, size, config) for size in sorted(config.reps)]
    stats = compare_stats(photos, config)
    bandwidth = {n: copy_bandwidth(n) for n in (1, THREADS)}
    report = markdown(hw, timings, stats, bandwidth)
    out.mkdir(parents=True, exist_ok=True)
    (out / "augment_throughput.md").write_text(report)
    raw = {
        "hardware": hw,
        "config": asdict(config),
        "timings": [
            {
                **asdict(t),
                **{f"{n}_speedups": t.speedups(n) for n in t.seconds if n != "lightly"},
                **t.summary(),
            }
            for t in timings
        ],
        "statistics": stats,
        "copy_bandwidth_bytes_per_s": bandwidth,
        "bytes_per_image": {size: bytes_per_image(size) for size in sorted(config.reps)},
    }
    (out / "augment_throughput.json").write_text(json.dumps(raw, indent=2) + "\n")
    print(report)
    print(f"wrote {out / 'augment_throughput.md'} and {out / 'augment_throughput.json'}")


if __name__ == "__main__":
    main()
