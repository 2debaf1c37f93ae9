"""Training-step time of lightly's BYOL with and without the EquiMod term, on CPU.

What is measured, per backbone and batch size B of 32 x 32 images, in one run with
``torch.set_num_threads(2)`` (``--threads`` to change):

- **plain**: one step of lightly's BYOL as in its ``examples/pytorch/byol.py`` (online
  backbone + ``BYOLProjectionHead(D, 1024, 256)`` + ``BYOLPredictionHead(256, 1024, 256)``,
  momentum copies updated with ``update_momentum``, symmetric ``NegativeCosineSimilarity``,
  ``SGD(lr=0.06)``) on two views given as precomputed normalised tensors, so no
  augmentation cost is included.
- **wrapped (full)**: the same model with ``attach(model, (augment.byol(32, view=1,
  variant="cifar"), augment.byol(32, view=2, variant="cifar")))`` (equivariance head at its
  default widths: hidden 2048, output 128). One step is
  ``x0, x1 = model.equivariance.views(images)``, the same BYOL code,
  ``+ model.equivariance.loss()``, backward and SGD step. The backbone runs
  once on ``cat[original, view1, view2]`` (3B images) instead of twice on B.
- **aug**: the time spent inside the two augmentation modules during that wrapped step,
  measured in the same step with forward pre/post hooks on them.
- **wrapped - aug**: wrapped (full) minus aug, the step cost comparable to plain.
- **head**: ``EquiModTerm`` forward + backward alone (``model.equivariance.term(features_o,
  features_views, params)`` on precomputed features that require grad), the cost of the
  equivariance head and its NT-Xent loss.

Backbones: a 6-layer, 32-wide convnet (conv3x3-BN-ReLU x 6 at full resolution, global average
pool, D = 32); torchvision's resnet18 with its ImageNet stem (D = 512), as lightly's example
runs it on 32 px images; and ``resnet18-cifar``, resnet18 with the CIFAR stem the official
EquiMod code and solo-learn's CIFAR recipes train on 32 px images (conv1 3x3 stride 1, no
max-pool; D = 512). After warm-up the three measurements are interleaved (plain, wrapped,
head, plain, ...); the report gives medians over repetitions, and the ratios wrapped / plain
and head / (wrapped - aug) are computed per interleaved repetition, then their median taken.
Targets: (wrapped - aug) / plain <= 1.45 and head <= 5 % of the wrapped step.

The bound the computation sets: one step of each kind also runs under
``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions, forward and
backward; the FLOPs inside the augmentation calls are counted apart and left out), and the
report gives the FLOP ratio (wrapped - aug) / plain and the head's FLOP share. The backbone
alone would give 11/8 = 1.375 (the online backbone's forward and backward see 3B images
instead of 2B, the momentum backbone's forward still 2B); the equivariance head adds its
own FLOPs: its projector (hidden 2048, as in the official code) on 3B rows is 7-11 % of the
step where the backbone is small (convnet6, or resnet18's ImageNet stem on 32 px images,
which shrinks the maps to 8 x 8 at once), and ~1 % next to resnet18-cifar.
A step is compute-bound when its time ratio is near its FLOP ratio.

The memory allocator matters on CPU. torch takes large tensors from glibc's malloc, which
maps an allocation above its threshold (dynamic, at most 32 MB by default) fresh from the OS
and unmaps it when freed, so the next step page-faults it again. At B = 128 the wrapped
step's convnet6 activations over 3B images (48 MB per layer) are above that threshold and the
plain step's (16 MB) are not: the wrapped step then pays page faults the plain one does not.
Keeping freed memory in the process (``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_``
set large, or jemalloc / tcmalloc through ``LD_PRELOAD``, as PyTorch's CPU performance guide
recommends) removes that cost. The report names the allocator settings it ran with; the
committed results have one run with glibc's defaults (``benchmarks/results``) and one with
freed memory kept (``benchmarks/results/malloc-kept``):

    MALLOC_MMAP_THRESHOLD_=34359738368 MALLOC_TRIM_THRESHOLD_=68719476736 \
        PYTHONPATH=. python benchmarks/step_time.py --out benchmarks/results/malloc-kept

Process CPU time (all threads) is recorded next to wall-clock time as a cross-check. On a
machine shared with other jobs, two OpenMP threads on two cores stall at every parallel
region while one of them is descheduled; this adds a cost per operator call, which favours
the wrapped step (one online backbone call on 3B images instead of two on B), most for
resnet18 at 32 px whose feature maps are tiny. Compare with ``--threads 1`` there.

With ``--profile``, one plain and one wrapped step per case also run under
``torch.profiler`` and the top operators by self CPU time are appended to the report.

``--device cuda`` runs the models and the augmentation on the GPU (``benchmarks/gpu_check.sh``);
the process CPU time then measures the host's share. Run (needs ``pip install
"equimod-plugin[bench]"``: lightly)::

    PYTHONPATH=. python benchmarks/step_time.py            # ~5 min of CPU on 2 cores
    PYTHONPATH=. python benchmarks/step_time.py --quick    # smoke run, temp dir
    PYTHONPATH=. python benchmarks/step_time.py --batch-sizes 128 256 --profile
    PYTHONPATH=. python benchmarks/step_time.py --out benchmarks/results  # the committed run

Writes ``step_time.md`` and ``step_time.json`` to ``--out`` (default: a new folder
``runs/step_time-<time>`` under the working directory; with ``--quick``, a new temporary
directory). The committed results in ``benchmarks/results`` are re-made only with the
explicit ``--out benchmarks/results`` above.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

import torch
from _report import add_device_option, add_output_options, machine, output_dir, require, synchronize
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from equimod_plugin import augment
from equimod_plugin.augment.normalize import IMAGENET_NORMALIZE

try:  # the `bench` extra, required by main() after the command line: --help works without it
    import lightly
    import torchvision
    from lightly.loss import NegativeCosineSimilarity
    from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum

    from equimod_plugin.integrations.lightly import attach
except ImportError as error:
    MISSING: ImportError | None = error
else:
    MISSING = None

THREADS = 2
SIZE = 32
LR = 0.06
MOMENTUM = 0.996  # lightly's cosine_schedule(epoch, epochs, 0.996, 1) in the first epoch
RATIO_TARGET = 1.45
HEAD_SHARE_TARGET = 0.05
PROFILE_ROWS = 12
MEAN = torch.tensor(IMAGENET_NORMALIZE[0]).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_NORMALIZE[1]).view(1, 3, 1, 1)


@dataclass(frozen=True)
class Config:
    """Backbones, batch sizes, warm-up steps, timed repetitions and the seed."""

    backbones: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    warmup: int
    reps: int
    seed: int = 0
    device: str = "cpu"


FULL = Config(
    backbones=("convnet6", "resnet18", "resnet18-cifar"), batch_sizes=(128,), warmup=1, reps=10
)
QUICK = replace(FULL, batch_sizes=(8,), reps=2)


@dataclass(frozen=True)
class Samples:
    """Seconds per interleaved repetition of each measurement, on one clock."""

    plain: list[float]
    wrapped: list[float]
    aug: list[float]
    head: list[float]

    @property
    def net(self) -> list[float]:
        """Wrapped step minus the time spent in the two augmentation calls."""
        return [w - a for w, a in zip(self.wrapped, self.aug, strict=True)]

    def summary(self) -> dict[str, float]:
        med = statistics.median
        reps = list(zip(self.plain, self.wrapped, self.net, self.head, strict=True))
        return {
            "plain_ms": 1e3 * med(self.plain),
            "wrapped_ms": 1e3 * med(self.wrapped),
            "aug_ms": 1e3 * med(self.aug),
            "net_ms": 1e3 * med(self.net),
            "head_ms": 1e3 * med(self.head),
            "ratio_full": med(w / p for p, w, _, _ in reps),
            "ratio_net": med(n / p for p, _, n, _ in reps),
            "head_share_net": med(h / n for _, _, n, h in reps),
            "head_share_full": med(h / w for _, w, _, h in reps),
        }


@dataclass(frozen=True)
class Timing:
    """Wall-clock and process CPU samples of one backbone and batch size, and its FLOPs."""

    backbone: str
    batch_size: int
    wall: Samples
    cpu: Samples
    flops: Flops

    def raw(self) -> dict[str, object]:
        return {
            "backbone": self.backbone,
            "batch_size": self.batch_size,
            "flops": {
                **asdict(self.flops),
                "ratio": self.flops.ratio,
                "head_share": self.flops.head_share,
            },
            **{
                clock: {**asdict(samples), "net": samples.net, **samples.summary()}
                for clock, samples in (("wall", self.wall), ("cpu", self.cpu))
            },
        }


class BYOL(nn.Module):
    """lightly's BYOL example model, with the backbone's feature width as an argument."""

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = BYOLProjectionHead(feature_dim, 1024, 256)
        self.prediction_head = BYOLPredictionHead(256, 1024, 256)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)

    def forward(self, x: Tensor) -> Tensor:
        y = self.backbone(x).flatten(start_dim=1)
        z = self.projection_head(y)
        return self.prediction_head(z)  # type: ignore[no-any-return]

    def forward_momentum(self, x: Tensor) -> Tensor:
        y = self.backbone_momentum(x).flatten(start_dim=1)
        z = self.projection_head_momentum(y)
        return z.detach()  # type: ignore[no-any-return]


def convnet6(width: int = 32, depth: int = 6) -> nn.Sequential:
    """``depth`` conv3x3-BN-ReLU blocks of ``width`` channels, then global average pooling."""
    layers: list[nn.Module] = []
    channels = 3
    for _ in range(depth):
        layers += [
            nn.Conv2d(channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())


def resnet18() -> nn.Sequential:
    """torchvision's resnet18 without its classifier (ImageNet stem), as in lightly's example."""
    resnet = torchvision.models.resnet18()
    return nn.Sequential(*list(resnet.children())[:-1])


def resnet18_cifar() -> nn.Sequential:
    """resnet18 with the CIFAR stem of the official EquiMod code (``src/model.py``) and
    solo-learn's CIFAR recipes: conv1 3x3 stride 1, no max-pool."""
    resnet = torchvision.models.resnet18()
    resnet.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    resnet.maxpool = nn.Identity()
    return nn.Sequential(*list(resnet.children())[:-1])


