"""The examples run alone: no local imports, and the lightly ones end to end in smoke mode
(shipped data, CPU, no download)."""

from __future__ import annotations

import ast
import importlib.util
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from equimod_plugin.eval.datasets import FashionMNISTSample, load_fashion_mnist
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
# imported by an example but not installed by the project's extras (documented instead)
INSTALLED_SEPARATELY = {"solo": "solo-learn, installed from git (docs/solo-learn.md)"}


def run_smoke(script: str, where: Path) -> subprocess.CompletedProcess[str]:
    """Run a copy of the example, alone in ``where``, as a user who copied it out would."""
    shutil.copy(EXAMPLES / script, where / script)
    return subprocess.run(
        [sys.executable, script, "--smoke"],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.parametrize("script", list(SCRIPTS))
def test_smoke_run_prints_finite_losses_and_equivariance_metrics(
    script: str, tmp_path: Path
) -> None:
    result = run_smoke(script, tmp_path)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-2000:]}\n{result.stderr}"
    first_line = result.stdout.partition("\n")[0]  # the device and the seed are said first
    assert re.fullmatch(r"device: (cpu|cuda), seed: 0", first_line), result.stdout[:200]
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


def imported_modules(path: Path) -> list[tuple[int, int, str]]:
    """``(line, level, top-level module)`` of every import statement of a script."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, 0, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, node.level, (node.module or "").split(".")[0]))
    return found


def in_repository(origin: Path) -> bool:
    """Whether a module file lies in the repository's own files: a virtualenv created inside
    the checkout (``python -m venv .venv``) holds installed packages, not the repository's."""
    origin = origin.resolve()
    installed = any(part in ("site-packages", "dist-packages") for part in origin.parts)
    return origin.is_relative_to(REPO) and not installed


def local_imports(path: Path) -> list[str]:
    """The imports of ``path`` that only work next to its siblings (or not at all)."""
    problems = []
    for line, level, name in imported_modules(path):
        where = f"{path.name}:{line} imports {name or '.'!r}"
        if level:
            problems.append(f"{where}: a relative import")
        elif (path.parent / f"{name}.py").exists() or (path.parent / name).is_dir():
            problems.append(f"{where}: a file next to the script")
        elif name in sys.stdlib_module_names or name in INSTALLED_SEPARATELY:
            continue
        elif (spec := importlib.util.find_spec(name)) is None or spec.origin is None:
            problems.append(f"{where}: not an installed package")
        elif name != "equimod_plugin" and in_repository(Path(spec.origin)):
            problems.append(f"{where}: found in the repository at {spec.origin}, not installed")
    return problems


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_example_imports_only_installed_packages(script: str) -> None:
    # each example runs alone when copied out of the repository, as lightly's do
    assert local_imports(EXAMPLES / script) == []


def test_local_import_check_catches_a_sibling_module(tmp_path: Path) -> None:
    (tmp_path / "_helpers.py").write_text("X = 1\n")
    lines = ["import os", "import torch", "from _helpers import X", "from . import y"]
    (tmp_path / "script.py").write_text("\n".join([*lines, "import not_a_package_xyz"]))
    assert local_imports(tmp_path / "script.py") == [
        "script.py:3 imports '_helpers': a file next to the script",
        "script.py:4 imports '.': a relative import",
        "script.py:5 imports 'not_a_package_xyz': not an installed package",
    ]


@pytest.mark.exactness
def test_smoke_data_yields_originals_like_cifar10() -> None:
    dataset = FashionMNISTSample(OriginalTransform(32), n=20)
    assert len(dataset) == 20
    image, label = dataset[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1 and image.max() > 0
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])  # grey as RGB
    assert isinstance(label, int) and 0 <= label < 10


@pytest.mark.exactness
def test_smoke_data_holds_the_shipped_images_in_order() -> None:
    images, labels = load_fashion_mnist("test", sample=True)
    dataset = FashionMNISTSample(n=5, split="test")
    for i, (image, label) in enumerate(dataset):
        assert image.mode == "RGB" and image.size == (28, 28)
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(28, 28, 3)
        grey = images[i, 0].mul(255).to(torch.uint8)  # as torchvision's to_pil_image
        assert torch.equal(pixels, grey[..., None].expand(-1, -1, 3))
        assert label == labels[i].item()
    assert len(FashionMNISTSample()) == 5000


@pytest.mark.parametrize("n", [0, -1, 5001, 2.0, True, "8"])
def test_smoke_data_rejects_a_bad_size(n: object) -> None:
    with pytest.raises(ValueError, match=r"n must be an int in 1 \.\. 5000"):
        FashionMNISTSample(n=n)  # type: ignore[arg-type]


def test_smoke_data_rejects_a_transform_that_is_not_callable() -> None:
    with pytest.raises(TypeError, match="transform must be callable"):
        FashionMNISTSample("resize", n=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        FashionMNISTSample(n=2, split="val")


def test_packages_of_a_virtualenv_inside_the_checkout_count_as_installed() -> None:
    venv_package = REPO / ".venv" / "lib" / "python3.11" / "site-packages" / "torch" / "__init__.py"
    assert not in_repository(venv_package)
    assert in_repository(REPO / "examples" / "quickstart.py")
