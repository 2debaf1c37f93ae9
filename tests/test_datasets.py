import colorsys
import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from equimod_plugin.eval import datasets
from equimod_plugin.eval.datasets import (
    DEBIAN_FASHION_MNIST,
    fashion_mnist_source,
    load_fashion_mnist,
    random_hue_labels,
    read_idx,
    tint,
)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "equimod_plugin" / "_data"
HAS_DEBIAN = (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file()
needs_debian = pytest.mark.skipif(
    not HAS_DEBIAN, reason="needs the Debian package dataset-fashion-mnist"
)


def idx_bytes(values: torch.Tensor) -> bytes:
    """Encode a uint8 tensor in the idx format, independently of the code under test."""
    header = struct.pack(">I", 0x800 | values.ndim) + b"".join(
        struct.pack(">I", n) for n in values.shape
    )
    return header + bytes(values.flatten().tolist())


def write_split(directory: Path, prefix: str, n: int, compress: bool) -> tuple:
    images = torch.randint(256, (n, 28, 28), dtype=torch.uint8)
    labels = torch.arange(n, dtype=torch.uint8) % 10
    directory.mkdir(parents=True, exist_ok=True)
    for kind, values in (("images-idx3", images), ("labels-idx1", labels)):
        data = idx_bytes(values)
        name = f"{prefix}-{kind}-ubyte" + (".gz" if compress else "")
        (directory / name).write_bytes(gzip.compress(data) if compress else data)
    return images, labels


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, compress):
    images = torch.randint(256, (5, 3, 4), dtype=torch.uint8)
    labels = torch.tensor([3, 0, 255, 9, 1], dtype=torch.uint8)
    for name, values in (("images", images), ("labels", labels)):
        data = idx_bytes(values)
        path = tmp_path / name
        path.write_bytes(gzip.compress(data) if compress else data)
        read = read_idx(str(path))
        assert read.shape == values.shape
        assert torch.equal(read, values.to(read.dtype))
        assert read.dtype == (torch.int64 if values.ndim == 1 else torch.uint8)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00", "truncated"),
        (struct.pack(">I", 0x00000C03) + bytes(12), "bad idx magic number 0x00000c03"),
        (struct.pack(">I", 0x12340801) + bytes(5), "bad idx magic number"),
        (struct.pack(">I", 0x800), "bad idx magic number"),
        (struct.pack(">II", 0x803, 2), "truncated idx file, the header"),
        (struct.pack(">IIII", 0x803, 2, 2, 2) + bytes(7), "truncated idx file"),
        (struct.pack(">II", 0x801, 2) + bytes(3), "too long"),
        (b"\x1f\x8b\x08\x00garbage", "not a valid gzip file"),
    ],
)
def test_read_idx_errors_name_the_path(tmp_path, data, message):
    path = tmp_path / "bad-idx"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_truncated_gzip(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(idx_bytes(torch.zeros(50, 4, 4, dtype=torch.uint8)))[:-10])
    with pytest.raises(ValueError, match="not a valid gzip file"):
        read_idx(path)


@pytest.mark.parametrize(("split", "per_class"), [("train", 500), ("test", 100)])
def test_shipped_sample(split, per_class):
    images, labels = load_fashion_mnist(split, sample=True)
    n = 10 * per_class
    assert images.shape == (n, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (n,) and labels.dtype == torch.int64
    assert images.min() == 0 and images.max() == 1
    assert torch.equal(labels.bincount(), torch.full((10,), per_class))
    assert Path(fashion_mnist_source(split, sample=True)).name.startswith("fashion-mnist-sample-")


def test_shipped_files_are_small():
    size = sum(p.stat().st_size for p in SHIPPED.iterdir())
    assert size < 3_000_000
    assert "MIT License" in (SHIPPED / "LICENSE-fashion-mnist.txt").read_text(encoding="utf-8")


@needs_debian
@pytest.mark.parametrize("split", ["train", "test"])
def test_sample_is_a_subset_of_the_debian_dataset(split):
    full_images, full_labels = load_fashion_mnist(split, sample=False)
    assert len(full_labels) == {"train": 60000, "test": 10000}[split]
    labels_of = {}
    for image, label in zip(full_images, full_labels.tolist(), strict=True):
        labels_of.setdefault(image.numpy().tobytes(), set()).add(label)
    images, labels = load_fashion_mnist(split, sample=True)
    for image, label in zip(images, labels.tolist(), strict=True):
        assert label in labels_of.get(image.numpy().tobytes(), set())


@needs_debian
def test_sample_script_reproduces_the_shipped_files(tmp_path):
    script = REPO / "experiments" / "make_fashion_mnist_sample.py"
    subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    made = sorted(p.name for p in tmp_path.iterdir())
    assert len(made) == 4
    for name in made:
        assert (tmp_path / name).read_bytes() == (SHIPPED / name).read_bytes()


@pytest.mark.exactness
@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("layout", [(), ("FashionMNIST", "raw")])
def test_load_from_root(tmp_path, compress, layout):
    images, labels = write_split(tmp_path.joinpath(*layout), "t10k", 12, compress)
    loaded_images, loaded_labels = load_fashion_mnist("test", root=tmp_path)
    assert torch.equal(loaded_images, images[:, None].float() / 255)
    assert torch.equal(loaded_labels, labels.long())
    assert fashion_mnist_source("test", root=tmp_path).startswith(str(tmp_path.joinpath(*layout)))


def test_load_errors(tmp_path, monkeypatch):
    write_split(tmp_path, "t10k", 3, compress=True)
    with pytest.raises(FileNotFoundError, match="FashionMNIST/raw") as info:
        load_fashion_mnist("train", root=tmp_path)
    assert str(tmp_path) in str(info.value)
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        load_fashion_mnist("val", sample=True)
    with pytest.raises(ValueError, match="not both"):
        load_fashion_mnist("test", root=tmp_path, sample=True)
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="absent"):
        load_fashion_mnist("test", sample=False)


