"""experiments/steering_eval.py --smoke trains both runs and writes its table, JSON and figure."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COSINES = {"cos_between_images", "cos_between_images_raw", "cos_unsteered", "cos_steered_posthoc"}
MODEL_KEYS = COSINES | {"probe_class", "probe_hue", "probe_corrupted_mean"}
SCORES = {"dispersion_posthoc", "knn_distance"}
JOINT_KEYS = {"cos_steered_joint"}
JOINT_SCORES = {"dispersion_joint"}


def finite_share(value: object) -> bool:
    return isinstance(value, float) and math.isfinite(value) and -1.0 <= value <= 1.0


@pytest.mark.slow
def test_steering_eval_smoke_writes_table_json_and_figure(tmp_path):
    pytest.importorskip("imagecorruptions", reason="needs pip install imagecorruptions-imaug")
    result = subprocess.run(
        [sys.executable, "experiments/steering_eval.py", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "steering_eval.json").read_text())
    assert set(report["models"]) == {"baseline", "steered"}
    corrupted = {f"{name}/1" for name in report["config"]["corruptions"]}
    for name, metrics in report["models"].items():
        scores = SCORES | (JOINT_SCORES if name == "steered" else set())
        keys = MODEL_KEYS | (JOINT_KEYS if name == "steered" else set())
        assert all(finite_share(metrics[key]) for key in keys), metrics
        assert set(metrics["probe_corrupted"]) == corrupted
        assert set(metrics["auc"]) == scores and set(metrics["auc_mean"]) == scores
        aucs = [
            *metrics["auc_mean"].values(),
            *(v for s in scores for v in metrics["auc"][s].values()),
        ]
        assert all(finite_share(v) and v >= 0 for v in aucs)
        assert all(math.isfinite(epoch["loss"]) for epoch in report["training"][name])
    assert not JOINT_KEYS & set(report["models"]["baseline"])
    assert report["minutes"]["total"] > 0
    table = (tmp_path / "steering_eval.md").read_text()
    assert "| linear probe, class (clean) |" in table and "| gaussian_noise/1 |" in table
    assert (tmp_path / "steering_eval.png").stat().st_size > 1000