BACKBONES: dict[str, tuple[Callable[[], nn.Module], int]] = {
    "convnet6": (convnet6, 32),
    "resnet18": (resnet18, 512),
    "resnet18-cifar": (resnet18_cifar, 512),
}


def byol_loss(model: nn.Module, x0: Tensor, x1: Tensor, criterion: nn.Module) -> Tensor:
    """The body of lightly's BYOL training loop: momentum update and symmetric loss."""
    update_momentum(model.backbone, model.backbone_momentum, m=MOMENTUM)
    update_momentum(model.projection_head, model.projection_head_momentum, m=MOMENTUM)
    p0 = model(x0)
    z0 = model.forward_momentum(x0)
    p1 = model(x1)
    z1 = model.forward_momentum(x1)
    return 0.5 * (criterion(p0, z1) + criterion(p1, z0))  # type: ignore[no-any-return]


def optimize(loss: Tensor, optimizer: torch.optim.Optimizer) -> None:
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def clocks() -> tuple[float, float]:
    """Wall-clock and process CPU time (all threads), in seconds, after queued GPU work."""
    synchronize()
    return time.perf_counter(), time.process_time()


def seconds(step: Callable[[], None]) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one call."""
    wall, cpu = clocks()
    step()
    wall_end, cpu_end = clocks()
    return wall_end - wall, cpu_end - cpu


class HookTimer:
    """Wall-clock and CPU seconds spent inside the forward calls of some modules."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.wall = self.cpu = 0.0
        self._start = (0.0, 0.0)
        for module in modules:
            module.register_forward_pre_hook(self._enter)
            module.register_forward_hook(self._exit)

    def _enter(self, *_: object) -> None:
        self._start = clocks()

    def _exit(self, *_: object) -> None:
        wall, cpu = clocks()
        self.wall += wall - self._start[0]
        self.cpu += cpu - self._start[1]

    def pop(self) -> tuple[float, float]:
        """The seconds accumulated since the last call, then reset."""
        seconds = (self.wall, self.cpu)
        self.wall = self.cpu = 0.0
        return seconds


