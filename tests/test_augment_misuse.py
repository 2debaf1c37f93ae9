"""Regression tests for the augmentation misuse bugs of issue 12 (B1, B2, B9, unclear errors,
sampling without images).

Each test fails on the code before the fix:

- B1: half-precision images gave NaN pixels and errors up to 1 (coordinates in bf16, CPU
  ``grid_sample`` in bf16/fp16);
- B2: ``encoding="official"`` replayed crop boxes outside the image or of no size;
- B9: ``byol(11)`` / ``simclr(8)`` raised torch's padding error when blur was drawn;
- non-integer sizes and counts raised torch's errors or were truncated silently;
- sampling parameters needed a batch of images.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from equimod_plugin import augment, validation
from equimod_plugin.augment import (
    ColorJitter,
    GaussianBlur,
    HorizontalFlip,
    ParamAugment,
    RandomGrayscale,
    RandomResizedCrop,
    RandomSolarize,
)
from equimod_plugin.augment.presets import blur_kernel_size

fast = settings(max_examples=25, deadline=None)
HALF = [torch.float16, torch.bfloat16]


def images(batch: int, height: int, width: int | None = None, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, height, width or height, generator=g)


# --- B1: half precision ---------------------------------------------------------------------

HALF_PRESETS = {
    "byol-1": lambda s: augment.byol(s, view=1),
    "byol-2": lambda s: augment.byol(s, view=2, solarize_p=0.5),
    "simclr-imagenet": lambda s: augment.simclr(s, blur_p=1.0),
    "simclr-cifar": lambda s: augment.simclr(s, variant="cifar"),
}


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("size", [224, 32])
@pytest.mark.parametrize("name", sorted(HALF_PRESETS))
def test_half_precision_views_differ_from_float32_only_by_rounding(name, size, dtype):
    aug = HALF_PRESETS[name](size)
    x = images(3, size + size // 8)
    expected, params = aug(x, generator=torch.Generator().manual_seed(1))
    views, _ = aug(x.to(dtype), params=params)
    assert views.dtype == dtype
    assert torch.isfinite(views.float()).all()
    error = (views.float() - expected).abs()
    assert error.max() <= 0.02, (error.max().item(), error.mean().item())


HALF_OPS = {
    "crop-bilinear": lambda: RandomResizedCrop(224),
    "crop-bicubic": lambda: RandomResizedCrop(224, interpolation="bicubic"),
    "flip": lambda: HorizontalFlip(1.0),
    "jitter": lambda: ColorJitter(0.8, 0.8, 0.8, 0.2, p=1.0),
    "grayscale": lambda: RandomGrayscale(1.0),
    "blur": lambda: GaussianBlur(1.0, 23),
    "solarize": lambda: RandomSolarize(1.0),
}


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("name", sorted(HALF_OPS))
def test_each_op_in_half_precision_differs_from_float32_only_by_rounding(name, dtype):
    """Each op's ``apply`` alone (no pipeline) computes half-precision images in float32."""
    op = HALF_OPS[name]()
    x = images(2, 240)
    params = op.sample(x, generator=torch.Generator().manual_seed(2))
    expected = op.apply(x.to(dtype).float(), params)  # the same rounded input, in float32
    out = op.apply(x.to(dtype), params)
    assert out.dtype == dtype and torch.isfinite(out.float()).all()
    rounding = torch.finfo(dtype).eps  # one rounding of values in [0, 1]
    torch.testing.assert_close(out.float(), expected, atol=rounding, rtol=0)


