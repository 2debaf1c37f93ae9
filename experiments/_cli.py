"""What the experiments' command lines share: the default output folder and ``--device``.

Only the standard library and torch, so a script imports it before its optional packages and
``--help`` works without them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def output_dir(out: Path | None, smoke: bool, name: str) -> Path:
    """``--out``; else a new temporary directory for ``--smoke``; else a new folder
    ``runs/<name>-<YYYYmmdd-HHMMSS>`` under the working directory (created when written).
    Never ``docs/results``: the committed results are re-made with an explicit ``--out``."""
    if out is not None:
        return Path(out)
    if smoke:
        return Path(tempfile.mkdtemp(prefix=f"{name}_"))
    return Path.cwd() / "runs" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def torch_device(name: str) -> torch.device:
    """The type of ``--device``: a bad name is an error of the option, not a traceback."""
    try:
        return torch.device(name)
    except RuntimeError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
