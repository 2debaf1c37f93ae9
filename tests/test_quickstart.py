"""The README's main command: the quickstart trains, probes and reports equivariance."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_smoke_run_reports_probe_and_equivariance():
    result = subprocess.run(
        [sys.executable, "examples/quickstart.py", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    loss = re.search(r"epoch: 00, loss: ([0-9.]+)", out)
    assert loss and float(loss.group(1)) > 0
    probes = re.findall(r"linear probe, [a-z ,]+: +([0-9.]+)%", out)
    assert len(probes) == 2 and all(10 <= float(p) <= 100 for p in probes)
    assert re.search(r"equivariance on 512 held-out images: absolute -?[0-9.]+", out)
