"""Test-time augmentation on CPU: augment and re-encode K times, against encode once and steer.

What is measured, for torchvision's resnet18 without its classifier (ImageNet stem, D = 512,
random weights, eval mode, ``torch.no_grad``, ``torch.set_num_threads(2)``) on a batch of B
random images of S x S pixels (B = 64 at S = 32, B = 8 at S = 224), for K = 8, 16 and 64
augmentations:

- **(a) augment and re-encode**: the batch repeated K times, ``(B K, 3, S, S)``, goes through
  one call of ``augment.byol(S, view=1, interpolation="bilinear", blur_kernel=23)`` (the
  ``"imagenet"`` recipe as lightly runs it, at both sizes), the views are normalised with the
  ImageNet mean and std, encoded in chunks (512 images at 32 px, 64 at 224 px) and the K
  embeddings of each image averaged.
  ``aug`` is the part of (a) spent augmenting and normalising.
- **(b) steer**: the B images are normalised and encoded once, then
  ``SteeringOperator(512, 18, kind="low_rank").steer_many(features, params)`` with K fixed
  parameter sets ``params = tta_params(aug, K, (S, S))`` gives ``(B, K, D)``, averaged over K.
  This is :meth:`SteeredTTA.steer` without the dispersion score, which (a) does not compute.
- **encode(B)**: the encoder pass of (b) alone; **steer**: ``steer_many`` and the mean alone
  on precomputed features, for ``kind="low_rank"`` at every K and, as extra rows, for
  ``kind="exponential"`` and ``kind="full"`` at the largest K. **maps** is the part of a steer
  spent building the maps from the parameters (``_maps`` of ``ExponentialSteering`` and
  ``FullSteering``, the hypernetwork giving U and V, ``_low_rank``, of ``LowRankSteering``),
  measured inside the same call by wrapping that method on the instance. Each kind and K has
  its own operator, as each TTA set-up has: ``steer_many`` builds the maps from its K
  parameter sets on the first call (a warm-up) and reuses them after, so **maps** reads 0
  unless they are rebuilt.

The operators are untrained (random initialisation): the cost does not depend on the values.
After warm-up calls (every code path once; (a) whole at the smallest K, its augmentation at
every K), every repetition runs all measurements in turn ((a) and (b) for each K, then
encode(B) and the steers), 5 repetitions at 32 px and 3 at 224 px.
Times are medians; the speedup (a) / (b) is computed per interleaved pair, then its median
taken. The target is a speedup >= 0.9 K at K = 64: (b) costs one encoder pass on B images
instead of K passes, plus no augmentation, so the ideal is about K (more, counting the
augmentation saved; less where the encoder runs more efficiently per image on the B K images
of (a) than on the B of (b)). **(a) / encode(B)** is that ideal: the speedup with free
steering. Bhardwaj et al. (2023) report that steering makes TTA "nearly 50x" faster; that is
the paper's claim, on its hardware and models, not a result of this script.

On a machine shared with other jobs, OpenMP's default spin-waiting makes small workloads (the
B images of (b), the steering product) several times slower per image than the large chunks
of (a), which lowers the measured speedup. The report records the load average and
``OMP_WAIT_POLICY``; setting ``OMP_WAIT_POLICY=PASSIVE`` in the environment reduces the effect.

``--device cuda`` runs it on the GPU (``benchmarks/gpu_check.sh``). Run (needs
``pip install "equimod-plugin[bench]"``: torchvision)::

    PYTHONPATH=. python benchmarks/tta_speed.py            # 7 to 15+ minutes, with the load
    PYTHONPATH=. python benchmarks/tta_speed.py --quick    # smoke run, temp dir
    PYTHONPATH=. python benchmarks/tta_speed.py --out benchmarks/results  # the committed run

Writes ``tta_speed.md`` and ``tta_speed.json`` to ``--out`` (default: a new folder
``runs/tta_speed-<time>`` under the working directory; with ``--quick``, a new temporary
directory). The committed results in ``benchmarks/results`` are re-made only with the
explicit ``--out benchmarks/results`` above.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch
from _report import add_device_option, add_output_options, machine, output_dir, require, synchronize
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile

from equimod_plugin import augment
from equimod_plugin.augment import ParamAugment
from equimod_plugin.steering import Kind, LowRankSteering, SteeringOperator
from equimod_plugin.tta import SteeredTTA, tta_params
from equimod_plugin.wrap import IMAGENET_NORMALIZE

try:  # the `bench` extra, required by main() after the command line: --help works without it
    import torchvision
except ImportError as error:
    MISSING: ImportError | None = error
else:
    MISSING = None

THREADS = 2
DIM = 512
PARAM_DIM = 18
TARGET = 0.9
PAPER_CLAIM = "nearly 50x"
EXTRA_KINDS: tuple[Kind, ...] = ("exponential", "full")
MEAN = torch.tensor(IMAGENET_NORMALIZE[0]).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_NORMALIZE[1]).view(1, 3, 1, 1)


@dataclass(frozen=True)
class SizeConfig:
    """Image size S, batch size B, timed repetitions and encoder chunk (images) for (a)."""

    size: int
    batch: int
    reps: int
    chunk: int


@dataclass(frozen=True)
class MemoryConfig:
    """The memory check: ``steer_many`` at width D on B embeddings with K parameter sets,
    against the inference step of resnet50 (D = 2048) on B images of S x S pixels."""

    dim: int
    batch: int
    k: int
    size: int


@dataclass(frozen=True)
class Config:
    """Image sizes, the numbers K of augmentations, the memory check and the seed."""

    sizes: tuple[SizeConfig, ...]
    ks: tuple[int, ...]
    memory: MemoryConfig
    seed: int = 0


FULL = Config(
    sizes=(SizeConfig(32, 64, 5, 512), SizeConfig(224, 8, 3, 64)),
    ks=(8, 16, 64),
    memory=MemoryConfig(dim=2048, batch=256, k=64, size=224),
)
QUICK = Config(
    sizes=(SizeConfig(32, 4, 1, 8), SizeConfig(224, 2, 1, 4)),
    ks=(2, 4),
    memory=MemoryConfig(dim=2048, batch=4, k=4, size=32),
)
MEMORY_TARGET = 0.05


class CallTimer:
    """A callable wrapper that accumulates the wall-clock seconds spent in its calls."""

    def __init__(self, fn: Callable[..., object]) -> None:
        self.fn = fn
        self.seconds = 0.0

    def __call__(self, *args: object, **kwargs: object) -> object:
        synchronize()
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            synchronize()
            self.seconds += time.perf_counter() - start

    def pop(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def resnet18() -> nn.Sequential:
    """torchvision's resnet18 without its classifier, in eval mode."""
    resnet = torchvision.models.resnet18()
    return nn.Sequential(*list(resnet.children())[:-1]).eval()


