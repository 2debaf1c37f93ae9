"""Fashion-MNIST without torchvision, and hue tinting for a colour-dependent second label.

The loader reads the original gzip idx files with the standard library and torch only. With
no arguments it uses the complete dataset of the Debian package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist``) when installed, and otherwise a class-balanced
sample shipped with the package (500 train and 100 test images per class, made by
``experiments/make_fashion_mnist_sample.py``; MIT licence, see
``equimod_plugin/_data/LICENSE-fashion-mnist.txt``). :class:`FashionMNISTSample` serves the
shipped sample as a torch ``Dataset`` of RGB PIL images, a stand-in for CIFAR-10 in smoke runs.

:func:`tint` colours the grey items with one of ``num_hues`` hues, which gives a second label
that only colour carries: a representation trained to be invariant to colour jitter should
lose it, one that is equivariant to colour jitter should keep it.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from equimod_plugin._checks import check_images

__all__ = [
    "DEBIAN_FASHION_MNIST",
    "FASHION_MNIST_CLASSES",
    "FashionMNISTSample",
    "fashion_mnist_source",
    "load_fashion_mnist",
    "random_hue_labels",
    "read_idx",
    "tint",
]

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
"""Where the Debian package ``dataset-fashion-mnist`` installs the complete dataset."""

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
"""Names of the ten Fashion-MNIST classes, indexed by label."""

_SPLIT_PREFIX = {"train": "train", "test": "t10k"}
_SAMPLE_PREFIX = "fashion-mnist-sample-"
_UBYTE = 0x08


def read_idx(path: str | os.PathLike[str]) -> Tensor:
    """Read an idx file of unsigned bytes (the MNIST format), gzipped or plain.

    Gzip is recognised by its magic bytes, not by the file name. A file with one dimension
    (labels) is returned as int64 ``(N,)``, any other as uint8 with the shape in its header,
    e.g. ``(N, 28, 28)`` for images.

    Raises ``ValueError`` naming the path for a file that is not valid gzip, has a bad magic
    number (only the unsigned byte type ``0x08`` is supported), or is truncated or too long.

    >>> import struct, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "labels-idx1-ubyte")
    ...     with open(path, "wb") as f:
    ...         _ = f.write(struct.pack(">II", 0x801, 3) + bytes([7, 0, 9]))
    ...     read_idx(path)
    tensor([7, 0, 9])
    """
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{os.fspath(path)}: not a valid gzip file ({e})") from e
    if len(data) < 4:
        raise ValueError(
            f"{os.fspath(path)}: truncated idx file, {len(data)} bytes is shorter than the "
            "4-byte magic number"
        )
    (magic,) = struct.unpack_from(">I", data)
    ndim = magic & 0xFF
    if magic >> 8 != _UBYTE or ndim == 0:
        raise ValueError(
            f"{os.fspath(path)}: bad idx magic number 0x{magic:08x}, expected 0x000008NN "
            "(unsigned bytes, NN dimensions); is this an idx file?"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(
            f"{os.fspath(path)}: truncated idx file, the header of {ndim} dimensions needs "
            f"{header} bytes, found {len(data)}"
        )
    shape = struct.unpack_from(f">{ndim}I", data, 4)
    expected = math.prod(shape)
    found = len(data) - header
    if found != expected:
        problem = "truncated idx file" if found < expected else "idx file too long"
        raise ValueError(
            f"{os.fspath(path)}: {problem}, the header says shape {shape} ({expected} bytes "
            f"of data), found {found} bytes"
        )
    values = torch.frombuffer(bytearray(data), dtype=torch.uint8, count=expected, offset=header)
    values = values.reshape(shape)
    return values.to(torch.int64) if ndim == 1 else values


def _check_split(split: str) -> str:
    if split not in _SPLIT_PREFIX:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return _SPLIT_PREFIX[split]


def _find_pair(directories: list[Path], prefix: str) -> tuple[Path, Path] | None:
    """Return the images and labels files of one split found in one of the directories."""
    for directory in directories:
        found = []
        for kind in ("images-idx3", "labels-idx1"):
            candidates = [directory / f"{prefix}-{kind}-ubyte{ext}" for ext in ("", ".gz")]
            found.append(next((c for c in candidates if c.is_file()), None))
        if found[0] is not None and found[1] is not None:
            return found[0], found[1]
    return None


@contextmanager
def _split_files(
    split: str, root: str | os.PathLike[str] | None, sample: bool | None
) -> Iterator[tuple[Path, Path]]:
    """Resolve the images and labels files of a split as real paths on disk."""
    prefix = _check_split(split)
    if sample is not None and not isinstance(sample, bool):
        raise TypeError(f"sample must be True, False or None, got {sample!r}")
    if sample is True and root is not None:
        raise ValueError(f"give either root or sample=True, not both (root={root!r})")
    if sample is not True:
        directories = (
            [DEBIAN_FASHION_MNIST]
            if root is None
            else [Path(root), Path(root) / "FashionMNIST" / "raw"]
        )
        pair = _find_pair(directories, prefix)
        if pair is not None:
            yield pair
            return
        if root is not None or sample is False:
            searched = ", ".join(str(d) for d in directories)
            raise FileNotFoundError(
                f"no Fashion-MNIST {split} files ({prefix}-images-idx3-ubyte[.gz] and "
                f"{prefix}-labels-idx1-ubyte[.gz]) in any of: {searched}"
            )
    data = resources.files("equimod_plugin").joinpath("_data")
    with ExitStack() as stack:
        images, labels = (
            stack.enter_context(
                resources.as_file(data.joinpath(f"{_SAMPLE_PREFIX}{prefix}-{kind}-ubyte.gz"))
            )
            for kind in ("images-idx3", "labels-idx1")
        )
        yield images, labels


def load_fashion_mnist(
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    sample: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """Load Fashion-MNIST images as float32 ``(N, 1, 28, 28)`` in [0, 1], labels int64 ``(N,)``.

    Where the data comes from:

    - ``root`` given: the idx files (``train-images-idx3-ubyte``, ... gzipped or not) in
      ``root`` or in ``root/FashionMNIST/raw`` (torchvision's layout).
    - ``sample=True``: the class-balanced sample shipped with the package, 5000 train images
      (500 per class) and 1000 test images (100 per class).
    - ``sample=False``: the complete dataset of the Debian package ``dataset-fashion-mnist``.
    - neither (default): the Debian dataset when installed, else the shipped sample.

    :func:`fashion_mnist_source` tells which file the same arguments resolve to. Raises
    ``FileNotFoundError`` listing the directories searched, ``ValueError`` for a split other
    than ``"train"`` or ``"test"`` or for ``root`` together with ``sample=True``.

    >>> images, labels = load_fashion_mnist("test", sample=True)
    >>> images.shape, images.dtype, labels.shape, labels.dtype
    (torch.Size([1000, 1, 28, 28]), torch.float32, torch.Size([1000]), torch.int64)
    >>> labels.bincount()
    tensor([100, 100, 100, 100, 100, 100, 100, 100, 100, 100])
    """
    with _split_files(split, root, sample) as (images_path, labels_path):
        images = read_idx(images_path)
        labels = read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{images_path} and {labels_path} do not hold N images (N, H, W) and N labels (N,): "
            f"got shapes {tuple(images.shape)} and {tuple(labels.shape)}"
        )
    return images.unsqueeze(1).to(torch.float32).div_(255), labels


def fashion_mnist_source(
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    sample: bool | None = None,
) -> str:
    """Return the path of the images file :func:`load_fashion_mnist` reads for these arguments.

    The shipped sample's files are named ``fashion-mnist-sample-*``; log this path next to
    results so that it is clear whether they come from the complete dataset or the sample.

    >>> Path(fashion_mnist_source("train", sample=True)).name
    'fashion-mnist-sample-train-images-idx3-ubyte.gz'
    """
    with _split_files(split, root, sample) as (images_path, _):
        return str(images_path)


class FashionMNISTSample(Dataset[tuple[Any, int]]):
    """The first ``n`` shipped Fashion-MNIST images, as RGB PIL images like CIFAR-10's.

    A stand-in for torchvision's ``CIFAR10`` in smoke runs: no download, items
    ``(transform(image), label)`` with ``image`` a 28 x 28 ``PIL.Image`` in mode ``"RGB"``
    (the grey value in all three channels) and ``label`` an ``int`` in ``0 .. 9``. The images
    are those of ``load_fashion_mnist(split, sample=True)``, in order; ``n`` defaults to all of
    them (5000 train, 1000 test). ``transform=None`` yields the PIL images themselves.

    Needs Pillow (installed with torchvision). Raises ``ValueError`` for an ``n`` that is not
    an int in ``1 .. len(split)`` or a bad ``split``, ``TypeError`` for a ``transform`` that is
    not callable.

    >>> dataset = FashionMNISTSample(n=20)
    >>> image, label = dataset[0]
    >>> len(dataset), image.size, image.mode, label
    (20, (28, 28), 'RGB', 6)
    """

    def __init__(
        self,
        transform: Callable[[Any], Any] | None = None,
        n: int | None = None,
        split: str = "train",
    ) -> None:
        try:
            from PIL import Image
        except ImportError as e:  # pragma: no cover - Pillow comes with torchvision
            raise ImportError(
                "FashionMNISTSample needs Pillow: pip install pillow (or torchvision)"
            ) from e
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable or None, got {transform!r:.80}")
        images, labels = load_fashion_mnist(split, sample=True)
        if n is None:
            n = len(labels)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(labels):
            raise ValueError(
                f"n must be an int in 1 .. {len(labels)} (the {split} sample's size), got {n!r}"
            )
        pixels = images[:n, 0].mul(255).to(torch.uint8)  # as torchvision's to_pil_image
        height, width = pixels.shape[1:]
        self.images = [
            Image.frombytes("L", (width, height), bytes(p.flatten().tolist())).convert("RGB")
            for p in pixels
        ]
        self.labels: list[int] = labels[:n].tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.images[index]
        return (image if self.transform is None else self.transform(image)), self.labels[index]


def _check_num_hues(num_hues: int) -> None:
    if isinstance(num_hues, bool) or not isinstance(num_hues, int) or num_hues < 1:
        raise ValueError(f"num_hues must be an int >= 1, got {num_hues!r}")


def random_hue_labels(n: int, num_hues: int, generator: torch.Generator | None = None) -> Tensor:
    """Draw ``n`` hue labels uniformly from ``0 .. num_hues - 1``, int64 ``(n,)``.

    >>> random_hue_labels(5, 4, torch.Generator().manual_seed(0))
    tensor([0, 3, 1, 0, 3])
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    _check_num_hues(num_hues)
    return torch.randint(num_hues, (n,), generator=generator, dtype=torch.int64)


def tint(
    images: Tensor,
    hue_labels: Tensor,
    num_hues: int,
    saturation: float = 1.0,
    hue_offset: float = 0.0,
    hue_step: float | None = None,
) -> Tensor:
    """Colour grey images ``(N, 1, H, W)`` with the hue of their label, giving ``(N, 3, H, W)``.

    Label ``k`` has the hue ``hue_offset + k * hue_step`` turns (1 turn = 360 degrees);
    ``hue_step`` defaults to ``1 / num_hues``, hues equally spaced around the colour wheel.
    A smaller step gives a fine-grained task with close hues, e.g. ``num_hues=8,
    hue_step=15 / 360`` spans 105 degrees. A pixel of grey value ``v`` becomes
    ``v * rgb(hue, saturation)`` with HSV value 1: the object is coloured, a black background
    stays black, and the output stays in [0, 1]. Three-channel input must be grey (equal
    channels). ``hue_offset`` and ``hue_step`` must be finite.

    >>> grey = torch.ones(2, 1, 1, 1)
    >>> tint(grey, torch.tensor([0, 1]), num_hues=3).flatten(1)  # red, green
    tensor([[1., 0., 0.],
            [0., 1., 0.]])
    >>> tint(grey[:1] / 2, torch.tensor([2]), num_hues=3, saturation=0.5).flatten()  # pale blue
    tensor([0.2500, 0.2500, 0.5000])
    """
    check_images(images, "images", channels=None)
    if images.shape[1] not in (1, 3):
        raise ValueError(
            f"images must have 1 or 3 (equal, grey) channels, got shape {tuple(images.shape)}"
        )
    if images.shape[1] == 3:
        if images.numel() and not bool((images.amax(1) == images.amin(1)).all()):
            raise ValueError("images has 3 channels that differ; tint expects grey images")
        images = images[:, :1]
    _check_num_hues(num_hues)
    if not isinstance(hue_labels, Tensor) or hue_labels.dtype != torch.int64:
        raise TypeError(f"hue_labels must be an int64 tensor (N,), got {hue_labels!r:.80}")
    if hue_labels.shape != images.shape[:1]:
        raise ValueError(
            f"hue_labels must have shape ({images.shape[0]},) to match images, got "
            f"{tuple(hue_labels.shape)}"
        )
    if hue_labels.numel() and not bool(((hue_labels >= 0) & (hue_labels < num_hues)).all()):
        raise ValueError(
            f"hue_labels must lie in [0, {num_hues - 1}], got min {hue_labels.min().item()}, "
            f"max {hue_labels.max().item()}"
        )
    if not 0.0 <= saturation <= 1.0:
        raise ValueError(f"saturation must be in [0, 1], got {saturation!r}")
    for name, value in (("hue_offset", hue_offset), ("hue_step", hue_step)):
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number of turns, got {value!r}")
    step = 1.0 / num_hues if hue_step is None else hue_step
    hue = (hue_offset + hue_labels.to(images.device, torch.float64) * step) % 1.0
    # HSV to RGB at value 1: channel n in (R, G, B) uses k = (n + 6 h) mod 6, n in (5, 3, 1).
    k = (
        torch.tensor([5.0, 3.0, 1.0], dtype=torch.float64, device=images.device) + 6 * hue[:, None]
    ) % 6
    rgb = 1 - saturation * torch.minimum(k, 4 - k).clamp(0, 1)
    return images * rgb.to(images.dtype)[:, :, None, None]
