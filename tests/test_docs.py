"""The documentation runs: code blocks of README.md and docs/, and the strict site build.

- Every ```` ```python ```` block of README.md and docs/**/*.md is executed; the blocks of one
  page run in order in one namespace, so a page can build on its earlier blocks. A block is
  skipped only when the line before it is ``<!-- skip-exec: reason -->`` (GPU, DDP, CUDA
  installs, multi-hour training); ```` ```diff ```` and shell blocks are not executed.
- Shell blocks that run ``python <file>.py`` or ``pytest <file>`` must name files that exist.
- ``mkdocs build --strict`` succeeds (warnings are errors: broken links, cross-references,
  docstring sections), and the built API reference documents every public name.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SKIP = re.compile(r"^\s*<!--\s*skip-exec:\s*(?P<reason>.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")
SHELL = {"bash", "sh", "shell", "console"}
PUBLIC_MODULES = [
    "equimod_plugin",
    "equimod_plugin.augment",
    "equimod_plugin.branch",
    "equimod_plugin.step",
    "equimod_plugin.terms",
    "equimod_plugin.tta",
    "equimod_plugin.eval.probes",
    "equimod_plugin.eval.report",
    "equimod_plugin.eval.datasets",
    "equimod_plugin.integrations.lightly",
    "equimod_plugin.integrations.solo",
]


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None  # the skip-exec reason, if any

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a markdown file, with their skip-exec markers."""
    found: list[Block] = []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = len(m.group("indent")), m.group("fence"), m.group("lang").lower()
        previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = SKIP.match(previous)
        body = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j][indent:])
            j += 1
        found.append(Block(page, i + 1, lang, "\n".join(body) + "\n", marker and marker["reason"]))
        i = j + 1
    return found


ALL_BLOCKS = [b for page in PAGES for b in blocks(page)]
PYTHON_PAGES = sorted({b.page for b in ALL_BLOCKS if b.lang in ("python", "py")})


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    torch.manual_seed(0)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    ran = 0
    for block in blocks(page):
        if block.lang not in ("python", "py") or block.skip is not None:
            continue
        try:
            exec(compile(block.code, str(block), "exec"), namespace)  # noqa: S102
        except Exception as e:
            raise AssertionError(f"the code block at {block} failed: {e!r}") from e
        ran += 1
    if ran == 0:
        pytest.skip("every python block of this page is marked skip-exec")


def test_skip_markers_are_explained() -> None:
    for block in ALL_BLOCKS:
        if block.skip is not None:
            assert block.lang in ("python", "py"), f"{block}: skip-exec before a non-python block"
            assert len(block.skip) >= 10, f"{block}: skip-exec needs a reason"
    for page in PAGES:
        for n, line in enumerate(page.read_text().splitlines(), 1):
            if "skip-exec" in line and not SKIP.match(line) and "`" not in line:
                raise AssertionError(f"{page.relative_to(ROOT)}:{n}: malformed skip-exec marker")


def test_shell_blocks_name_existing_files() -> None:
    command = re.compile(r"(?:\bpython3?|\bpytest)(?:\s+-m\s+pytest)?\s+([\w./-]+\.py)\b")
    checked = 0
    for block in ALL_BLOCKS:
        if block.lang not in SHELL:
            continue
        for path in command.findall(block.code):
            assert (ROOT / path).is_file(), f"{block}: {path} does not exist"
            checked += 1
    assert checked > 0


def test_block_inventory() -> None:
    """Every python block is either executed or explicitly skipped; print the tally."""
    python = [b for b in ALL_BLOCKS if b.lang in ("python", "py")]
    skipped = [b for b in python if b.skip is not None]
    print(f"\n{len(python)} python blocks: {len(python) - len(skipped)} executed")
    for b in skipped:
        print(f"  skipped {b}: {b.skip}")
    assert len(python) - len(skipped) >= 10


# --- the site --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(
                f"{module} is not installed: pip install -e '.[dev]' installs the docs tools"
            )
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-6000:]}"
    return out


def test_strict_build(site: Path) -> None:
    for page in ("index.html", "quickstart/index.html", "results/index.html", "api/index.html"):
        assert (site / page).is_file(), page


def test_api_reference_documents_public_names(site: Path) -> None:
    html = "".join(p.read_text() for p in (site / "api").rglob("*.html"))
    anchors = set(re.findall(r'id="(equimod_plugin[\w.]*)"', html))
    missing = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if hasattr(obj, "__module__") and hasattr(obj, "__qualname__"):
                canonical = f"{obj.__module__}.{obj.__qualname__}"
            elif isinstance(obj, type(sys)):
                canonical = obj.__name__
            else:
                canonical = f"{module_name}.{name}"
            if not {canonical, f"{module_name}.{name}"} & anchors:
                missing.append(f"{module_name}.{name}")
    assert not missing, f"not in the API reference: {missing}"


def test_results_pages_record_the_machine(site: Path) -> None:
    overview = (site / "results" / "index.html").read_text()
    for report in sorted((ROOT / "benchmarks" / "results").glob("*.md")):
        assert f"benchmarks/{report.stem}/" in overview, report.name
        page = (site / "benchmarks" / report.stem / "index.html").read_text()
        assert "cpu_count" in page or "cores" in page, f"{report.name}: no machine recorded"


def test_figures_script_runs(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "docs" / "figures" / "make_figures.py"),
            "--out",
            str(tmp_path),
        ],
        check=True,
        env=env,
        capture_output=True,
        timeout=300,
    )
    made = sorted(p.name for p in tmp_path.glob("*.svg"))
    committed = sorted(p.name for p in (ROOT / "docs" / "figures").glob("*.svg"))
    assert made == committed