@pytest.mark.exactness
def test_autocast_does_not_lower_the_views_precision():
    aug = augment.byol(32, view=2)
    x = images(4, 40)
    expected, params = aug(x, generator=torch.Generator().manual_seed(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        views, _ = aug(x, params=params)
    assert views.dtype == torch.float32 and torch.equal(views, expected)


# --- B2: official crop boxes ----------------------------------------------------------------


def official_crop_params(aug: ParamAugment, box: list[float]) -> torch.Tensor:
    params = aug.identity_params(2)
    params[0, aug.layout.fields["crop"]] = torch.tensor(box)
    return params


@pytest.mark.parametrize(
    "box",
    [
        [100, 100, -5, 0],  # the example
        [0, 0, 0, 8],  # zero height
        [0, 0, 8, -2],  # negative width
        [-1, 0, 8, 8],  # above the image
        [0, 10, 8, 8],  # right of the image: left + width = 18 > 16
        [9, 0, 8, 8],  # below the image: top + height = 17 > 16
        [0, 0, 7.5, 8],  # not whole pixels
        [0.25, 0, 8, 8],
    ],
)
def test_official_crop_rejects_boxes_that_are_not_in_the_image(box):
    aug = augment.byol(8, encoding="official")
    x = images(2, 16)
    with pytest.raises(ValueError, match=r"params field 'crop' \(columns crop.top") as info:
        aug(x, params=official_crop_params(aug, box))
    assert "(16, 16)" in str(info.value) and "row 0" in str(info.value)
    with validation(False):  # a value check: off with the others
        aug(x, params=official_crop_params(aug, [0, 0, 8, 8]))


def test_official_crop_rejects_boxes_sampled_at_another_image_size():
    aug = augment.simclr(8, "cifar", encoding="official")
    _, params = aug(images(64, 32), generator=torch.Generator().manual_seed(4))
    aug(images(64, 32), params=params)  # the image size they were drawn for
    with pytest.raises(ValueError, match="params field 'crop'"):
        aug(images(64, 16), params=params)


def test_official_crop_accepts_boxes_touching_the_edges_of_non_square_images():
    aug = ParamAugment([RandomResizedCrop(8, encoding="official")], "official")
    x = images(1, 12, 20)
    views, _ = aug(x, params=torch.tensor([[4.0, 12.0, 8.0, 8.0]]))  # bottom-right corner
    torch.testing.assert_close(views, x[:, :, 4:12, 12:20])


# --- B9: blur kernel and view size ----------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: augment.byol(11, view=1),
        lambda: augment.byol(11, view=2, blur_p=1.0),
        lambda: augment.simclr(8, blur_p=1.0),
        lambda: augment.byol(2, view=1),
        lambda: augment.simclr((9, 40), blur_p=1.0),
    ],
    ids=["byol-11", "byol-2-11", "simclr-8", "byol-2px", "simclr-9x40"],
)
def test_tiny_views_blur_with_a_kernel_that_fits(make):
    aug = make()
    views, params = aug(images(4, 24), generator=torch.Generator().manual_seed(5))
    assert bool(params[:, aug.layout.fields["blur"]][:, 0].all())  # blur drawn everywhere
    assert torch.isfinite(views).all()


def test_preset_blur_kernels_follow_the_view_size():
    kernel = lambda aug: aug.ops[4].kernel_size  # noqa: E731
    assert kernel(augment.byol(224)) == kernel(augment.simclr(224)) == 23  # the recipe's
    assert kernel(augment.byol(96)) == 9 and kernel(augment.simclr(32)) == 3
    assert kernel(augment.byol(224, variant="cifar")) == kernel(augment.byol(32, 2, "cifar")) == 3
    assert kernel(augment.byol(224, blur_kernel=5)) == 5


@given(size=st.integers(1, 1000))
@settings(max_examples=200, deadline=None)
def test_blur_kernel_size_is_odd_fits_and_is_a_tenth_of_the_size(size):
    k = blur_kernel_size(size)
    assert k % 2 == 1 and k // 2 < size  # reflect padding fits
    if size >= 20:
        assert abs(k - size / 10) <= 1  # the nearest odd size to 10 %
    assert blur_kernel_size((size, size + 50)) == k  # the smaller side decides


