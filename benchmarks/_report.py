"""What every benchmark report records about the machine, and where it writes."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
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
        "load_average_1min": os.getloadavg()[0],
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def output_dir(args: argparse.Namespace, name: str) -> Path:
    """``--out``, else a new temporary directory for ``--quick``, else ``benchmarks/results``."""
    if args.out:
        return Path(args.out)
    if args.quick:
        return Path(tempfile.mkdtemp(prefix=f"{name}_"))
    return Path(__file__).parent / "results"
