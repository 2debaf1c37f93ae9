"""Properties of the parameter-recording augmentations.

Each parameter field is checked against an independent computation with torchvision's
functional transforms (the ones lightly's transforms call), never against our own code.

Exactness: replaying a batch with its parameters is bit-identical (the same computation);
results that depend on how the batch is split (chunks: vectorised kernels may group samples
differently on another CPU) are compared within ``1e-6``. Tests asserting exact equality are
marked ``exactness`` (CI re-runs them under ``ATEN_CPU_CAPABILITY=default`` and ``avx2``).
"""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

from equimod_plugin import augment
from equimod_plugin.augment import (
    ColorJitter,
    GaussianBlur,
    HorizontalFlip,
    ParamAugment,
    RandomGrayscale,
    RandomResizedCrop,
    RandomSolarize,
)

PRESETS = {
    "simclr-cifar": lambda s, e: augment.simclr(s, variant="cifar", encoding=e),
    "simclr-imagenet": lambda s, e: augment.simclr(s, blur_kernel=5, encoding=e),
    "byol-1": lambda s, e: augment.byol(s, view=1, variant="cifar", encoding=e),
    "byol-2": lambda s, e: augment.byol(s, view=2, variant="cifar", encoding=e),
}
WIDTHS = {"simclr-cifar": 15, "simclr-imagenet": 17, "byol-1": 18, "byol-2": 18}

presets = st.sampled_from(sorted(PRESETS))
encodings = st.sampled_from(["normalized", "official"])
fast = settings(max_examples=20, deadline=None)


def images(batch: int, size: int, seed: int = 0, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=g, dtype=torch.float64).to(dtype)


# --- layout -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("encoding", ["normalized", "official"])
def test_layout_width_and_contiguous_fields(name, encoding):
    layout = PRESETS[name](16, encoding).layout
    assert layout.param_dim == WIDTHS[name]
    stops = [0] + [s.stop for s in layout.fields.values()]
    assert [s.start for s in layout.fields.values()] == stops[:-1]
    assert stops[-1] == layout.param_dim == len(layout.columns)
    assert list(layout.fields)[:6] == [
        "crop",
        "flip",
        "color_jitter",
        "jitter_order",
        "jitter_factors",
        "grayscale",
    ]
    assert layout.describe().count("\n") == len(layout.fields) + 1


def test_official_layout_matches_paper_table():
    layout = augment.byol(32, view=2, encoding="official").layout
    expected = {
        "crop": slice(0, 4),
        "flip": slice(4, 5),
        "color_jitter": slice(5, 6),
        "jitter_order": slice(6, 10),
        "jitter_factors": slice(10, 14),
        "grayscale": slice(14, 15),
        "blur": slice(15, 17),
        "solarize": slice(17, 18),
    }
    assert dict(layout.fields) == expected
    ident = layout.identity(1)[0]
    assert ident[6:10].tolist() == [0, 1, 2, 3] and ident[10:14].tolist() == [1, 1, 1, 0]


@pytest.mark.exactness
def test_split_returns_field_views():
    aug = augment.byol(16)
    _, params = aug(images(3, 16))
    parts = aug.layout.split(params)
    assert torch.equal(torch.cat(list(parts.values()), dim=1), params)


# --- replay, identity, reproducibility ------------------------------------------------------


@pytest.mark.exactness
@fast
@given(
    name=presets,
    encoding=encodings,
    batch=st.integers(1, 6),
    size=st.integers(8, 24),
    in_size=st.integers(8, 40),
    seed=st.integers(0, 2**16),
)
def test_replay_is_bit_exact(name, encoding, batch, size, in_size, seed):
    aug = PRESETS[name](size, encoding)
    x = images(batch, in_size, seed)
    torch.manual_seed(seed)
    views, params = aug(x)
    assert views.shape == (batch, 3, size, size) and views.dtype == x.dtype
    assert params.shape == (batch, WIDTHS[name]) and params.dtype == torch.float32
    replayed, same = aug(x, params=params)
    assert torch.equal(replayed, views) and same is params
    assert 0 <= views.min() and views.max() <= 1