@pytest.mark.parametrize(
    "make, size",
    [
        (lambda: augment.byol(11, blur_kernel=23), "(11, 11)"),
        (lambda: augment.simclr(8, blur_kernel=23), "(8, 8)"),
        (lambda: augment.byol((20, 4), variant="cifar", blur_kernel=9), r"(20, 4)"),
        (lambda: ParamAugment([RandomResizedCrop(6), GaussianBlur(0.0, 13)]), "(6, 6)"),
    ],
)
def test_blur_kernel_too_large_for_the_views_is_rejected_at_construction(make, size):
    with pytest.raises(ValueError, match=r"kernel_size \d+ does not fit views of size") as info:
        make()
    assert size in str(info.value)


def test_blur_kernel_too_large_for_the_images_is_rejected_even_when_not_drawn():
    aug = ParamAugment([GaussianBlur(p=0.0, kernel_size=23)])  # no crop: size known at call
    with pytest.raises(ValueError, match=r"kernel_size 23 does not fit images of size \(8, 8\)"):
        aug(images(2, 8))


# --- unclear errors: sizes, counts and flags ------------------------------------------------


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: RandomResizedCrop(32.5), TypeError, "size must be a positive int"),
        (lambda: RandomResizedCrop((32, 32.5)), TypeError, "size must be a positive int"),
        (lambda: RandomResizedCrop(True), TypeError, "size must be a positive int"),
        (lambda: RandomResizedCrop((32,)), ValueError, r"size must be .* \(height, width\)"),
        (lambda: RandomResizedCrop(0), ValueError, "size must be a positive int"),
        (lambda: RandomResizedCrop("32"), TypeError, "size must be a positive int"),
        (lambda: RandomResizedCrop(8, scale=0.5), ValueError, r"scale must be a finite \(min"),
        (lambda: RandomResizedCrop(8, scale=(None, 1)), TypeError, r"scale\[0\] must be a real"),
        (lambda: RandomResizedCrop(8, ratio=(0.5, float("inf"))), ValueError, "ratio must be"),
        (lambda: RandomResizedCrop(8, encoding="pixels"), ValueError, "encoding must be one of"),
        (lambda: ColorJitter(encoding="raw"), ValueError, "encoding must be one of"),
        (lambda: ColorJitter(brightness="0.4"), TypeError, "brightness must be a real number"),
        (lambda: ColorJitter(hue=True), TypeError, "hue must be a real number"),
        (lambda: GaussianBlur(kernel_size=3.5), TypeError, "kernel_size must be an int"),
        (lambda: GaussianBlur(kernel_size=3.0), TypeError, "kernel_size must be an int"),
        (lambda: GaussianBlur(kernel_size=True), TypeError, "kernel_size must be an int"),
        (lambda: GaussianBlur(kernel_size=4), ValueError, "kernel_size must be a positive odd"),
        (lambda: GaussianBlur(kernel_size=0), ValueError, "kernel_size must be an int >= 1"),
        (lambda: GaussianBlur(sigma=(0.1, float("inf"))), ValueError, "sigma must be"),
        (lambda: HorizontalFlip(True), TypeError, "p must be a real number"),
        (lambda: RandomGrayscale("0.2"), TypeError, "p must be a real number"),
        (lambda: RandomSolarize(threshold=None), TypeError, "threshold must be a real number"),
        (lambda: ParamAugment([HorizontalFlip()], chunk_size=2.5), TypeError, "chunk_size"),
        (lambda: ParamAugment([HorizontalFlip()], chunk_size=True), TypeError, "chunk_size"),
        (lambda: ParamAugment([HorizontalFlip()], chunk_size=0), ValueError, "chunk_size"),
        (lambda: augment.byol(16, view=True), TypeError, "view must be the int 1 or 2"),
        (lambda: augment.byol(16, view=1.0), TypeError, "view must be the int 1 or 2"),
        (lambda: augment.byol(16.0), TypeError, "size must be a positive int"),
        (lambda: augment.simclr((16, 16.5)), TypeError, "size must be a positive int"),
        (lambda: augment.byol(16, blur_kernel=2.5), TypeError, "kernel_size must be an int"),
        (lambda: augment.byol(16, jitter=(0.4, 0.4)), ValueError, r"jitter must be \(bright"),
        (lambda: augment.simclr(16, jitter=0.4), ValueError, r"jitter must be \(bright"),
        (lambda: augment.simclr(16, "cifar", blur_p="0.5"), TypeError, "blur_p must be a real"),
    ],
)
def test_constructor_errors_name_the_argument(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda a: a.identity_params(2.5), TypeError, "batch_size must be an int >= 0"),
        (lambda a: a.identity_params(True), TypeError, "batch_size must be an int >= 0"),
        (lambda a: a.identity_params(-1), ValueError, "batch_size must be an int >= 0"),
        (lambda a: a.layout.identity(2.0), TypeError, "batch_size must be an int >= 0"),
        (lambda a: a.sample_params(2.5, 16), TypeError, "batch_size must be an int >= 0"),
        (lambda a: a.sample_params(-1, 16), ValueError, "batch_size must be an int >= 0"),
        (lambda a: a.sample_params(2, 16.0), TypeError, "image_size must be a positive int"),
        (lambda a: a.sample_params(2, (16,)), ValueError, "image_size must be a positive int"),
        (lambda a: a.sample_params(2, (16, 0)), ValueError, "image_size must be a positive int"),
        (lambda a: a.ops[0].sample_params(2, (16, True)), TypeError, "image_size must be"),
    ],
)
def test_count_and_size_errors_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call(augment.byol(8, variant="cifar"))


