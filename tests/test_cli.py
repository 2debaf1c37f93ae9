"""The command lines of the examples, benchmarks and experiments behave alike.

- ``--help`` works and describes every option; the description is the docstring's whole
  first paragraph (never a sentence cut at a line break);
- the benchmarks and experiments show ``--help`` without their optional packages, and stop
  with the extra to install when asked to run without them; the examples, which subclass
  their framework's classes, stop at import with what to install;
- the scripts that train take ``--device`` and ``--seed``, the benchmarks ``--seed``;
- ``--data-dir`` defaults to an absolute path, and the default output folder is a new one
  under ``runs/`` of the working directory, never the committed ``docs/results`` or
  ``benchmarks/results``.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = [
    "examples/lightly_byol.py",
    "examples/lightly_byol_lightning.py",
    "examples/lightly_simclr.py",
    "examples/lightly_simclr_lightning.py",
    "examples/solo_byol_cifar.py",
]
BENCHMARKS = [
    "benchmarks/augment_throughput.py",
    "benchmarks/step_time.py",
    "benchmarks/tta_speed.py",
]
EXPERIMENTS = ["experiments/augmentation_report.py", "experiments/steering_eval.py"]
TRAINING = {*EXAMPLES, *EXPERIMENTS, *BENCHMARKS}  # they take --device and --seed
# what the benchmarks and experiments import from their extras (the core: torch, kornia, numpy)
OPTIONAL = [
    "lightly",
    "torchvision",
    "PIL",
    "skimage",
    "imagecorruptions",
    "matplotlib",
    "tqdm",
    "pytorch_lightning",
    "lightning",
    "omegaconf",
    "solo",
]
# each example's framework: the packages it needs (all installed, or --help is not run)
FRAMEWORK = {
    "examples/lightly_byol.py": ["lightly", "torchvision", "tqdm"],
    "examples/lightly_simclr.py": ["lightly", "torchvision", "tqdm"],
    "examples/lightly_byol_lightning.py": ["lightly", "torchvision", "pytorch_lightning"],
    "examples/lightly_simclr_lightning.py": ["lightly", "torchvision", "pytorch_lightning"],
    "examples/solo_byol_cifar.py": ["solo", "lightning", "omegaconf", "torchvision"],
}
# Runs a script with some top-level packages missing: argv = blocked (comma-separated),
# script, its arguments. A finder placed first raises what a missing package raises.
RUN_WITHOUT = """
import importlib.abc, os, runpy, sys
blocked = set(filter(None, sys.argv[1].split(",")))
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name.partition(".")[0])
sys.meta_path.insert(0, Missing())
sys.argv = sys.argv[2:]
sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run(script: str, *args: str, without: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """``python script args`` from a temporary working directory, with ``without`` missing."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    command = [sys.executable, "-c", RUN_WITHOUT, ",".join(without), str(ROOT / script), *args]
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
        )


def first_paragraph(script: str) -> str:
    """The first paragraph of the script's docstring, on one line."""
    docstring = ast.get_docstring(ast.parse((ROOT / script).read_text()))
    assert docstring, f"{script} has no module docstring"
    return " ".join(docstring.split("\n\n")[0].split())


def add_argument_calls(path: Path) -> list[ast.Call]:
    """Every ``parser.add_argument(...)`` call of a file."""
    return [
        node
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "add_argument"
    ]


def check_help(script: str, result: subprocess.CompletedProcess[str]) -> None:
    """``--help`` printed the usage, the whole first paragraph and the expected options."""
    assert result.returncode == 0, result.stderr[-2000:]
    text = " ".join(result.stdout.split())
    assert result.stdout.startswith("usage: ")
    description = first_paragraph(script)
    assert description.endswith("."), f"{script}: the docstring's first paragraph is cut"
    assert description in text, f"{script}: the description is not the first paragraph"
    options = set(re.findall(r"(--[a-z][a-z-]*)", result.stdout))
    assert "--seed" in options
    assert ("--device" in options) == (script in TRAINING)


@pytest.mark.parametrize("script", [*EXAMPLES, *BENCHMARKS, *EXPERIMENTS, "benchmarks/_report.py"])
def test_every_option_has_help_text(script: str) -> None:
    for call in add_argument_calls(ROOT / script):  # (the --help tests check the options exist)
        help_text = next((k.value for k in call.keywords if k.arg == "help"), None)
        where = f"{script}:{call.lineno}"
        assert help_text is not None, f"{where}: an option without help text"
        assert not (isinstance(help_text, ast.Constant) and not help_text.value), where


@pytest.mark.parametrize("script", [*BENCHMARKS, *EXPERIMENTS])
def test_help_works_without_the_optional_packages(script: str) -> None:
    check_help(script, run(script, "--help", without=OPTIONAL))


@pytest.mark.parametrize("script", sorted(TRAINING))
def test_a_bad_device_is_an_error_of_the_option(script: str) -> None:
    without = [] if script in EXAMPLES else OPTIONAL  # the examples import their framework first
    if [m for m in FRAMEWORK.get(script, []) if importlib.util.find_spec(m) is None]:
        pytest.skip(f"{script}: its framework is not installed")
    result = run(script, "--device", "gpu0", without=without)
    assert result.returncode == 2
    assert "error: argument --device: " in result.stderr and "gpu0" in result.stderr


@pytest.mark.parametrize(
    ("script", "missing", "extra"),
    [
        ("benchmarks/augment_throughput.py", "skimage", "bench"),
        ("benchmarks/step_time.py", "lightly", "bench"),
        ("benchmarks/tta_speed.py", "torchvision", "bench"),
        ("experiments/augmentation_report.py", "matplotlib", "experiments"),
        ("experiments/steering_eval.py", "imagecorruptions", "experiments"),
        ("experiments/steering_eval.py", "lightly", "experiments"),
    ],
)
def test_run_without_an_optional_package_names_the_extra(
    script: str, missing: str, extra: str
) -> None:
    flag = "--quick" if script.startswith("benchmarks/") else "--smoke"
    result = run(script, flag, without=[missing])
    assert result.returncode == 1
    name = Path(script).name
    assert result.stderr.strip() == f"{name} needs {missing}: pip install 'equimod-plugin[{extra}]'"


@pytest.mark.parametrize("script", EXAMPLES)
def test_example_help(script: str) -> None:
    absent = [m for m in FRAMEWORK[script] if importlib.util.find_spec(m) is None]
    if absent:
        pytest.skip(f"{script} needs {absent} (the next test checks the message without them)")
    result = run(script, "--help")
    check_help(script, result)
    if script != "examples/solo_byol_cifar.py":  # solo-learn's config holds its data paths
        data_dir = re.search(r"--data-dir DATA_DIR +.*\(default: (\S+)\)", result.stdout)
        assert data_dir and Path(data_dir.group(1)).is_absolute(), result.stdout  # not cwd-bound


EXAMPLES_EXTRA = "pip install 'equimod-plugin[examples]'"
SOLO = "pip install 'equimod-plugin[solo]' and solo-learn from git (see docs/solo-learn.md)"


@pytest.mark.parametrize(
    ("script", "missing", "install"),
    [
        ("examples/lightly_byol.py", "lightly", EXAMPLES_EXTRA),
        ("examples/lightly_simclr.py", "tqdm", EXAMPLES_EXTRA),
        ("examples/lightly_byol_lightning.py", "pytorch_lightning", EXAMPLES_EXTRA),
        ("examples/lightly_simclr_lightning.py", "torchvision", EXAMPLES_EXTRA),
        ("examples/solo_byol_cifar.py", "solo", SOLO),
        ("examples/solo_byol_cifar.py", "omegaconf", SOLO),
    ],
)
def test_example_without_its_framework_names_what_to_install(
    script: str, missing: str, install: str
) -> None:
    result = run(script, "--help", without=[missing])
    assert result.returncode == 1
    assert f"ImportError: this example needs {missing}: {install}" in result.stderr


def load(script: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import a benchmark or experiment script as a module, its folder first on the path."""
    path = ROOT / script
    monkeypatch.syspath_prepend(str(path.parent))
    spec = importlib.util.spec_from_file_location(f"cli_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look themselves up
    spec.loader.exec_module(module)
    return module


COMMITTED = [ROOT / "docs", ROOT / "benchmarks" / "results"]


def output_dir(module: ModuleType, script: str, out: Path | None, quick: bool) -> Path:
    """The output folder a script picks for ``--out`` (or ``None``) and ``--quick``/``--smoke``."""
    if script in BENCHMARKS:
        return module.output_dir(argparse.Namespace(out=out, quick=quick), Path(script).stem)
    return module.output_dir(out, quick, Path(script).stem)


@pytest.mark.parametrize("script", [*BENCHMARKS, *EXPERIMENTS])
def test_default_output_is_a_new_run_folder_never_the_committed_results(
    script: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load(script, monkeypatch)
    monkeypatch.chdir(ROOT)  # where the documented commands run
    default = output_dir(module, script, None, quick=False)
    assert default.parent == ROOT / "runs"  # git ignores runs/
    assert re.fullmatch(rf"{Path(script).stem}-\d{{8}}-\d{{6}}", default.name)
    assert not default.exists()  # made when the results are written
    assert not any(default.is_relative_to(folder) for folder in COMMITTED)
    quick = output_dir(module, script, None, quick=True)
    assert quick.is_dir() and not any(quick.iterdir()) and not quick.is_relative_to(ROOT)
    quick.rmdir()
    committed = ROOT / "docs" / "results" / "x"
    assert output_dir(module, script, committed, quick=True) == committed  # --out wins