@dataclass
class Case:
    """The three steps of one backbone and batch size, ready to run."""

    plain: Callable[[], None]
    wrapped: Callable[[], None]
    head: Callable[[], None]
    augments: list[nn.Module]
    aug_timer: HookTimer


def build_case(backbone: str, batch_size: int, device: str = "cpu") -> Case:
    """Plain and wrapped BYOL with equal initial weights, their optimizers and inputs, on
    ``device``."""
    make_backbone, feature_dim = BACKBONES[backbone]
    plain_model = BYOL(make_backbone(), feature_dim).to(device)
    wrapped_model = copy.deepcopy(plain_model)
    attach(
        wrapped_model,
        (
            augment.byol(SIZE, view=1, variant="cifar"),
            augment.byol(SIZE, view=2, variant="cifar"),
        ),
    )
    criterion = NegativeCosineSimilarity()
    plain_opt = torch.optim.SGD(plain_model.parameters(), lr=LR)
    wrapped_opt = torch.optim.SGD(wrapped_model.parameters(), lr=LR)
    images = torch.rand(batch_size, 3, SIZE, SIZE).to(device)
    mean, std = MEAN.to(device), STD.to(device)
    x0, x1 = ((aug(images)[0] - mean) / std for aug in wrapped_model.equivariance.augments)
    augments = list(wrapped_model.equivariance.augments)

    def plain() -> None:
        optimize(byol_loss(plain_model, x0, x1, criterion), plain_opt)

    def wrapped() -> None:
        v0, v1 = wrapped_model.equivariance.views(images)
        loss = byol_loss(wrapped_model, v0, v1, criterion) + wrapped_model.equivariance.loss()
        optimize(loss, wrapped_opt)

    return Case(plain, wrapped, head_step(wrapped_model, images), augments, HookTimer(augments))


