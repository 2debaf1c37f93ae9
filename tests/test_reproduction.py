"""experiments/reproduce_cpu.py: the baselines' monitor term, and a smoke run of three methods."""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"

RUNS = ["tint24/random-init", "tint24/byol", "tint24/byol+equimod", "photo24/simclr+equimod"]


@pytest.fixture(scope="module")
def experiments() -> Iterator[ModuleType]:
    """``reproduce_cpu`` imported as ``python experiments/reproduce_cpu.py`` does: its folder first
    on sys.path (for ``_tinted``); the path and both modules are removed afterwards."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(EXPERIMENTS))
        yield importlib.import_module("reproduce_cpu")
    for name in ("reproduce_cpu", "_tinted"):
        sys.modules.pop(name, None)


def test_experiments_use_the_quickstarts_model(experiments: ModuleType) -> None:
    # the experiments import the model of the installed quickstart, which is the example
    from equimod_plugin import quickstart

    assert experiments.BYOL is quickstart.BYOL and experiments.convnet is quickstart.convnet


@pytest.mark.parametrize("method", ["byol", "simclr"])
def test_baselines_term_learns_but_never_reaches_the_encoder(method, experiments):
    torch.manual_seed(0)
    model, branch = experiments.build(method, experiments.Config())
    x0, x1 = branch.views(torch.rand(8, 3, 32, 32))
    (model(x0).sum().mul(0) + branch.loss()).backward()  # serve the views; no invariance gradient
    assert all(p.grad is None or not p.grad.any() for p in model.backbone.parameters())
    assert any(p.grad is not None and p.grad.any() for p in branch.term.parameters())


def test_equimod_term_reaches_the_encoder(experiments):
    torch.manual_seed(0)
    model, branch = experiments.build("simclr+equimod", experiments.Config())
    x0, x1 = branch.views(torch.rand(8, 3, 32, 32))
    (model(x0).sum().mul(0) + branch.loss()).backward()
    assert any(p.grad is not None and p.grad.any() for p in model.backbone.parameters())


def share(value: object) -> bool:
    return isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0


@pytest.mark.slow
def test_smoke_run_writes_the_table_and_resumes_from_its_cache(tmp_path):
    command = [
        sys.executable,
        "experiments/reproduce_cpu.py",
        "--smoke",
        "--processes",
        "1",
        "--out",
        str(tmp_path),
        "--only",
        *RUNS,
    ]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads((tmp_path / "reproduction.json").read_text())
    assert sorted(f"{r['dataset']}/{r['method']}" for r in report["results"]) == sorted(RUNS)
    for r in report["results"]:
        for space in ("backbone", "projector"):
            for label in ("object", "hue"):
                assert all(share(r[f"{space}/{label}/{m}"]) for m in ("linear", "knn", "eta2"))
        assert all(math.isfinite(e["invariance_loss"]) for e in r["training"])
        assert {"absolute", "relative", "cos_pred"} <= set(r["equivariance"])
    table = (tmp_path / "reproduction.md").read_text()
    assert "| tint24 | byol+equimod (w 1) | 1 |" in table
    assert "| tint24 | byol | random-init |" in table
    assert "| photo24 | simclr+equimod (w 1) |" in table and "## Goals" in table
    assert (tmp_path / "weights.png").stat().st_size > 1000
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "reproduction.json").read_text())["results"] == report["results"]
