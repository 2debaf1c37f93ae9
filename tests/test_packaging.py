"""What a pip user gets: the built wheel and sdist, their metadata, extras and import errors.

- The wheel holds the package, the quickstart (``equimod_plugin.quickstart``, console script
  ``equimod-quickstart``), the Fashion-MNIST sample it trains on and both licences.
- The sdist deliberately holds no tests: they import the examples, experiments and
  benchmarks and check the docs, so they run from a clone (MANIFEST.in says so).
- Each extra installs what the scripts it is for import; one Lightning package
  (``lightning``, imported as ``lightning.pytorch``) everywhere.
- An integration imported without its framework names the extra to install.
"""

from __future__ import annotations

import ast
import email
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import equimod_plugin

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
EXTRAS = PROJECT["optional-dependencies"]
# imported by a script but installed separately (documented instead)
INSTALLED_SEPARATELY = {"solo"}  # solo-learn, from git (docs/solo-learn.md)


# --- an integration without its framework ----------------------------------------------------


def import_error_without(module: str, statement: str) -> str:
    """The ImportError message of ``statement`` in a fresh interpreter without ``module``.

    A finder placed first raises what a missing package raises (``No module named ...``,
    with ``name`` set) for ``module`` and its submodules; prints ``""`` if nothing fails.
    """
    code = (
        f"import importlib.abc, sys\nmissing = {module!r}\n"
        "class Missing(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] == missing:\n"
        "            raise ModuleNotFoundError(f'No module named {missing!r}', name=missing)\n"
        "sys.meta_path.insert(0, Missing())\n"
        f"try:\n    {statement}\nexcept ImportError as error:\n    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


@pytest.mark.parametrize(
    ("integration", "module", "extra"),
    [
        ("lightly", "torchvision", "lightly"),
        ("lightly", "PIL", "lightly"),
        ("solo", "omegaconf", "solo"),
    ],
)
def test_integration_without_its_framework_names_the_extra(
    integration: str, module: str, extra: str
) -> None:
    message = import_error_without(module, f"import equimod_plugin.integrations.{integration}")
    assert message == (
        f"equimod_plugin.integrations.{integration} needs {module}: "
        f"pip install 'equimod-plugin[{extra}]'"
    )


# --- pyproject.toml ----------------------------------------------------------------------------


def test_metadata_is_complete_and_the_version_single_sourced() -> None:
    assert PROJECT["license"] == "MIT"  # an SPDX expression, not the deprecated {text = ...}
    assert all((ROOT / path).is_file() for path in PROJECT["license-files"])
    assert "Copyright (c) 2026 equimod-plugin developers" in (ROOT / "LICENSE").read_text()
    # setuptools rejects "License ::" classifiers next to an SPDX expression
    assert not [c for c in PROJECT["classifiers"] if c.startswith("License ::")]
    assert PROJECT["authors"] and PROJECT["keywords"]
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    dynamic = PYPROJECT["tool"]["setuptools"]["dynamic"]
    assert dynamic["version"] == {"attr": "equimod_plugin.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", equimod_plugin.__version__)


def test_console_script_is_the_quickstart() -> None:
    target = PROJECT["scripts"]["equimod-quickstart"]
    assert target == "equimod_plugin.quickstart:main"
    # the core never imports the quickstart: it needs the examples extra (tests/test_layers.py)
    assert (ROOT / "equimod_plugin" / "quickstart.py").is_file()


def test_long_description_has_no_relative_links() -> None:
    # README.md links to files of the repository; on a package index those links break
    readme = PROJECT["readme"]
    assert readme["content-type"] == "text/markdown"
    text = (ROOT / readme["file"]).read_text()
    prose = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)  # not the code
    targets = re.findall(r"\]\(([^)\s]+)", prose) + re.findall(r"(?:src|href)=\"([^\"]+)", prose)
    relative = [t for t in targets if not re.match(r"https?://", t)]
    assert relative == [], f"{readme['file']} has relative links: {relative}"
    assert "python -m equimod_plugin.quickstart" in text


# --- extras ------------------------------------------------------------------------------------