def head_step(model: BYOL, images: Tensor) -> Callable[[], None]:
    """EquiModTerm forward + backward on features and parameters of one real batched pass."""
    branch = model.equivariance
    with torch.no_grad():
        branch.views(images)
    assert branch.step is not None
    features = [f.flatten(1) for f in branch.step.features if f is not None]
    params = branch.step.params
    branch.end_step()
    features_o = features[0].requires_grad_()
    features_views = torch.stack(features[1:]).requires_grad_()

    def head() -> None:
        branch.term(features_o, features_views, params).backward()
        branch.term.zero_grad(set_to_none=True)  # as the wrapped step's optimizer does

    return head


@dataclass(frozen=True)
class Flops:
    """Floating-point operations of one step of each kind: matmuls and convolutions, forward
    and backward, as ``torch.utils.flop_counter`` counts them (elementwise work is not)."""

    plain: int
    wrapped: int
    aug: int
    head: int

    @property
    def ratio(self) -> float:
        """(wrapped - aug) / plain: the step-time ratio of a compute-bound step."""
        return (self.wrapped - self.aug) / self.plain

    @property
    def head_share(self) -> float:
        """head / (wrapped - aug)."""
        return self.head / (self.wrapped - self.aug)


def step_flops(step: Callable[[], None]) -> int:
    """FLOPs of one call."""
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


