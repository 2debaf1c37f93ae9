"""The presets and the parameter encoding against the official EquiMod code.

The official recipes (``src/dataset.py`` of the ``SimCLR+EquiMod`` / ``BYOL+EquiMod``
branches) and the official standardisation constants (``src/main.py``) are recorded in the
project's PAPERS.md §1; the numbers below are copied from there.
"""

from __future__ import annotations

import pytest
import torch

from equimod_plugin import augment
from equimod_plugin.augment import HorizontalFlip, ParamAugment, RandomResizedCrop
from equimod_plugin.augment.layout import ParamLayout
from equimod_plugin.augment.standardize import COLUMNS, official_standardization

STD = "official_standardized"
# (method, variant, view, size): every official recipe (ImageNet at a small size: the
# constants do not depend on it, only what they standardise to does)
RECIPES = [
    ("simclr", "cifar", 1, 32),
    ("simclr", "imagenet", 1, 48),
    ("byol", "cifar", 1, 32),
    ("byol", "cifar", 2, 32),
    ("byol", "imagenet", 1, 48),
    ("byol", "imagenet", 2, 48),
]


def preset(method: str, variant: str, view: int, size: int, encoding: str) -> ParamAugment:
    if method == "simclr":
        return augment.simclr(size, variant=variant, encoding=encoding)  # type: ignore[arg-type]
    return augment.byol(size, view=view, variant=variant, encoding=encoding)  # type: ignore[arg-type]


def test_every_preset_crop_is_the_official_one() -> None:
    # PAPERS.md §1 "Recipes": every crop bicubic, ratio (3/4, 4/3); CIFAR-10 scale (0.2, 1) for
    # SimCLR *and* BYOL (the old BYOL CIFAR default, (0.08, 1) bilinear, was not official);
    # ImageNet (0.08, 1).
    for method, variant, view, size in RECIPES:
        crop = preset(method, variant, view, size, "normalized").ops[0]
        assert crop.interpolation == "bicubic", (method, variant)
        assert crop.scale == ((0.2, 1.0) if variant == "cifar" else (0.08, 1.0)), (method, variant)
        assert crop.ratio == pytest.approx((3 / 4, 4 / 3))
    # bilinear stays available
    assert augment.byol(32, interpolation="bilinear").ops[0].interpolation == "bilinear"


def test_byol_cifar_crop_height_matches_the_official_mean() -> None:
    # the official crop-height mean at 32 px, 23.369 / 23.374 (PAPERS.md), is that of scale
    # (0.2, 1): (0.08, 1) gives about 21.5
    aug = augment.byol(32, view=1, variant="cifar", encoding="official")
    p = aug.sample_params(20000, 32, generator=torch.Generator().manual_seed(0))
    assert p[:, 2].mean().item() == pytest.approx(23.37, abs=0.15)
    assert p[:, 3].mean().item() == pytest.approx(23.37, abs=0.15)


def test_constants_are_the_official_numbers_in_the_official_column_order() -> None:
    assert list(
        augment.byol(32, view=1, variant="cifar", encoding="official").layout.columns
    ) == list(COLUMNS)
    widths = {
        (m, v): len(official_standardization(m, v))
        for m in ("simclr", "byol")
        for v in ("cifar", "imagenet")
    }
    assert widths == {
        ("simclr", "cifar"): 15,
        ("simclr", "imagenet"): 17,
        ("byol", "cifar"): 18,
        ("byol", "imagenet"): 18,
    }
    # spot checks against PAPERS.md §1 (first, middle and appended columns of every table)
    cifar_b, imnet_s = (
        official_standardization("byol", "cifar"),
        official_standardization("simclr", "imagenet"),
    )
    assert cifar_b["crop.top"] == (4.3122, 3.9740)
    assert cifar_b["jitter_factors.hue"] == (2.2321e-07, 0.0517)
    assert cifar_b["blur.sigma"] == (0.52507, 0.65251)
    assert cifar_b["solarize.applied"] == (0.050149, 0.064719)  # BYOL mismatch, replicated
    assert imnet_s["crop.width"] == (274.57, 143.49)
    assert imnet_s["blur.applied"] == (0.50030, 0.5000)
    assert official_standardization("byol", "imagenet")["blur.applied"] == (0.27256, 0.30381)
    with pytest.raises(ValueError, match="method"):
        official_standardization("vicreg", "cifar")  # type: ignore[arg-type]