def normalise(images: Tensor) -> Tensor:
    return (images - MEAN.to(images.device)) / STD.to(images.device)


def encode(encoder: nn.Module, images: Tensor, chunk: int) -> Tensor:
    """``(N, 3, S, S) -> (N, D)``, ``chunk`` images at a time."""
    return torch.cat([encoder(part).flatten(1) for part in images.split(chunk)])


def operator(
    kind: Kind, aug: ParamAugment, device: torch.device
) -> tuple[SteeringOperator, CallTimer]:
    """An untrained operator of ``kind`` on ``device`` and a timer around the method that
    builds its maps."""
    identity = aug.identity_params(1)[0]
    op = SteeringOperator(DIM, PARAM_DIM, kind=kind, identity=identity).eval().to(device)
    name = "_low_rank" if isinstance(op, LowRankSteering) else "_maps"
    timer = CallTimer(getattr(op, name))
    setattr(op, name, timer)
    return op, timer


@dataclass
class Case:
    """Everything one image size needs: models, inputs and the K parameter sets."""

    config: SizeConfig
    encoder: nn.Module
    aug: ParamAugment
    images: Tensor
    features: Tensor
    params: dict[int, Tensor]
    operators: dict[tuple[Kind, int], tuple[SteeringOperator, CallTimer]]


