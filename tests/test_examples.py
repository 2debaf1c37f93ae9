"""The lightly examples run end to end in smoke mode: shipped data, CPU, no download."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from equimod_plugin.integrations.lightly import OriginalTransform

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
SCRIPTS = {  # script -> the epochs whose line it prints in smoke mode (2 epochs)
    "lightly_byol.py": ["00", "01"],
    "lightly_simclr.py": ["00", "01"],
    "lightly_byol_lightning.py": ["01"],  # Lightning prints the last epoch's means
    "lightly_simclr_lightning.py": ["01"],
}
EPOCH_LINE = re.compile(r"epoch: (\d+), loss: ([^,\s]+), (equimod/[^\r\n]*)")
EQUIMOD_METRICS = {"equimod/loss", "equimod/absolute", "equimod/relative"}


def run_smoke(script: str) -> subprocess.CompletedProcess[str]:
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--smoke"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.parametrize("script", list(SCRIPTS))
def test_smoke_run_prints_finite_losses_and_equivariance_metrics(script: str) -> None:
    result = run_smoke(script)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-2000:]}\n{result.stderr}"
    lines = EPOCH_LINE.findall(result.stdout)
    assert [epoch for epoch, _, _ in lines] == SCRIPTS[script], result.stdout[-2000:]
    for _, loss, metrics in lines:
        assert math.isfinite(float(loss))
        values = dict(pair.split(": ") for pair in metrics.split(", "))
        assert EQUIMOD_METRICS <= values.keys()
        assert all(math.isfinite(float(value)) for value in values.values())


@pytest.mark.parametrize("script", ["lightly_byol.py", "lightly_simclr.py"])
def test_plain_examples_change_exactly_three_lines(script: str) -> None:
    lines = (EXAMPLES / script).read_text().splitlines()
    assert sum(line.endswith("  # equimod") for line in lines) == 3


@pytest.mark.exactness
def test_smoke_data_yields_originals_like_cifar10() -> None:
    spec = importlib.util.spec_from_file_location("examples_common", EXAMPLES / "_common.py")
    assert spec is not None and spec.loader is not None
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    dataset = common.FashionMNISTSample(OriginalTransform(32), n=20)
    assert len(dataset) == 20
    image, label = dataset[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1 and image.max() > 0
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])  # grey as RGB
    assert isinstance(label, int) and 0 <= label < 10