@pytest.mark.exactness
@fast
@given(
    name=presets,
    encoding=encodings,
    batch=st.integers(1, 6),
    size=st.integers(4, 24),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_identity_params_map_batch_to_itself(name, encoding, batch, size, dtype):
    aug = PRESETS[name](size, encoding)
    x = images(batch, size, dtype=dtype)
    views, _ = aug(x, params=aug.identity_params(batch))
    assert torch.equal(views, x)


def test_identity_crop_at_other_input_size_is_a_resize():
    aug = ParamAugment([RandomResizedCrop(16, interpolation="bilinear")])
    x = images(2, 8)
    views, _ = aug(x, params=aug.identity_params(2))
    expected = TF.resize(x, [16, 16], antialias=False)
    torch.testing.assert_close(views, expected, atol=1e-5, rtol=0)


@pytest.mark.exactness
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_seeded_runs_reproduce(name):
    aug = PRESETS[name](16, "normalized")
    x = images(8, 20)
    torch.manual_seed(3)
    v1, p1 = aug(x)
    torch.manual_seed(3)
    v2, p2 = aug(x)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    v3, p3 = aug(x, generator=g1)
    v4, p4 = aug(x, generator=g2)
    assert torch.equal(v1, v2) and torch.equal(p1, p2)
    assert torch.equal(v3, v4) and torch.equal(p3, p4)
    assert not torch.equal(p1, aug(x)[1])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_views_do_not_depend_on_the_chunk_size(name):
    """Chunks change how vectorised kernels group samples: equal up to rounding, not bitwise
    (1-2 ulp apart on some CPUs)."""
    whole = PRESETS[name](16, "normalized")
    x = images(7, 20)
    views, params = whole(x)
    for chunk_size in (1, 3):
        chunked = ParamAugment(list(whole.ops), "normalized", chunk_size=chunk_size)
        torch.testing.assert_close(chunked(x, params=params)[0], views, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="chunk_size"):
        ParamAugment(list(whole.ops), chunk_size=0)


def test_module_conversions_still_work():
    aug = augment.byol(8, view=2)
    assert aug.to("cpu") is aug and aug.float() is aug
    assert isinstance(aug.state_dict(), dict)
    views, _ = aug(images(2, 8))
    assert views.shape == (2, 3, 8, 8)


def test_bfloat16_images_keep_their_dtype():
    aug = augment.byol(16, view=2)
    views, params = aug(images(4, 16, dtype=torch.bfloat16))
    assert views.dtype == torch.bfloat16 and params.dtype == torch.float32
    assert torch.isfinite(views.float()).all()


def test_empty_batch():
    aug = augment.byol(16, view=2)
    views, params = aug(torch.rand(0, 3, 20, 20))
    assert views.shape == (0, 3, 16, 16) and params.shape == (0, 18)


# --- each field against an independent computation ----------------------------------------


def _only(op, encoding="normalized"):
    return ParamAugment([op], encoding)


@pytest.mark.parametrize("encoding", ["normalized", "official"])
def test_crop_box_matches_torchvision_resized_crop(encoding):
    torch.manual_seed(0)
    aug = _only(RandomResizedCrop(24, scale=(0.2, 1.0), encoding=encoding), encoding)
    x = images(16, 20)
    views, params = aug(x)
    scale = 1 if encoding == "official" else torch.tensor([20.0, 20, 20, 20])
    boxes = (params * scale).round().long()
    for v, img, (top, left, h, w) in zip(views, x, boxes.tolist(), strict=True):
        ref = TF.resized_crop(img, top, left, h, w, [24, 24], antialias=False)
        torch.testing.assert_close(v, ref, atol=2e-5, rtol=0)


def test_crop_sampling_statistics_match_torchvision_ranges():
    torch.manual_seed(1)
    scale, ratio = (0.2, 0.9), (0.5, 2.0)
    aug = _only(RandomResizedCrop(8, scale=scale, ratio=ratio))
    _, params = aug(images(4000, 64))
    top, left, h, w = params.unbind(1)
    area, aspect = h * w, w / h
    tol = 4 / 64  # one pixel of rounding on each side
    assert (area >= scale[0] - tol).all() and (area <= scale[1] + tol).all()
    assert (aspect >= ratio[0] * (1 - tol)).all() and (aspect <= ratio[1] * (1 + tol)).all()
    assert (top + h <= 1).all() and (left + w <= 1).all() and (top >= 0).all()
    # log-uniform aspect: the median aspect is about 1 for a symmetric log range
    assert abs(aspect.log().median().item()) < 0.1


@pytest.mark.exactness
def test_flip_flag_matches_torch_flip():
    torch.manual_seed(2)
    crop = RandomResizedCrop(16)
    aug = ParamAugment([crop, HorizontalFlip(0.5)])
    x = images(32, 20)
    views, params = aug(x)
    flags = params[:, 4]
    assert 0 < flags.sum() < 32
    unflipped, _ = ParamAugment([crop])(x, params=params[:, :4])
    for v, u, f in zip(views, unflipped, flags, strict=True):
        assert torch.equal(v, torch.flip(u, dims=[-1]) if f else u)


def _torchvision_jitter(img, order, factors):
    fns = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for op in order:
        img = fns[op](img, factors[op])
    return img


@pytest.mark.exactness
@pytest.mark.parametrize("encoding", ["normalized", "official"])
def test_color_jitter_matches_torchvision_in_its_sampled_order(encoding):
    torch.manual_seed(4)
    aug = _only(ColorJitter(0.8, 0.8, 0.8, 0.2, p=0.8, encoding=encoding), encoding)
    x = images(24, 12, dtype=torch.float64)
    views, params = aug(x)
    applied = params[:, 0]
    order, factors = params[:, 1:5], params[:, 5:9]
    if encoding == "normalized":
        order, factors = order * 1.5 + 1.5, factors + torch.tensor([1.0, 1, 1, 0])
    for i in range(24):
        if applied[i] == 0:
            assert torch.equal(views[i], x[i])
            assert factors[i].tolist() == [1, 1, 1, 0]
            continue
        ref = _torchvision_jitter(x[i], order[i].round().long().tolist(), factors[i].tolist())
        torch.testing.assert_close(views[i], ref, atol=1e-4, rtol=0)


def test_brightness_factor_matches_mean_change():
    torch.manual_seed(5)
    aug = _only(ColorJitter(0.5, 0.0, 0.0, 0.0, p=1.0))
    x = 0.2 + 0.4 * images(16, 8)  # no clamping for factors in [0.5, 1.5]
    views, params = aug(x)
    factor = params[:, 5] + 1
    torch.testing.assert_close(views.mean(dim=(1, 2, 3)) / x.mean(dim=(1, 2, 3)), factor)


def test_jitter_sampling_ranges_and_permutation():
    torch.manual_seed(6)
    aug = _only(ColorJitter(0.4, 0.3, 0.2, 0.1, p=0.8, encoding="official"), "official")
    _, params = aug(images(3000, 4))
    applied = params[:, 0].bool()
    assert abs(applied.float().mean().item() - 0.8) < 0.03
    f = params[applied, 5:9]
    for j, (lo, hi) in enumerate([(0.6, 1.4), (0.7, 1.3), (0.8, 1.2), (-0.1, 0.1)]):
        assert f[:, j].min() >= lo and f[:, j].max() <= hi
        assert abs(f[:, j].mean().item() - (lo + hi) / 2) < 0.02
    assert (params[:, 1:5].sort(dim=1).values == torch.arange(4.0)).all()
    # every one of the 24 orders occurs
    assert len({tuple(r) for r in params[applied, 1:5].tolist()}) == 24


def test_grayscale_flag_matches_torchvision():
    torch.manual_seed(8)
    aug = _only(RandomGrayscale(0.5))
    x = images(32, 8)
    views, params = aug(x)
    for v, img, f in zip(views, x, params[:, 0], strict=True):
        ref = TF.rgb_to_grayscale(img, num_output_channels=3) if f else img
        torch.testing.assert_close(v, ref, atol=1e-6, rtol=0)


@pytest.mark.exactness
def test_blur_sigma_matches_torchvision_gaussian_blur():
    torch.manual_seed(9)
    aug = _only(GaussianBlur(0.5, kernel_size=7))
    x = images(16, 16)
    views, params = aug(x)
    assert 0 < params[:, 0].sum() < 16
    for v, img, (applied, sigma) in zip(views, x, params.tolist(), strict=True):
        if applied:
            assert 0.1 <= sigma <= 2.0
            ref = TF.gaussian_blur(img, [7, 7], [sigma, sigma])
            torch.testing.assert_close(v, ref, atol=1e-5, rtol=0)
        else:
            assert sigma == 0 and torch.equal(v, img)


@pytest.mark.exactness
def test_solarize_flag_matches_torchvision():
    torch.manual_seed(10)
    aug = _only(RandomSolarize(0.5, threshold=0.5))
    x = images(32, 8)
    views, params = aug(x)
    for v, img, f in zip(views, x, params[:, 0], strict=True):
        assert torch.equal(v, TF.solarize(img, 0.5) if f else img)


@pytest.mark.parametrize("view, blur_p, solarize_p", [(1, 1.0, 0.0), (2, 0.1, 0.2)])
def test_byol_views_have_published_probabilities(view, blur_p, solarize_p):
    torch.manual_seed(11)
    aug = augment.byol(4, view=view, blur_kernel=3)
    _, params = aug(images(4000, 8))
    fields = aug.layout.fields
    rate = {
        n: params[:, fields[n]][:, 0].mean().item()
        for n in ("flip", "grayscale", "blur", "solarize")
    }
    assert abs(rate["flip"] - 0.5) < 0.03 and abs(rate["grayscale"] - 0.2) < 0.03
    assert abs(rate["blur"] - blur_p) < 0.03 and abs(rate["solarize"] - solarize_p) < 0.03


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.rand(3, 16, 16), r"x must have shape \(B, C, H, W\)"),
        ((torch.rand(2, 3, 16, 16) * 255).to(torch.uint8), "floating point"),
        (torch.rand(2, 1, 16, 16), "3 channels"),
        (torch.rand(2, 3, 16, 16) * 2, r"values in \[0, 1\]"),
        (torch.full((2, 3, 16, 16), float("nan")), r"values in \[0, 1\]"),
    ],
)
def test_bad_images_are_rejected(x, match):
    with pytest.raises(ValueError, match=match):
        augment.byol(16)(x)


