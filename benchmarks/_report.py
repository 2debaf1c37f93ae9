"""What every benchmark shares: the machine it records, where it writes, its optional imports.

Only the standard library and torch: ``--help`` works without the ``bench`` extra.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch


def machine() -> dict[str, object]:
    """CPU model, cores, torch threads, OpenMP wait policy, 1-minute load, versions, date."""
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
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        # how freed memory is returned to the OS (glibc malloc), which sets how often large
        # tensors are page-faulted afresh: see step_time.py
        "allocator": " ".join(
            f"{k}={os.environ[k]}"
            for k in ("LD_PRELOAD", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
            if k in os.environ
        )
        or "glibc malloc, default settings",
        "load_average_1min": os.getloadavg()[0],
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def synchronize() -> None:
    """Wait for queued CUDA work, if CUDA is in use (timings of a GPU run); a no-op on CPU."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def torch_device(name: str) -> torch.device:
    """The type of ``--device``: a bad name is an error of the option, not a traceback."""
    try:
        return torch.device(name)
    except RuntimeError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_device_option(parser: argparse.ArgumentParser, what: str) -> None:
    """Add ``--device`` (default cpu), where ``what`` runs (``gpu_check.sh``: cuda)."""
    parser.add_argument(
        "--device",
        type=torch_device,
        default=torch.device("cpu"),
        help=f"where {what} runs (default: cpu; benchmarks/gpu_check.sh passes cuda)",
    )


def add_output_options(parser: argparse.ArgumentParser, name: str, quick: str) -> None:
    """Add ``--out``, ``--quick`` (its help: ``quick``) and ``--seed``, alike in every benchmark."""
    parser.add_argument(
        "--out",
        type=Path,
        help=f"output directory (default: a new folder runs/{name}-<time> under the working "
        "directory; with --quick, a new temporary directory; the committed results are made with "
        "--out benchmarks/results)",
    )
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds the images, weights and augmentations (default: %(default)s)",
    )


def output_dir(args: argparse.Namespace, name: str) -> Path:
    """``--out``; else a new temporary directory for ``--quick``; else a new folder
    ``runs/<name>-<YYYYmmdd-HHMMSS>`` under the working directory (created when written).

    Never ``benchmarks/results``, the committed reports: those are re-made with ``--out``.
    """
    if args.out:
        return Path(args.out)
    if args.quick:
        return Path(tempfile.mkdtemp(prefix=f"{name}_"))
    return Path.cwd() / "runs" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def require(missing: ImportError | None) -> None:
    """Exit naming the package to install (the ``bench`` extra) if an optional import failed.

    The scripts import their optional packages in ``try`` and call this after parsing the
    command line, so that ``--help`` works without them.
    """
    if missing is not None:
        script = Path(sys.argv[0]).name
        raise SystemExit(
            f"{script} needs {missing.name or missing}: pip install 'equimod-plugin[bench]'"
        )
