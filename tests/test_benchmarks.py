"""The benchmarks' quick modes run, and their parts add up (no timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_step_time_quick_run_measures_the_augmentation_inside_the_step(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "benchmarks/step_time.py", "--quick", "--out", str(tmp_path)]
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads((tmp_path / "step_time.json").read_text())
    for timing in report["timings"]:
        for clock in ("wall", "cpu"):
            t = timing[clock]
            # the augmentation is seen inside the wrapped step (it read 0 ms when the branch
            # bypassed the augmentation modules' forward), and is only part of it
            assert all(a > 0 for a in t["aug"]), (timing["backbone"], clock)
            assert all(a < w for a, w in zip(t["aug"], t["wrapped"], strict=True))
            net = [w - a for w, a in zip(t["wrapped"], t["aug"], strict=True)]
            assert t["net"] == pytest.approx(net)