@contextmanager
def flops_inside(modules: Sequence[nn.Module]) -> Iterator[list[int]]:
    """The FLOPs of each forward call of ``modules`` made inside the block, as a list."""
    calls: list[int] = []
    counters: list[FlopCounterMode] = []

    def enter(*_: object) -> None:
        counters.append(FlopCounterMode(display=False))
        counters[-1].__enter__()

    def leave(*_: object) -> None:
        counter = counters.pop()
        counter.__exit__(None, None, None)
        calls.append(int(counter.get_total_flops()))

    handles = [m.register_forward_pre_hook(enter) for m in modules]
    handles += [m.register_forward_hook(leave) for m in modules]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def count_flops(case: Case) -> Flops:
    """FLOPs of one plain, wrapped and head step; ``aug``: those inside the augmentation."""
    with flops_inside(case.augments) as aug:
        wrapped = step_flops(case.wrapped)
    return Flops(step_flops(case.plain), wrapped, sum(aug), step_flops(case.head))


def time_case(backbone: str, batch_size: int, config: Config) -> tuple[Timing, Case]:
    """Warm-up, one step of each kind counting FLOPs, then interleaved timed repetitions of
    plain, wrapped and head."""
    torch.manual_seed(config.seed)
    case = build_case(backbone, batch_size, config.device)
    for _ in range(config.warmup):
        case.plain()
        case.wrapped()
        case.head()
    flops = count_flops(case)
    case.aug_timer.pop()
    series: dict[str, list[tuple[float, float]]] = {
        m: [] for m in ("plain", "wrapped", "aug", "head")
    }
    for _ in range(config.reps):
        series["plain"].append(seconds(case.plain))
        series["wrapped"].append(seconds(case.wrapped))
        series["aug"].append(case.aug_timer.pop())
        series["head"].append(seconds(case.head))
    wall, cpu = (Samples(**{m: [t[k] for t in ts] for m, ts in series.items()}) for k in (0, 1))
    return Timing(backbone, batch_size, wall, cpu, flops), case


def top_ops(step: Callable[[], None]) -> str:
    """torch.profiler table of one call's operators, by self CPU time."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return str(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=PROFILE_ROWS))


def hardware(config: Config) -> dict[str, object]:
    """The machine (see ``_report.machine``), lightly's version and the run settings."""
    return {
        **machine(),
        "lightly": lightly.__version__,
        "batch_sizes": ", ".join(str(b) for b in config.batch_sizes),
        "image_size": SIZE,
        "reps": config.reps,
        "warmup": config.warmup,
        "seed": config.seed,
        "device": config.device,
    }


