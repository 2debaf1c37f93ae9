"""The layers: the core imports only torch and kornia, never the toolkit or a framework."""

from __future__ import annotations

import subprocess
import sys

CORE = [
    "equimod_plugin",  # augment, branch, step, terms, heads, losses, metrics, steering
    "equimod_plugin.tta",
]
FORBIDDEN = ("lightly", "torchvision", "omegaconf", "lightning", "pytorch_lightning")


def test_core_imports_neither_toolkit_nor_frameworks() -> None:
    code = (
        f"import sys\nimport {', '.join(CORE)}\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r} "
        "or m.startswith(('equimod_plugin.eval', 'equimod_plugin.integrations'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"the core imports {out.stdout.strip()}"
