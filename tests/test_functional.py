"""The batched image functions (augment/functional.py): torchvision's formulas, the two ways a
gated operation selects its samples, and inputs left untouched."""

from __future__ import annotations

from unittest.mock import patch

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

from equimod_plugin import augment
from equimod_plugin.augment import functional as AF


def selection(selected: bool):
    """Force the CPU path (only the selected samples) or the whole-batch path."""
    return patch.object(AF, "selected_only", lambda device: selected)


def _images(
    seed: int, b: int = 6, size: int = 12, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    x = torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    x[:, :, 0] = x[:, :1, 0]  # a grey row (chroma 0)
    x[:, 1, 1] = x[:, 0, 1]  # red and green tie for the maximum in places
    x[:, :, 2, 0], x[:, :, 2, 1] = 0.0, 1.0  # black and white pixels
    return x


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), shift=st.floats(-0.5, 0.5))
def test_adjust_hue_is_torchvision_adjust_hue(seed: int, shift: float) -> None:
    x = _images(seed)
    shifts = torch.full((x.shape[0],), shift)
    shifts[0] = 0.0
    ours = AF.adjust_hue(x, shifts)
    for image, s, out in zip(x, shifts.tolist(), ours, strict=True):
        torch.testing.assert_close(out, TF.adjust_hue(image, s), atol=1e-5, rtol=0)
    assert ours.min() >= 0 and ours.max() <= 1


def test_adjust_hue_keeps_grey_pixels_and_turns_red_by_thirds() -> None:
    grey = torch.full((1, 3, 2, 2), 0.3)
    assert torch.equal(AF.adjust_hue(grey, torch.tensor([0.25])), grey)
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(3, 3, 1, 1)
    out = AF.adjust_hue(red, torch.tensor([1 / 3, 2 / 3, -1 / 3])).flatten(1)
    torch.testing.assert_close(out, torch.tensor([[0.0, 1, 0], [0, 0, 1], [0, 0, 1]]))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    flags=st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_both_selection_paths_give_the_same_views(seed: int, flags: list[bool]) -> None:
    """CPU computes only the selected samples; other devices and torch.compile the whole
    batch with a 0 / 1 lerp. Same values (and the unselected samples exactly the input)."""
    x = _images(seed)
    apply = torch.tensor(flags)
    sigma = torch.rand(6, generator=torch.Generator().manual_seed(seed)) * 1.9 + 0.1
    order = torch.rand(6, 4, generator=torch.Generator().manual_seed(seed + 1)).argsort(dim=1)
    factors = torch.rand(6, 4, generator=torch.Generator().manual_seed(seed + 2)) * 0.8 + 0.6
    factors[:, 3] -= 1.0
    calls = {
        "hflip": lambda: AF.hflip(x, apply),
        "grayscale": lambda: AF.random_grayscale(x, apply),
        "solarize": lambda: AF.solarize(x, apply, 0.5),
        "blur": lambda: AF.gaussian_blur(x, apply, torch.where(apply, sigma, 0.0), 5),
        "jitter": lambda: AF.color_jitter(x, apply, order, factors),
    }
    for name, call in calls.items():
        with selection(True):
            sparse = call()
        with selection(False):
            dense = call()
        torch.testing.assert_close(dense, sparse, atol=1e-6, rtol=0, msg=name)
        for out in (sparse, dense):
            assert torch.equal(out[~apply], x[~apply]), name


@pytest.mark.parametrize("view", [1, 2])
def test_whole_pipelines_match_on_both_selection_paths(view: int) -> None:
    aug = augment.byol(16, view=view, variant="cifar")
    x = _images(3, b=32, size=20)
    params = aug.sample(x, generator=torch.Generator().manual_seed(0))
    with selection(True):
        sparse, _ = aug(x, params=params)
    with selection(False):
        dense, _ = aug(x, params=params)
    torch.testing.assert_close(dense, sparse, atol=1e-6, rtol=0)


@pytest.mark.parametrize("selected", [True, False])
@pytest.mark.parametrize("make", [lambda: augment.byol(12, view=2), lambda: augment.simclr(12)])
def test_no_operation_writes_into_its_input(make, selected: bool) -> None:
    aug = make()
    x = _images(5, b=16, size=12)
    before = x.clone()
    params = aug.identity_params(16)
    params[:8] = aug.sample(x[:8])
    with selection(selected):
        aug(x, params=params)
        for op, s in zip(aug.ops, aug._slices, strict=True):
            op.apply(x, params[:, s])
    assert torch.equal(x, before)


def test_jitter_leaves_samples_it_does_not_apply_to_exactly_unchanged() -> None:
    x = _images(7, b=8)
    apply = torch.tensor([True, False] * 4)
    order = torch.arange(4).repeat(8, 1)
    factors = torch.tensor([1.3, 0.7, 1.4, 0.1]).repeat(8, 1)
    out = AF.color_jitter(x, apply, order, factors)
    assert torch.equal(out[~apply], x[~apply])
    assert not torch.allclose(out[apply], x[apply])


@pytest.mark.parametrize("size", [16, 72])  # below and above CHANNELS_LAST_PIXELS
def test_blur_is_torchvision_gaussian_blur_in_both_layouts(size: int) -> None:
    assert (size * size >= AF.CHANNELS_LAST_PIXELS) == (size == 72)
    x = _images(11, b=4, size=size)
    sigma = torch.tensor([0.1, 0.7, 1.3, 2.0])
    out = AF.gaussian_blur(x, torch.ones(4, dtype=torch.bool), sigma, 23)
    for image, s, o in zip(x, sigma.tolist(), out, strict=True):
        torch.testing.assert_close(o, TF.gaussian_blur(image, [23, 23], [s, s]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("jitter", ["ColorJitter", "ColorJiggle"])
def test_kornia_colour_jitters_match_on_both_selection_paths(jitter: str) -> None:
    K = pytest.importorskip("kornia.augmentation")
    aug = augment.from_kornia(
        [getattr(K, jitter)(0.4, 0.4, 0.4, 0.1, p=0.5)], jitter_order="per_sample"
    )
    x = _images(13, b=16, size=12)
    params = aug.sample(x, generator=torch.Generator().manual_seed(0))
    with selection(True):
        sparse, _ = aug(x, params=params)
    with selection(False):
        dense, _ = aug(x, params=params)
    torch.testing.assert_close(dense, sparse, atol=1e-6, rtol=0)
    skipped = params[:, 0] == 0
    assert skipped.any() and torch.equal(sparse[skipped], x[skipped])