def build_case(config: SizeConfig, ks: tuple[int, ...], seed: int, device: torch.device) -> Case:
    torch.manual_seed(seed)
    aug = augment.byol(config.size, view=1, interpolation="bilinear", blur_kernel=23)
    encoder = resnet18().to(device)
    images = torch.rand(config.batch, 3, config.size, config.size).to(device)
    generator = torch.Generator().manual_seed(seed)
    params = {k: tta_params(aug, k, (config.size, config.size), generator).to(device) for k in ks}
    return Case(
        config=config,
        encoder=encoder,
        aug=aug,
        images=images,
        features=encode(encoder, normalise(images), config.batch),
        params=params,
        # one operator per kind and K, as one per TTA set-up: steer_many reuses what it
        # builds from its K parameter sets
        operators={run: operator(run[0], aug, device) for run in steer_runs(ks).values()},
    )


def augment_and_encode(case: Case, k: int) -> tuple[Tensor, float]:
    """(a): the mean embedding ``(B, D)`` and the seconds spent augmenting and normalising."""
    synchronize()
    start = time.perf_counter()
    views, _ = case.aug(case.images.repeat_interleave(k, dim=0))
    views = normalise(views)
    synchronize()
    aug_seconds = time.perf_counter() - start
    features = encode(case.encoder, views, case.config.chunk)
    return features.unflatten(0, (-1, k)).mean(dim=1), aug_seconds


def steer(case: Case, kind: Kind, features: Tensor, k: int) -> Tensor:
    """Steer ``(B, D)`` features to the K augmentations and average: ``(B, D)``."""
    return case.operators[kind, k][0].steer_many(features, case.params[k]).mean(dim=1)


def encode_and_steer(case: Case, k: int) -> Tensor:
    """(b): encode the B images once and steer them with the low-rank operator."""
    features = encode(case.encoder, normalise(case.images), case.config.batch)
    return steer(case, "low_rank", features, k)