@pytest.mark.exactness
@pytest.mark.parametrize(("method", "variant", "view", "size"), RECIPES)
def test_standardized_encoding_is_what_the_official_projector_receives(
    method: str, variant: str, view: int, size: int
) -> None:
    std, official = (preset(method, variant, view, size, e) for e in (STD, "official"))
    table = official_standardization(method, variant)  # type: ignore[arg-type]
    assert std.layout.columns == list(table)
    mean = torch.tensor([m for m, _ in table.values()])
    sd = torch.tensor([s for _, s in table.values()])
    x = torch.rand(16, 3, size + 8, size + 8, generator=torch.Generator().manual_seed(1))
    views, p = std(x, generator=torch.Generator().manual_seed(0))
    raw_views, raw = official(x, generator=torch.Generator().manual_seed(0))
    # the same draws, the official code's (p - p_mean) / p_std of the raw official values
    assert torch.equal(p, (raw - mean) / sd)
    # decoding inverts it: same views up to the float32 round-off of the real factors
    torch.testing.assert_close(views, raw_views, rtol=0, atol=1e-5)
    # replay of the sampled parameters: the same views, bit for bit
    assert torch.equal(std(x, params=p)[0], views)
    # whole pixels, flags and the jitter order decode exactly
    image = (size + 8, size + 8)
    for op_s, op_o, cols_s, cols_o in zip(
        std.ops, official.ops, std._slices, official._slices, strict=True
    ):
        got, ref = op_s.decode(p[:, cols_s], image), op_o.decode(raw[:, cols_o], image)
        for name, value in ref.items():
            if value.dtype.is_floating_point and name != "box":
                torch.testing.assert_close(got[name], value, rtol=0, atol=1e-5)
            else:
                assert torch.equal(got[name], value), name


@pytest.mark.exactness
@pytest.mark.parametrize(("method", "variant", "view", "size"), RECIPES)
def test_standardized_identity_maps_a_batch_to_itself(
    method: str, variant: str, view: int, size: int
) -> None:
    aug = preset(method, variant, view, size, STD)
    x = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(2))
    assert torch.equal(aug(x, params=aug.identity_params(3))[0], x)


def test_standardized_columns_are_about_unit_scale_on_the_official_cifar_recipe() -> None:
    # the constants were computed on the official recipe's distribution, which the preset
    # reproduces: each SimCLR CIFAR column is about zero-mean unit-variance
    aug = augment.simclr(32, variant="cifar", encoding=STD)
    p = aug.sample_params(20000, 32, generator=torch.Generator().manual_seed(0))
    assert p.mean(0).abs().max().item() < 0.05
    assert ((p.std(0) - 1).abs().max().item()) < 0.15


def test_standardized_replay_is_checked_in_raw_terms() -> None:
    aug = augment.simclr(32, variant="cifar", encoding=STD)
    x = torch.rand(2, 3, 32, 32)
    p = aug.identity_params(2)
    bad_flag = p.clone()
    bad_flag[:, 4] = 0.0  # raw 0.49998: neither 0 nor 1
    with pytest.raises(ValueError, match="flip.applied"):
        aug(x, params=bad_flag)
    outside = p.clone()
    outside[:, 2] = (40 - 23.369) / 4.9544  # crop height 40 px in a 32 px image
    with pytest.raises(ValueError, match="crop"):
        aug(x, params=outside)
    fraction = p.clone()
    fraction[:, 0] = (3.5 - 4.3122) / 3.9740  # top at half a pixel
    with pytest.raises(ValueError, match="crop"):
        aug(x, params=fraction)


def test_standardized_encoding_misuse_has_clear_errors() -> None:
    with pytest.raises(ValueError, match="official_standardized.*columns"):
        augment.simclr(32, variant="cifar", blur_p=0.5, encoding=STD)  # not an official layout
    with pytest.raises(ValueError, match="standardize"):
        RandomResizedCrop(32, encoding=STD)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not standardised"):
        ParamLayout(HorizontalFlip().fields, STD)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="encoding must be one of"):
        augment.byol(32, encoding="standardized")  # type: ignore[arg-type]
    flip = HorizontalFlip().standardize({"flip.applied": (0.5, 0.5)})
    with pytest.raises(ValueError, match="no \\(mean, std\\)"):
        HorizontalFlip().standardize({"crop.top": (0.0, 1.0)})
    assert ParamAugment([flip], STD).layout.encoding == STD
    with pytest.raises(ValueError, match="only an operation in the 'official' encoding"):
        RandomResizedCrop(32).standardize({})


def test_blur_keeps_views_in_the_unit_range() -> None:
    # regression: the bicubic crop clamps to exactly 1.0 and the float32 blur of such pixels
    # overshot 1 by an ulp (found by test_augment's replay property once BYOL went bicubic)
    x = torch.rand(
        3, 3, 8, 8, generator=torch.Generator().manual_seed(175), dtype=torch.float64
    ).float()
    torch.manual_seed(175)
    views, _ = augment.byol(15, view=1, variant="cifar")(x)
    assert 0 <= views.min() and views.max() <= 1
