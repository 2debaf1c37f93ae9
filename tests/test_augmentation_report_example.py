"""experiments/augmentation_report.py --smoke trains, reports, writes its table, JSON and figure."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KNOBS = [
    "crop_scale",
    "crop_x",
    "crop_y",
    "flip",
    "brightness",
    "contrast",
    "saturation",
    "hue",
    "grayscale",
    "blur_sigma",
    "solarize",
]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "experiments/augmentation_report.py", "--smoke", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.slow
def test_augmentation_report_smoke_writes_table_json_and_figure(tmp_path):
    checkpoint = tmp_path / "model.pt"
    result = run("--out", str(tmp_path / "trained"), "--checkpoint", str(checkpoint))
    assert result.returncode == 0, result.stderr[-2000:]
    assert checkpoint.stat().st_size > 1000
    report = json.loads((tmp_path / "trained" / "report.json").read_text())
    rows = report["report"]["rows"]
    assert list(dict.fromkeys(r["sweep"] for r in rows)) == KNOBS
    assert report["report"]["num_images"] == report["config"]["test_images"]
    for r in rows:
        assert math.isfinite(r["move_cos"]) and r["move_cos"] >= 0
        assert r["head_cos_pred"] is not None and r["steer_cos_pred"] is not None
        if r["identity"]:
            assert r["move_cos"] == 0.0 and r["steer_cos_pred"] == 1.0
    assert len(report["training"]) == 1 and math.isfinite(report["training"][0]["loss"])
    table = (tmp_path / "trained" / "report.md").read_text()
    assert "| crop_scale | area fraction" in table and "| solarize | 1 |" in table
    assert (tmp_path / "trained" / "report.png").stat().st_size > 1000

    # the checkpoint is loaded instead of training again: the same moves
    result = run("--out", str(tmp_path / "loaded"), "--checkpoint", str(checkpoint))
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = json.loads((tmp_path / "loaded" / "report.json").read_text())
    assert loaded["loaded"] and loaded["training"] == []
    assert [r["move_cos"] for r in loaded["report"]["rows"]] == [r["move_cos"] for r in rows]