def test_integer_like_sizes_are_accepted():
    import numpy as np

    aug = augment.byol(np.int64(8), variant="cifar")
    assert aug.output_size == (8, 8) and isinstance(aug.output_size[0], int)
    assert aug.identity_params(np.int32(2)).shape == (2, 18)
    assert aug.sample_params(torch.tensor(3).item(), [8, 9]).shape == (3, 18)


# --- sampling without images ----------------------------------------------------------------

PRESETS = {
    "simclr-cifar": lambda e: augment.simclr(16, variant="cifar", encoding=e),
    "simclr-imagenet": lambda e: augment.simclr(16, encoding=e),
    "byol-1": lambda e: augment.byol(16, view=1, encoding=e),
    "byol-2": lambda e: augment.byol(16, view=2, encoding=e),
}


@pytest.mark.exactness
@fast
@given(
    name=st.sampled_from(sorted(PRESETS)),
    encoding=st.sampled_from(["normalized", "official"]),
    batch=st.integers(0, 9),
    height=st.integers(1, 48),
    width=st.integers(1, 48),
    seed=st.integers(0, 2**16),
)
def test_sample_params_draws_what_sample_draws(name, encoding, batch, height, width, seed):
    aug = PRESETS[name](encoding)
    x = torch.zeros(batch, 3, height, width)
    drawn = aug.sample(x, generator=torch.Generator().manual_seed(seed))
    again = aug.sample_params(batch, (height, width), generator=torch.Generator().manual_seed(seed))
    assert torch.equal(again, drawn) and again.dtype == torch.float32
    torch.manual_seed(seed)  # the global RNG, as aug(x) uses it
    drawn = aug.sample(x)
    torch.manual_seed(seed)
    assert torch.equal(aug.sample_params(batch, (height, width)), drawn)
    for op in aug.ops:  # every op on its own, too
        g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        assert torch.equal(op.sample_params(batch, (height, width), generator=g1), op.sample(x, g2))


def test_sample_params_allocates_no_images():
    """A (2, 3, 50000, 50000) float32 batch would take 60 GB; the parameters take 144 bytes."""
    aug = augment.byol(32, view=2)
    params = aug.sample_params(2, 50_000, generator=torch.Generator().manual_seed(0))
    assert params.shape == (2, 18) and torch.isfinite(params).all()
    assert aug.sample_params(0, 16).shape == (0, 18)
    assert aug.sample_params(3, 16, device="meta").device.type == "meta"
