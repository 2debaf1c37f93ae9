"""The README's main command: the quickstart trains, probes and reports equivariance.

It is one script in two places: ``examples/quickstart.py`` (the readable example, copied out
by users) and ``equimod_plugin/quickstart.py`` (the same bytes, so that a pip install runs
it as ``python -m equimod_plugin.quickstart`` or ``equimod-quickstart``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_packaging import import_error_without

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "quickstart.py"
MODULE = ROOT / "equimod_plugin" / "quickstart.py"
EXTRA_HINT = "pip install 'equimod-plugin[examples]'"


def test_the_package_module_is_the_example() -> None:
    # one script, not two copies drifting apart: edit examples/quickstart.py, then copy it
    assert MODULE.read_bytes() == EXAMPLE.read_bytes(), (
        "equimod_plugin/quickstart.py differs from examples/quickstart.py: "
        "cp examples/quickstart.py equimod_plugin/quickstart.py"
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [[str(EXAMPLE)], ["-m", "equimod_plugin.quickstart"]],
    ids=["examples/quickstart.py", "python -m equimod_plugin.quickstart"],
)
def test_quickstart_smoke_run_reports_probe_and_equivariance(
    command: list[str], tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, *command, "--smoke"],
        cwd=tmp_path,  # neither needs the repository as working directory
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


@pytest.mark.parametrize("missing", ["lightly", "tqdm", "torchvision"])
def test_quickstart_without_the_examples_extra_names_it(missing: str) -> None:
    message = import_error_without(missing, "import equimod_plugin.quickstart")
    assert message == f"the quickstart needs {missing}: {EXTRA_HINT}"


def test_quickstart_help_lists_its_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "equimod_plugin.quickstart", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.startswith("usage: ")
    assert "--smoke" in result.stdout and "--data-dir" in result.stdout