def test_non_tensor_images_are_rejected():
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        augment.byol(16)([[0.5]])


@pytest.mark.parametrize(
    "params, match",
    [
        (torch.zeros(2, 17), r"params must have shape \(2, 18\)"),
        (torch.zeros(3, 18), r"params must have shape \(2, 18\)"),
        (torch.zeros(2, 18, dtype=torch.long), "floating point"),
        (torch.full((2, 18), float("nan")), "finite"),
        (torch.zeros(18), r"params must have shape"),
    ],
)
def test_bad_params_shape_are_rejected(params, match):
    with pytest.raises(ValueError, match=match):
        augment.byol(16)(torch.rand(2, 3, 16, 16), params=params)


def test_bad_param_values_are_rejected():
    aug = augment.byol(16)
    x = torch.rand(2, 3, 16, 16)
    good = aug.identity_params(2)
    cases = [
        (aug.layout.fields["flip"], 0.5, "flip.applied"),
        (aug.layout.fields["jitter_order"], 1.0, "permutation"),
        (slice(2, 3), 2.0, "crop"),
    ]
    for s, value, match in cases:
        bad = good.clone()
        bad[:, s] = value
        with pytest.raises(ValueError, match=match):
            aug(x, params=bad)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: augment.byol(16, view=3), "view must be 1 or 2"),
        (lambda: augment.simclr(16, variant="stl"), "variant must be"),
        (lambda: RandomResizedCrop(16, scale=(0.5, 0.2)), "scale must be"),
        (lambda: GaussianBlur(kernel_size=4), "odd"),
        (lambda: HorizontalFlip(1.5), r"p must be a probability"),
        (lambda: ColorJitter(hue=0.7), "hue must be"),
        (lambda: ParamAugment([]), "at least one"),
        (lambda: ParamAugment([RandomResizedCrop(8, encoding="official")]), "encoding"),
    ],
)
def test_bad_constructor_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_params_on_other_device_is_rejected():
    aug = augment.byol(8)
    meta = aug.identity_params(2, device="meta")
    with pytest.raises(ValueError, match="one device"):
        aug(torch.rand(2, 3, 8, 8), params=meta)


