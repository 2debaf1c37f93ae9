"""Make the class-balanced Fashion-MNIST sample shipped in ``equimod_plugin/_data``.

Draws, with a seeded generator, 500 train images per class and 100 test images per class
from the complete dataset (by default the Debian package ``dataset-fashion-mnist``), keeps
them in their original order and writes them in the original gzip idx format. Gzip is
written with ``mtime=0`` and no file name, so a rerun gives byte-identical files.

    apt-get install dataset-fashion-mnist
    python experiments/make_fashion_mnist_sample.py
"""

from __future__ import annotations

import argparse
import gzip
import struct
from pathlib import Path

import torch
from torch import Tensor

from equimod_plugin.eval.datasets import DEBIAN_FASHION_MNIST, read_idx

OUT = Path(__file__).resolve().parents[1] / "equimod_plugin" / "_data"
SPLITS = {"train": 500, "t10k": 100}


def write_idx(path: Path, values: Tensor) -> None:
    """Write a uint8 tensor as a gzipped idx file, byte-identical on every run."""
    values = values.to(torch.uint8).contiguous()
    header = struct.pack(f">I{values.ndim}I", 0x800 | values.ndim, *values.shape)
    path.write_bytes(gzip.compress(header + bytes(values.flatten().tolist()), 9, mtime=0))


def balanced_indices(labels: Tensor, per_class: int, generator: torch.Generator) -> Tensor:
    """Pick ``per_class`` random indices of every class, sorted into the original order."""
    chosen = []
    for c in range(int(labels.max()) + 1):
        members = (labels == c).nonzero().flatten()
        if len(members) < per_class:
            raise ValueError(f"class {c} has {len(members)} items, fewer than {per_class}")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEBIAN_FASHION_MNIST)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for prefix, per_class in SPLITS.items():
        images = read_idx(args.source / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(args.source / f"{prefix}-labels-idx1-ubyte.gz")
        keep = balanced_indices(labels, per_class, generator)
        for kind, values in (("images-idx3", images[keep]), ("labels-idx1", labels[keep])):
            path = args.out / f"fashion-mnist-sample-{prefix}-{kind}-ubyte.gz"
            write_idx(path, values)
            print(f"{path}: shape {tuple(values.shape)}, {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