def markdown(hw: dict[str, object], timings: list[Timing], profiles: dict[str, str]) -> str:
    """The report: hardware line, wall-clock table, CPU-time table and any profiles."""
    lines = [
        f"# BYOL training step with and without the EquiMod term ({hw['device']})",
        "",
        f"On {hw['device']}; {hw['cpu']}, {hw['torch_threads']} of {hw['cpu_count']} cores used "
        f"(torch.set_num_threads), allocator: {hw['allocator']}, torch {hw['torch']}, "
        f"lightly {hw['lightly']}, "
        f"{hw['date']}; batch size B = {hw['batch_sizes']}, images {SIZE} x {SIZE}, "
        f"{hw['reps']} interleaved repetitions after {hw['warmup']} warm-up.",
        "",
        "Wall-clock milliseconds per step, medians. **plain**: lightly's BYOL step on two "
        "precomputed views. **wrapped**: the full wrapped step, making the two views included. "
        "**aug**: time inside the two augmentation calls of that step. **wrapped - aug**: the "
        "wrapped step without augmentation, the one comparable to plain. **head**: "
        "EquiModTerm forward + backward alone. Ratios: medians of per-repetition ratios. "
        f"Targets: (wrapped - aug) / plain <= {RATIO_TARGET}x and head / (wrapped - aug) <= "
        f"{HEAD_SHARE_TARGET:.0%}. **FLOP ratio** and **head FLOP share**: the same two ratios "
        "for a step whose time is proportional to its matmul and convolution FLOPs (forward "
        "and backward, counted by torch.utils.flop_counter on one step of each kind), the "
        "bound the computation itself sets.",
        "",
        "| backbone | B | plain | wrapped | aug | wrapped - aug | head | wrapped / plain "
        "| (wrapped - aug) / plain | head / (wrapped - aug) | head / wrapped | targets met "
        "| FLOP ratio | head FLOP share |",
        "|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|---:|---:|",
    ]
    for t in timings:
        s = t.wall.summary()
        met = s["ratio_net"] <= RATIO_TARGET and s["head_share_net"] <= HEAD_SHARE_TARGET
        lines.append(
            f"| {t.backbone} | {t.batch_size} | {s['plain_ms']:.0f} | {s['wrapped_ms']:.0f} "
            f"| {s['aug_ms']:.0f} | {s['net_ms']:.0f} | {s['head_ms']:.0f} "
            f"| {s['ratio_full']:.2f}x | {s['ratio_net']:.2f}x | {s['head_share_net']:.1%} "
            f"| {s['head_share_full']:.1%} | {'yes' if met else 'no'} "
            f"| {t.flops.ratio:.3f}x | {t.flops.head_share:.1%} |"
        )
    lines += [
        "",
        "Cross-check on process CPU time (all threads; less sensitive to other jobs on a "
        "shared machine, but counts OpenMP spin-waiting), same steps:",
        "",
        "| backbone | B | plain | wrapped - aug | head | (wrapped - aug) / plain "
        "| head / (wrapped - aug) |",
        "|:---|---:|---:|---:|---:|---:|---:|",
    ]
    for t in timings:
        s = t.cpu.summary()
        lines.append(
            f"| {t.backbone} | {t.batch_size} | {s['plain_ms']:.0f} | {s['net_ms']:.0f} "
            f"| {s['head_ms']:.0f} | {s['ratio_net']:.2f}x | {s['head_share_net']:.1%} |"
        )
    for name, table in profiles.items():
        lines += ["", f"Top operators by self CPU time, {name}:", "", "```", table, "```"]
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_output_options(parser, "step_time", quick="tiny smoke run (B = 8, 2 reps)")
    add_device_option(parser, "both models and the augmentation")
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        help=f"batch sizes to time (default {' '.join(map(str, FULL.batch_sizes))}; --quick: 8)",
    )
    parser.add_argument(
        "--threads", type=int, default=THREADS, help="torch.set_num_threads (default %(default)s)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="append torch.profiler top operators per case"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    require(MISSING)
    config = replace(QUICK if args.quick else FULL, seed=args.seed, device=str(args.device))
    if args.batch_sizes:
        config = replace(config, batch_sizes=tuple(args.batch_sizes))
    out = output_dir(args, "step_time")
    print(f"seed {config.seed}; writing to {out}")
    torch.set_num_threads(args.threads)
    hw = hardware(config)
    timings, profiles = [], {}
    for backbone in config.backbones:
        for batch_size in config.batch_sizes:
            timing, case = time_case(backbone, batch_size, config)
            timings.append(timing)
            print(f"{backbone} B={batch_size}: {timing.wall.summary()}", flush=True)
            if args.profile:
                for name, step in (("plain", case.plain), ("wrapped", case.wrapped)):
                    profiles[f"{name} step, {backbone}, B = {batch_size}"] = top_ops(step)
    report = markdown(hw, timings, profiles)
    out.mkdir(parents=True, exist_ok=True)
    (out / "step_time.md").write_text(report)
    raw = {
        "hardware": hw,
        "config": asdict(config),
        "targets": {"ratio": RATIO_TARGET, "head_share": HEAD_SHARE_TARGET},
        "timings": [t.raw() for t in timings],
        "profiles": profiles,
    }
    (out / "step_time.json").write_text(json.dumps(raw, indent=2) + "\n")
    print(report)
    print(f"wrote {out / 'step_time.md'} and {out / 'step_time.json'}")


if __name__ == "__main__":
    main()