def third_party_imports(path: Path) -> set[str]:
    """Top-level modules a script imports that are neither stdlib, local, nor this package."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    local = {p.stem for p in path.parent.glob("*.py")} | {"equimod_plugin"}
    return names - set(sys.stdlib_module_names) - local - INSTALLED_SEPARATELY


def installed_by(extra: str) -> set[str]:
    """The distributions ``pip install equimod-plugin[extra]`` installs.

    This project's requirements come from pyproject.toml, those of its dependencies from
    their installed metadata.
    """
    extras_of_this = PROJECT["optional-dependencies"]
    seen: set[str] = set()
    todo = [Requirement(f"equimod-plugin[{extra}]")]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        extras = {canonicalize_name(e) for e in requirement.extras}
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in seen:
            continue
        seen.add(key)
        if name == "equimod-plugin":
            lines = PROJECT["dependencies"] + [r for e in extras for r in extras_of_this[e]]
        else:
            lines = importlib.metadata.requires(name) or []
        for line in lines:
            child = Requirement(line)
            wanted = child.marker is None or any(
                child.marker.evaluate({"extra": e}) for e in extras | {""}
            )
            if wanted:
                todo.append(child)
    return {key.partition("[")[0] for key in seen}


@pytest.mark.parametrize(
    ("extra", "scripts"),
    [
        (
            "examples",
            ["examples/lightly_*.py", "examples/quickstart.py", "equimod_plugin/quickstart.py"],
        ),
        ("solo", ["examples/solo_*.py"]),  # and solo-learn itself, installed from its source
        ("bench", ["benchmarks/*.py"]),
        ("experiments", ["experiments/*.py", "experiments/paper/*.py"]),
    ],
)
def test_extra_installs_what_its_scripts_import(extra: str, scripts: list[str]) -> None:
    if {"lightly", "scikit-image", "imagecorruptions-imaug"} - {
        canonicalize_name(d.metadata["Name"]) for d in importlib.metadata.distributions()
    }:
        pytest.skip("the dev extra is not installed")
    provided = installed_by(extra)
    distributions = importlib.metadata.packages_distributions()
    missing = []
    for path in sorted(p for pattern in scripts for p in ROOT.glob(pattern)):
        for module in sorted(third_party_imports(path) - {"solo"}):
            if not {canonicalize_name(d) for d in distributions.get(module, [])} & provided:
                missing.append(f"{path.relative_to(ROOT)} imports {module}")
    assert missing == [], f"not installed by equimod-plugin[{extra}]: {missing}"


def test_one_lightning_package_per_framework() -> None:
    """``lightning.pytorch`` and ``pytorch_lightning`` classes do not mix (a module of one is
    no module for the other's Trainer). lightly's LightningModules (``LinearClassifier``, ...)
    are ``pytorch_lightning`` ones and solo-learn's are ``lightning.pytorch`` ones: each file
    uses the package of the framework it builds on, never both, and each extra lists the one
    its scripts use."""
    extras = {k: [canonicalize_name(Requirement(r).name) for r in v] for k, v in EXTRAS.items()}
    assert "pytorch-lightning" in extras["examples"] and "lightning" not in extras["examples"]
    assert "lightning" in extras["solo"] and "pytorch-lightning" not in extras["solo"]
    mixed, wrong = [], []
    for folder in ("equimod_plugin", "examples", "experiments", "benchmarks", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            top = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    top |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module:
                    top.add(node.module.split(".")[0])
            name = str(path.relative_to(ROOT))
            if {"lightning", "pytorch_lightning"} <= top and name != "tests/_lightning_ddp.py":
                mixed.append(name)  # the DDP helper runs one of each, in separate functions
            if "solo" in top and "pytorch_lightning" in top:
                wrong.append(name)
            if "lightly" in top and "lightning" in top and "solo" not in top:
                wrong.append(name)
    assert mixed == [] and wrong == [], f"mixed: {mixed}; wrong package: {wrong}"


# --- the built distributions -------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist and the wheel, built by setuptools from a copy of the repository."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed")
    tmp = tmp_path_factory.mktemp("build")
    source = tmp / "source"
    skip = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", "build", "dist", "site")
    shutil.copytree(ROOT, source, ignore=skip)
    built = []
    for hook in ("build_sdist", "build_wheel"):  # one process each, as a build frontend does
        code = (
            f"import sys\nfrom setuptools import build_meta\nprint(build_meta.{hook}(sys.argv[1]))"
        )
        result = subprocess.run(
            [sys.executable, "-c", code, str(tmp / "dist")],
            cwd=source,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "SetuptoolsDeprecationWarning" not in result.stderr, result.stderr[-3000:]
        built.append(result.stdout.split()[-1])
    sdist, wheel = built
    return {"sdist": tmp / "dist" / sdist, "wheel": tmp / "dist" / wheel}


def test_wheel_holds_the_quickstart_its_data_and_the_licences(built: dict[str, Path]) -> None:
    version = equimod_plugin.__version__
    assert built["wheel"].name == f"equimod_plugin-{version}-py3-none-any.whl"
    with zipfile.ZipFile(built["wheel"]) as wheel:
        names = set(wheel.namelist())
        info = f"equimod_plugin-{version}.dist-info"
        metadata = email.message_from_bytes(wheel.read(f"{info}/METADATA"))
        entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    assert "equimod_plugin/quickstart.py" in names
    assert len([n for n in names if n.startswith("equimod_plugin/_data/fashion-mnist")]) == 4
    assert f"{info}/licenses/LICENSE" in names
    assert not [n for n in names if n.startswith(("tests/", "examples/", "experiments/"))]
    assert metadata["Version"] == version
    assert metadata["License-Expression"] == "MIT"
    assert set(metadata.get_all("Provides-Extra")) >= {"examples", "bench", "experiments"}
    assert "equimod-quickstart = equimod_plugin.quickstart:main" in entry_points
    assert "](docs/" not in metadata.get_payload()  # the long description is PYPI.md


def test_sdist_builds_the_wheel_and_deliberately_holds_no_tests(built: dict[str, Path]) -> None:
    with tarfile.open(built["sdist"]) as sdist:
        names = {name.partition("/")[2] for name in sdist.getnames()}
    assert {"pyproject.toml", "LICENSE", "PYPI.md", "README.md", "MANIFEST.in"} <= names
    assert "equimod_plugin/quickstart.py" in names
    assert "equimod_plugin/_data/fashion-mnist-sample-train-images-idx3-ubyte.gz" in names
    outside = {name.split("/")[0] for name in names if "/" in name} - {"equimod_plugin"}
    assert outside <= {"equimod_plugin.egg-info"}, f"the sdist holds {sorted(outside)}"
