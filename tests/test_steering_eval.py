"""experiments/steering_eval.py --smoke trains tiny reproduce_cpu runs of every method, then
evaluates them and writes its table and JSON."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
METHODS = {
    "random-init",
    "byol",
    "byol+equimod",
    "byol+steering",
    "byol+steering-nce",
    "byol+steering-nce-proj",
    "byol+steering-nce-w3",
    "simclr",
    "simclr+steering-nce",
}
SCORES = {"dispersion", "knn_distance", "knn_distance_tta", "steering_residual"}


def share(value: object) -> bool:
    return isinstance(value, float) and math.isfinite(value) and -1.0 <= value <= 1.0


@pytest.mark.slow
def test_steering_eval_smoke_evaluates_every_method(tmp_path):
    pytest.importorskip("imagecorruptions", reason="needs pip install imagecorruptions-imaug")
    result = subprocess.run(
        [sys.executable, "experiments/steering_eval.py", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "steering_eval.json").read_text())
    assert {r["method"] for r in report["runs"]} == METHODS
    corrupted = {f"{name}/1" for name in report["config"]["corruptions"]}
    for run in report["runs"]:
        joint = "+steering" in run["method"]
        keys = {"cos_unsteered", "cos_steered_posthoc", "cos_unsteered_posthoc"}
        keys |= {"cos_steered_joint"} if joint else set()
        assert all(share(run[k]) for k in keys), run
        assert ("cos_steered_joint" in run) == joint
        for probe in ("probe_corrupted", "probe_corrupted_tta"):
            assert set(run[probe]) == corrupted and 0 <= run[f"{probe}_mean"] <= 1
        assert set(run["auc"]) == SCORES and set(run["auc_mean"]) == SCORES
        assert all(0 <= v <= 1 for v in run["auc_mean"].values())
    table = (tmp_path / "steering_eval.md").read_text()
    assert "| OOD AUC, steering residual |" in table and "## Goals" in table
    assert "| byol+steering-nce-proj |" in table and "| simclr+steering-nce |" in table