def seconds(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call (and of its queued GPU work)."""
    synchronize()
    start = time.perf_counter()
    fn()
    synchronize()
    return time.perf_counter() - start


@dataclass
class Samples:
    """Seconds per repetition of every measurement of one image size."""

    baseline: dict[int, list[float]] = field(default_factory=dict)
    baseline_aug: dict[int, list[float]] = field(default_factory=dict)
    steered: dict[int, list[float]] = field(default_factory=dict)
    encode: list[float] = field(default_factory=list)
    steer: dict[str, list[float]] = field(default_factory=dict)
    maps: dict[str, list[float]] = field(default_factory=dict)


def steer_runs(ks: tuple[int, ...]) -> dict[str, tuple[Kind, int]]:
    """The steer-alone measurements: low_rank at every K, the other kinds at the largest K."""
    runs = {f"low_rank K={k}": ("low_rank", k) for k in ks}
    runs.update({f"{kind} K={max(ks)}": (kind, max(ks)) for kind in EXTRA_KINDS})
    return runs


def repetition(case: Case, ks: tuple[int, ...], samples: Samples) -> None:
    """One interleaved round of all measurements, appended to ``samples``."""
    for k in ks:
        start = time.perf_counter()
        _, aug_seconds = augment_and_encode(case, k)
        samples.baseline.setdefault(k, []).append(time.perf_counter() - start)
        samples.baseline_aug.setdefault(k, []).append(aug_seconds)
        samples.steered.setdefault(k, []).append(seconds(lambda k=k: encode_and_steer(case, k)))
    samples.encode.append(
        seconds(lambda: encode(case.encoder, normalise(case.images), case.config.batch))
    )
    for name, (kind, k) in steer_runs(ks).items():
        timer = case.operators[kind, k][1]
        timer.pop()
        samples.steer.setdefault(name, []).append(
            seconds(lambda kind=kind, k=k: steer(case, kind, case.features, k))
        )
        samples.maps.setdefault(name, []).append(timer.pop())


def warm_up(case: Case, ks: tuple[int, ...]) -> None:
    """One call of each code path and of the augmentation at every K, so that first-call
    costs stay out of the samples ((a) runs whole at the smallest K only: its encoder chunks
    have the same shape at every K)."""
    augment_and_encode(case, min(ks))
    for k in ks:
        case.aug(case.images.repeat_interleave(k, dim=0))
    for k in ks:
        encode_and_steer(case, k)
    for kind, k in steer_runs(ks).values():
        steer(case, kind, case.features, k)


def measure(config: SizeConfig, ks: tuple[int, ...], seed: int, device: torch.device) -> Samples:
    case = build_case(config, ks, seed, device)
    with torch.no_grad():
        check_shapes(case, min(ks))
        warm_up(case, ks)
        samples = Samples()
        for _ in range(config.reps):
            repetition(case, ks, samples)
    return samples


def check_shapes(case: Case, k: int) -> None:
    """(a) and (b) both return one ``(B, D)`` embedding per image."""
    expected = (case.config.batch, DIM)
    for name, out in (
        ("augment and encode", augment_and_encode(case, k)[0]),
        ("encode and steer", encode_and_steer(case, k)),
    ):
        if tuple(out.shape) != expected:
            raise RuntimeError(f"{name} returned {tuple(out.shape)}, expected {expected}")


def median_ratio(numerators: list[float], denominators: list[float]) -> float:
    return statistics.median(n / d for n, d in zip(numerators, denominators, strict=True))


def ms(values: list[float]) -> float:
    return 1e3 * statistics.median(values)


def summarise(config: SizeConfig, ks: tuple[int, ...], s: Samples) -> dict[str, object]:
    """Medians and per-pair ratios of one image size."""
    tta = [
        {
            "k": k,
            "baseline_ms": ms(s.baseline[k]),
            "baseline_aug_ms": ms(s.baseline_aug[k]),
            "steered_ms": ms(s.steered[k]),
            "speedup": (speedup := median_ratio(s.baseline[k], s.steered[k])),
            "speedup_per_k": speedup / k,
            "target_met": speedup / k >= TARGET if k == max(ks) else None,
            "ideal_speedup": median_ratio(s.baseline[k], s.encode),
            "baseline_encode_ms_per_image": 1e3
            * statistics.median(
                (t - a) / (config.batch * k)
                for t, a in zip(s.baseline[k], s.baseline_aug[k], strict=True)
            ),
        }
        for k in ks
    ]
    steers = [
        {
            "name": name,
            "kind": kind,
            "k": k,
            "steer_ms": ms(s.steer[name]),
            "maps_ms": ms(s.maps[name]),
            "steer_over_encode": median_ratio(s.steer[name], s.encode),
            "implied_speedup": statistics.median(
                a / (e + t) for a, e, t in zip(s.baseline[k], s.encode, s.steer[name], strict=True)
            ),
        }
        for name, (kind, k) in steer_runs(ks).items()
    ]
    return {
        "size": config.size,
        "batch": config.batch,
        "reps": config.reps,
        "encode_ms": ms(s.encode),
        "encode_ms_per_image": ms(s.encode) / config.batch,
        "tta": tta,
        "steer": steers,
    }


def peak_mb(fn: Callable[[], object], device: torch.device) -> float:
    """Peak memory (MB) allocated by torch on ``device`` during ``fn()`` above what existed
    before it.

    CPU: from ``torch.profiler``'s memory events, each operator's own allocations (at its
    start) and every free, in time order; the running sum's maximum. CUDA: the allocator's
    peak statistic.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 1e6
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    changes = sorted(
        (e.time_range.start, e.self_cpu_memory_usage)
        for e in prof.events()
        if e.self_cpu_memory_usage
    )
    running = peak = 0
    for _, change in changes:
        running += change
        peak = max(peak, running)
    return peak / 1e6


def memory(config: MemoryConfig, seed: int, device: torch.device) -> dict[str, float | int]:
    """Peak memory of ``steer_many`` (first call, and later calls reusing the factors) and of
    ``SteeredTTA.steer`` (with the dispersion score), against resnet50's inference step."""
    torch.manual_seed(seed)
    aug = augment.byol(config.size, view=1)
    generator = torch.Generator().manual_seed(seed)
    params = tta_params(aug, config.k, (config.size, config.size), generator).to(device)
    features = torch.randn(config.batch, config.dim).to(device)
    identity = aug.identity_params(1)[0]
    op = SteeringOperator(config.dim, PARAM_DIM, identity=identity).eval().to(device)
    resnet = torchvision.models.resnet50()
    encoder = nn.Sequential(*list(resnet.children())[:-1]).eval().to(device)
    images = torch.rand(config.batch, 3, config.size, config.size).to(device)
    with torch.no_grad():
        first = peak_mb(lambda: op.steer_many(features, params), device)
        reused = peak_mb(lambda: op.steer_many(features, params), device)
        tta = peak_mb(lambda: SteeredTTA(nn.Identity(), op, params).steer(features), device)
        inference = peak_mb(lambda: encoder(normalise(images)).flatten(1), device)
    output = config.batch * config.k * config.dim * 4 / 1e6
    return {
        **asdict(config),
        "output_mb": output,
        "steer_many_first_mb": first,
        "steer_many_reused_mb": reused,
        "tta_steer_mb": tta,
        "inference_mb": inference,
        "steer_many_over_inference": reused / inference,
        "steer_many_extra_over_inference": (reused - output) / inference,
        "target_met": (reused - output) / inference <= MEMORY_TARGET,
    }


def memory_table(m: dict[str, float | int]) -> list[str]:
    return [
        "Peak memory (MB, torch's allocations during the call: on CPU from `torch.profiler`, "
        "on CUDA the allocator's peak), "
        f"D = {m['dim']}, B = {m['batch']}, K = {m['k']}: the `(B, K, D)` output is "
        f"{m['output_mb']:.0f} MB; the inference step is resnet50 (D = 2048, no classifier, "
        f"eval, no_grad) on B images of {m['size']} px. Target: `steer_many`'s memory beyond "
        f"its output <= {MEMORY_TARGET:.0%} of the inference step's peak.",
        "",
        "| steer_many, first call | steer_many, factors reused | SteeredTTA.steer (+ mean, "
        "dispersion) | inference step | steer_many beyond its output / inference | target met |",
        "|---:|---:|---:|---:|---:|:---:|",
        f"| {m['steer_many_first_mb']:.0f} | {m['steer_many_reused_mb']:.0f} "
        f"| {m['tta_steer_mb']:.0f} | {m['inference_mb']:.0f} "
        f"| {m['steer_many_extra_over_inference']:.1%} | {'yes' if m['target_met'] else 'no'} |",
    ]


def hardware() -> dict[str, object]:
    """The machine (see ``_report.machine``) and torchvision's version."""
    info = {**machine(), "torchvision": torchvision.__version__}
    info["load_average_start"] = info.pop("load_average_1min")
    return info


def tta_table(results: list[dict[str, object]]) -> list[str]:
    lines = [
        "| S | B | K | reps | (a) augment + re-encode | of which aug | (b) encode + steer "
        "| speedup (a)/(b) | speedup / K | ideal (a)/encode(B) | target met |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in results:
        for t in r["tta"]:  # type: ignore[attr-defined]
            met = {True: "yes", False: "no", None: "-"}[t["target_met"]]
            lines.append(
                f"| {r['size']} | {r['batch']} | {t['k']} | {r['reps']} "
                f"| {t['baseline_ms']:.0f} | {t['baseline_aug_ms']:.0f} | {t['steered_ms']:.0f} "
                f"| {t['speedup']:.1f}x | {t['speedup_per_k']:.2f} | {t['ideal_speedup']:.1f}x "
                f"| {met} |"
            )
    return lines


def time_table(results: list[dict[str, object]]) -> list[str]:
    lines = [
        "| S | B | encode(B) | encode(B) per image | (a) encode per image at this K "
        "| operator, K | steer | of which maps | steer / encode(B) "
        "| (a) / (encode(B) + steer) |",
        "|---:|---:|---:|---:|---:|:---|---:|---:|---:|---:|",
    ]
    for r in results:
        per_image = {t["k"]: t["baseline_encode_ms_per_image"] for t in r["tta"]}  # type: ignore[attr-defined]
        for st in r["steer"]:  # type: ignore[attr-defined]
            lines.append(
                f"| {r['size']} | {r['batch']} | {r['encode_ms']:.0f} "
                f"| {r['encode_ms_per_image']:.2f} | {per_image[st['k']]:.2f} | {st['name']} "
                f"| {st['steer_ms']:.1f} | {st['maps_ms']:.1f} | {st['steer_over_encode']:.1%} "
                f"| {st['implied_speedup']:.1f}x |"
            )
    return lines


def markdown(
    hw: dict[str, object], results: list[dict[str, object]], mem: dict[str, float | int]
) -> str:
    """The report: hardware line, the TTA table and where the time goes."""
    sizes = ", ".join(f"B = {r['batch']} at {r['size']} px" for r in results)
    return "\n".join(
        [
            "# Test-time augmentation: augment and re-encode vs encode once and steer "
            f"({hw['device']})",
            "",
            f"On {hw['device']}; {hw['cpu']}, {hw['torch_threads']} of {hw['cpu_count']} "
            "cores used "
            f"(torch.set_num_threads), torch {hw['torch']}, torchvision {hw['torchvision']}, "
            f"{hw['date']}; resnet18 (D = {DIM}, eval, no_grad), {sizes}. Shared machine: "
            f"1-minute load average {hw['load_average_start']:.1f} at the start, "
            f"{hw['load_average_end']:.1f} at the end; OMP_WAIT_POLICY {hw['omp_wait_policy']}; "
            f"the run took {hw['elapsed_s'] / 60:.1f} min.",
            "",
            "Milliseconds, medians over interleaved repetitions. **(a)**: one "
            "`augment.byol(S, view=1)` (bilinear, blur kernel 23) call on the batch repeated "
            "K times, normalise, encode "
            "the B K views, average. **aug**: the augment + normalise part of (a). **(b)**: "
            "encode the B images once, `SteeringOperator(512, 18, kind='low_rank')"
            ".steer_many`, average. Speedups are medians of per-repetition ratios; **ideal** is "
            "(a) / encode(B), the speedup if steering were free. Target: speedup >= "
            f"{TARGET} K at the largest K. Bhardwaj et al. (2023) report steering TTA as "
            f'"{PAPER_CLAIM}" faster; that is the paper\'s claim, not a result measured here.',
            "",
            *tta_table(results),
            "",
            "Where the time goes: one encoder pass on the B images against the steering product "
            "alone (`steer_many` + mean on precomputed features); **maps**: the part of the steer"
            " spent building the maps from the parameters (hypernetwork U, V for low_rank; "
            "`maps()` for exponential and full), 0 when `steer_many` reuses them (one operator "
            "per kind and K, built on its first call). **(a) encode per image**: encoder time of "
            "(a) divided by its B K images. The last column is the TTA speedup each kind would "
            "give, (a) / (encode(B) + steer), per repetition. Under load, OpenMP's default spin-"
            "waiting inflates the small workloads of (b) (see the module docstring): compare "
            "encode(B) per image with (a) encode per image.",
            "",
            *time_table(results),
            "",
            *memory_table(mem),
            "",
        ]
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_output_options(parser, "tta_speed", quick="tiny smoke run (1 repetition)")
    add_device_option(parser, "the encoder, the augmentation and the steering")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    require(MISSING)
    config = replace(QUICK if args.quick else FULL, seed=args.seed)
    out = output_dir(args, "tta_speed")
    print(f"seed {config.seed}; writing to {out}")
    torch.set_num_threads(THREADS)
    start = time.perf_counter()
    hw = {**hardware(), "device": str(args.device)}
    results, raw = [], []
    for size_config in config.sizes:
        samples = measure(size_config, config.ks, config.seed, args.device)
        results.append(summarise(size_config, config.ks, samples))
        raw.append({"config": asdict(size_config), "samples": asdict(samples)})
        print(f"S={size_config.size}: {json.dumps(results[-1])}", flush=True)
    mem = memory(config.memory, config.seed, args.device)
    print(f"memory: {json.dumps(mem)}", flush=True)
    hw.update(elapsed_s=time.perf_counter() - start, load_average_end=os.getloadavg()[0])
    report = markdown(hw, results, mem)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tta_speed.md").write_text(report)
    payload = {
        "hardware": hw,
        "config": asdict(config),
        "target_speedup_per_k": TARGET,
        "paper_claim": PAPER_CLAIM,
        "results": results,
        "memory": mem,
        "raw_seconds": raw,
    }
    (out / "tta_speed.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(report)
    print(f"wrote {out / 'tta_speed.md'} and {out / 'tta_speed.json'}")


if __name__ == "__main__":
    main()