# --- raw values and their encodings ---------------------------------------------------------


@pytest.mark.exactness
@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("encoding", ["normalized", "official"])
@pytest.mark.parametrize("in_size", [(16, 16), (21, 37)])
def test_raw_values_round_trip_through_the_encoding(name, encoding, in_size):
    """Each op's drawn raw values decode back from the layout's encoding: exactly, except the
    normalized jitter factors (``f - 1`` drops bits for ``f < 0.5``: within 1e-7), which are
    exact from the first round trip on (the views are always computed from decoded values)."""
    aug = PRESETS[name](16, encoding)
    batch = augment.ops.Batch(64, *in_size, torch.device("cpu"))
    g = torch.Generator().manual_seed(3)
    for op in aug.ops:
        raw = op.draw(batch, g)
        decoded = op.decode(op.encode(raw, in_size), in_size)
        assert decoded.keys() == raw.keys()
        again = op.decode(op.encode(decoded, in_size), in_size)
        for key, value in raw.items():
            assert torch.equal(again[key], decoded[key]), (type(op).__name__, key)
            if key == "factors" and encoding == "normalized":
                torch.testing.assert_close(decoded[key], value, rtol=0, atol=1e-7)
            else:
                assert torch.equal(decoded[key], value), (type(op).__name__, key)
        if isinstance(op, RandomResizedCrop):  # boxes in whole pixels inside the image
            box = raw["box"]
            assert torch.equal(box, box.round()) and bool((box[:, 2:] >= 1).all())


def test_gated_off_samples_get_the_identity_raw_values():
    jitter = ColorJitter(p=0.5)
    batch = augment.ops.Batch(200, 8, 8, torch.device("cpu"))
    raw = jitter.draw(batch, torch.Generator().manual_seed(0))
    off = ~raw["applied"]
    assert 0 < int(off.sum()) < 200
    identity = jitter.identity_raw(None)
    assert bool((raw["order"][off] == identity["order"]).all())
    assert bool((raw["factors"][off] == identity["factors"]).all())