def test_default_source_prefers_the_debian_path(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", tmp_path)
    assert "fashion-mnist-sample-t10k" in fashion_mnist_source("test")
    write_split(tmp_path, "t10k", 4, compress=True)
    assert fashion_mnist_source("test") == str(tmp_path / "t10k-images-idx3-ubyte.gz")
    assert len(load_fashion_mnist("test")[1]) == 4
    assert "fashion-mnist-sample-t10k" in fashion_mnist_source("test", sample=True)


def circular_distance(a: float, b: float) -> float:
    d = (a - b) % 1.0
    return min(d, 1.0 - d)


@settings(max_examples=60, deadline=None)
@given(
    num_hues=st.integers(1, 24),
    data=st.data(),
    saturation=st.floats(0.05, 1.0),
    hue_offset=st.floats(-2.0, 2.0),
    seed=st.integers(0, 2**31),
)
def test_tint_hue_matches_label(num_hues, data, saturation, hue_offset, seed):
    label = data.draw(st.integers(0, num_hues - 1))
    image = torch.rand(1, 1, 5, 6, generator=torch.Generator().manual_seed(seed))
    image[0, 0, 2, 3] = 0.9
    out = tint(image, torch.tensor([label]), num_hues, saturation, hue_offset)
    assert out.shape == (1, 3, 5, 6)
    assert out.min() >= 0 and out.max() <= 1
    h, s, v = colorsys.rgb_to_hsv(*out[0, :, 2, 3].tolist())
    assert circular_distance(h, hue_offset + label / num_hues) < 1e-5
    assert s == pytest.approx(saturation, abs=1e-5)
    assert v == pytest.approx(0.9, abs=1e-6)
    assert torch.allclose(out.max(1).values, image[:, 0])


def test_tint_hue_step_and_black_background():
    labels = torch.arange(24)
    images = torch.zeros(24, 1, 4, 4)
    images[:, :, 1:3, 1:3] = 0.7
    out = tint(images, labels, num_hues=24, hue_step=15 / 360, hue_offset=0.5)
    assert torch.equal(out[:, :, 0, 0], torch.zeros(24, 3))
    for k in range(24):
        h, _, _ = colorsys.rgb_to_hsv(*out[k, :, 1, 1].tolist())
        assert circular_distance(h, 0.5 + k * 15 / 360) < 1e-5
    fine = tint(images[:8], labels[:8], num_hues=8, hue_step=15 / 360)
    hues = [colorsys.rgb_to_hsv(*fine[k, :, 1, 1].tolist())[0] for k in range(8)]
    assert hues == pytest.approx([k * 15 / 360 for k in range(8)], abs=1e-5)


@pytest.mark.exactness
def test_tint_accepts_grey_rgb_and_rejects_bad_input():
    grey = torch.rand(3, 1, 4, 4)
    labels = torch.tensor([0, 1, 2])
    assert torch.equal(tint(grey.expand(3, 3, 4, 4), labels, 3), tint(grey, labels, 3))
    with pytest.raises(ValueError, match="channels that differ"):
        tint(torch.rand(3, 3, 4, 4), labels, 3)
    with pytest.raises(ValueError, match=r"hue_labels must lie in \[0, 2\]"):
        tint(grey, torch.tensor([0, 1, 3]), 3)
    with pytest.raises(TypeError, match="hue_labels must be an int64"):
        tint(grey, labels.float(), 3)
    with pytest.raises(ValueError, match="hue_labels must have shape"):
        tint(grey, labels[:2], 3)
    with pytest.raises(ValueError, match="saturation"):
        tint(grey, labels, 3, saturation=1.5)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        tint(grey * 2, labels, 3)


def test_random_hue_labels():
    labels = random_hue_labels(6000, 6, torch.Generator().manual_seed(1))
    assert labels.dtype == torch.int64 and labels.shape == (6000,)
    counts = labels.bincount(minlength=6)
    assert len(counts) == 6 and counts.min() > 850
    assert torch.equal(labels, random_hue_labels(6000, 6, torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="num_hues"):
        random_hue_labels(3, 0)
