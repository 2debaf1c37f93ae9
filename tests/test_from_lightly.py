"""``augment.from_lightly`` and ``augment.from_torchvision``: a user's recipe, recorded.

Checked against lightly and torchvision themselves, never against the adapters' own code:
the parameters drawn follow the settings of the lightly transform (probabilities, ranges) and
the draws of torchvision's own samplers (``make_params``) and of lightly's own operations
(their PIL calls, recorded), compared with Kolmogorov-Smirnov distances and binomial
tolerances; each operation given sampled values gives torchvision's functional image (and
lightly's PIL image, within its ``uint8`` rounding). Replay is bit-identical, the views of a
lightly transform share the presets' layout, what cannot be encoded is rejected by name, and
a converted BYOL transform trains a lightly BYOL model.
"""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.v2.functional as TF
from _sampling import ks_distance, random_images
from hypothesis import given, settings
from hypothesis import strategies as st
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms import (
    BYOLTransform,
    BYOLView1Transform,
    BYOLView2Transform,
    DINOTransform,
    GaussianBlur,
    MoCoV2Transform,
    PIRLTransform,
    RandomSolarization,
    SimCLRTransform,
    SimCLRViewTransform,
    SwaVTransform,
    VICRegTransform,
)
from PIL import Image, ImageFilter
from torch import nn
from torchvision.transforms import v2

from equimod_plugin import augment
from equimod_plugin.augment import from_lightly, from_torchvision
from equimod_plugin.augment.standardize import official_standardization
from equimod_plugin.integrations.lightly import attach

SIZE = 32
N = 3000  # samples of the distribution tests
KERNEL = 13  # the default blur kernel for lightly's sigmas (0.1, 2): passed to skip the warning
fast = settings(max_examples=10, deadline=None)


def byol_transform(size: int = SIZE, **kwargs) -> BYOLTransform:
    return BYOLTransform(
        BYOLView1Transform(input_size=size, **kwargs), BYOLView2Transform(input_size=size, **kwargs)
    )


def images(batch: int, size: int | tuple[int, int] = SIZE, seed: int = 0) -> torch.Tensor:
    return random_images(batch, size, seed)


def ks_bound(n: int, m: int | None = None) -> float:
    """The KS distance exceeded with probability 0.001 when the samples share a law (one
    sample of ``n`` against a law when ``m`` is ``None``)."""
    return 1.95 * math.sqrt(1 / n + (1 / m if m else 0))


def ks_uniform(x: torch.Tensor, low: float, high: float) -> float:
    """One-sample KS statistic of ``x`` against the uniform law on [low, high]."""
    x = x.double().flatten().sort().values
    n = len(x)
    cdf = ((x - low) / (high - low)).clamp(0, 1)
    steps = torch.arange(1, n + 1, dtype=torch.float64) / n
    return float(torch.maximum(steps - cdf, cdf - (steps - 1 / n)).max())


def assert_rate(flags: torch.Tensor, p: float | torch.Tensor) -> None:
    """0/1 ``flags`` have the probability ``p``, or the rate of the 0/1 sample ``p``, within
    4.5 binomial standard errors."""
    rate = flags.double().mean().item()
    if isinstance(p, torch.Tensor):
        other, inverse_n = p.double().mean().item(), 1 / flags.numel() + 1 / p.numel()
    else:
        other, inverse_n = p, 1 / flags.numel()
    se = math.sqrt(max(other * (1 - other), 1e-4) * inverse_n)
    assert abs(rate - other) < 4.5 * se, (rate, other)


def raw_draws(aug, n: int, size, seed: int = 1) -> dict[str, torch.Tensor]:
    """The adapter's draws for ``n`` images of ``size``, decoded to raw values, by field."""
    size = (size, size) if isinstance(size, int) else size
    params = aug.sample_params(n, size, generator=torch.Generator().manual_seed(seed))
    out = {}
    for op, s in zip(aug.ops, aug._slices, strict=True):
        raw = op.decode(params[:, s], size)
        out.update({f"{op.fields[0].name}.{k}": v for k, v in raw.items()})
    return out


def first(view, name: str):
    """The first operation of class ``name`` in a lightly view transform's Compose."""
    return next(t for t in view.transform.transforms if type(t).__name__ == name)


# --- layouts: the presets' fields, one layout per transform ---------------------------------


@pytest.mark.parametrize("encoding", ["normalized", "official", "official_standardized"])
def test_byol_views_have_the_layout_of_byol_views(encoding):
    constants = official_standardization("byol", "cifar") if "standard" in encoding else None
    views = from_lightly(
        byol_transform(), blur_kernel=KERNEL, encoding=encoding, standardization=constants
    )
    presets = augment.byol_views(SIZE, variant="cifar", encoding=encoding)
    assert isinstance(views, list) and len(views) == 2
    assert [v.layout for v in views] == [p.layout for p in presets]
    ops = {type(op).__name__: i for i, op in enumerate(views[0].ops)}
    blur, solarize = ops["GaussianBlur"], ops["RandomSolarize"]
    assert [(v.ops[blur].p, v.ops[solarize].p) for v in views] == [(1.0, 0.0), (0.1, 0.2)]
    x = images(6)
    for view in views:
        out, params = view(x)
        assert out.shape == (6, 3, SIZE, SIZE) and params.shape == (6, 18)


@pytest.mark.parametrize("cls", [SimCLRTransform, MoCoV2Transform])
def test_simclr_style_transforms_have_the_simclr_layout(cls):
    views = from_lightly(cls(input_size=SIZE), blur_kernel=KERNEL)
    assert len(views) == 2
    assert all(v.layout == augment.simclr(SIZE).layout for v in views)  # blur, no solarize


def test_vicreg_keeps_its_order_solarize_then_blur():
    view, _ = from_lightly(VICRegTransform(input_size=SIZE), blur_kernel=KERNEL)
    assert list(view.layout.fields)[-2:] == ["solarize", "blur"]


def test_a_view_transform_gives_one_augmentation_and_a_list_one_per_view():
    one = from_lightly(BYOLView2Transform(input_size=SIZE), blur_kernel=KERNEL)
    assert isinstance(one, augment.ParamAugment)
    assert one.layout == augment.byol(SIZE, 2, "cifar").layout
    pair = from_lightly(
        (BYOLView1Transform(input_size=SIZE), BYOLView2Transform(input_size=SIZE)),
        blur_kernel=KERNEL,
    )
    assert [type(v) for v in pair] == [augment.ParamAugment] * 2


def test_a_multi_crop_transform_of_one_size_converts_and_skips_a_bare_color_jitter():
    """SwaV's view transform holds ``ColorJitter()`` (no strength: nothing to encode) before
    its ``RandomApply([ColorJitter(...)])``; its crops come from the multi-crop wrapper."""
    swav = SwaVTransform(
        crop_sizes=(SIZE,), crop_counts=(2,), crop_min_scales=(0.14,), crop_max_scales=(1.0,)
    )
    views = from_lightly(swav, blur_kernel=KERNEL)
    assert len(views) == 2 and views[0].layout == augment.simclr(SIZE).layout
    assert views[0].ops[0].scale == (0.14, 1.0) and views[0].ops[2].p == 0.8


def test_an_operation_one_view_lacks_is_added_to_it_with_probability_0():
    """SimCLR's view has no solarisation: it gets BYOL's, never applied, at BYOL's place."""
    simclr, byol = from_lightly(
        [SimCLRViewTransform(input_size=SIZE), BYOLView2Transform(input_size=SIZE)],
        blur_kernel=KERNEL,
    )
    assert simclr.layout == byol.layout
    assert list(simclr.layout.fields)[-1] == "solarize" and simclr.ops[-1].p == 0.0
    assert byol.ops[-1].p == 0.2
    draws = raw_draws(simclr, 200, SIZE)
    assert not draws["solarize.applied"].any()


# --- the sampled distributions are lightly's settings and torchvision's draws ----------------


@fast
@given(
    min_scale=st.floats(0.05, 0.9),
    hf_prob=st.floats(0, 1),
    cj_prob=st.floats(0, 1),
    cj_strength=st.floats(0.1, 1.0),
    cj=st.tuples(st.floats(0.05, 0.9), st.floats(0.05, 0.9), st.floats(0.05, 0.9)),
    cj_hue=st.floats(0.01, 0.5),
    gray=st.floats(0, 1),
    blur=st.floats(0, 1),
    sigmas=st.tuples(st.floats(0.1, 3.0), st.floats(0.1, 3.0)).map(sorted).map(tuple),
    solarize=st.floats(0, 1),
)
def test_parameter_distributions_follow_the_lightly_settings(
    min_scale, hf_prob, cj_prob, cj_strength, cj, cj_hue, gray, blur, sigmas, solarize
):
    view = BYOLView2Transform(
        input_size=SIZE,
        min_scale=min_scale,
        hf_prob=hf_prob,
        cj_prob=cj_prob,
        cj_strength=cj_strength,
        cj_bright=cj[0],
        cj_contrast=cj[1],
        cj_sat=cj[2],
        cj_hue=cj_hue,
        random_gray_scale=gray,
        gaussian_blur=blur,
        sigmas=sigmas,
        solarization_prob=solarize,
    )
    aug = from_lightly(view, blur_kernel=KERNEL)
    draws = raw_draws(aug, N, SIZE)
    assert aug.ops[0].scale == (min_scale, 1.0)
    top, left, h, w = draws["crop.box"].unbind(-1)
    area = h * w / SIZE**2
    assert (area <= 1).all() and (area >= min_scale * 0.8).all()  # rounding to whole pixels
    assert ((top + h <= SIZE) & (left + w <= SIZE)).all()

    assert_rate(draws["flip.applied"], hf_prob)
    assert_rate(draws["color_jitter.applied"], cj_prob)
    assert_rate(draws["grayscale.applied"], gray)
    assert_rate(draws["blur.applied"], blur)
    assert_rate(draws["solarize.applied"], solarize)

    applied = draws["color_jitter.applied"]
    factors = draws["color_jitter.factors"][applied]
    if applied.sum() >= 50:
        strengths = [cj_strength * s for s in cj]
        ranges = [(max(0.0, 1 - s), 1 + s) for s in strengths]
        ranges.append((-cj_strength * cj_hue, cj_strength * cj_hue))
        for k, (low, high) in enumerate(ranges):
            assert ks_uniform(factors[:, k], low, high) < ks_bound(len(factors)), k
        order = draws["color_jitter.order"][applied]
        assert_rate(order[:, 0] == 3, 0.25)  # one order per sample: each step first 1 in 4
    blurred = draws["blur.applied"]
    if blurred.sum() >= 50 and sigmas[1] > sigmas[0]:
        sigma = draws["blur.sigma"][blurred]
        assert ks_uniform(sigma, *sigmas) < ks_bound(len(sigma))


def test_blur_and_solarize_draws_are_lightlys_own(monkeypatch):
    """lightly's GaussianBlur and RandomSolarization, run on images with their PIL calls
    recorded, blur and solarise as often as the converted view, with the same sigmas."""
    view = BYOLView2Transform(input_size=SIZE, gaussian_blur=0.3, sigmas=(0.5, 1.5))
    radii, solarized = [], []

    class RecordBlur:
        @staticmethod
        def GaussianBlur(radius):  # noqa: N802 - PIL's name
            radii.append(radius)
            return ImageFilter.GaussianBlur(radius)

    class RecordSolarize:
        @staticmethod
        def solarize(image, threshold):
            solarized.append(threshold)
            return image

    import lightly.transforms.gaussian_blur as lightly_blur
    import lightly.transforms.solarize as lightly_solarize

    monkeypatch.setattr(lightly_blur, "ImageFilter", RecordBlur)
    monkeypatch.setattr(lightly_solarize, "ImageOps", RecordSolarize)
    np.random.seed(0)
    image = Image.new("RGB", (2, 2))
    blur, solarize = first(view, "GaussianBlur"), first(view, "RandomSolarization")
    for _ in range(N):
        solarize(blur(image))
    lightly_blurred = torch.zeros(N)
    lightly_blurred[: len(radii)] = 1
    lightly_solarized = torch.zeros(N)
    lightly_solarized[: len(solarized)] = 1

    draws = raw_draws(from_lightly(view, blur_kernel=KERNEL), N, SIZE)
    assert_rate(draws["blur.applied"], lightly_blurred)
    assert_rate(draws["solarize.applied"], lightly_solarized)
    sigma = draws["blur.sigma"][draws["blur.applied"]]
    assert ks_distance(sigma, torch.tensor(radii)) < ks_bound(len(sigma), len(radii))
    assert set(solarized) == {128}


def test_crop_and_jitter_draws_are_torchvisions_own():
    """The boxes on a non-square image and the jitter factors and orders, against the
    samplers of the torchvision operations in lightly's view."""
    size = (24, 40)  # not square: the aspect ratio and the position ranges differ per axis
    view = BYOLView1Transform(input_size=16, min_scale=0.2, cj_strength=0.8)
    crop, jitter = first(view, "RandomResizedCrop"), first(view, "RandomApply").transforms[0]
    torch.manual_seed(0)
    boxes = [crop.make_params([torch.empty(3, *size)]) for _ in range(N)]
    theirs = torch.tensor([[b["top"], b["left"], b["height"], b["width"]] for b in boxes])
    jitters = [jitter.make_params([]) for _ in range(N)]
    keys = ("brightness_factor", "contrast_factor", "saturation_factor", "hue_factor")
    their_factors = torch.tensor([[j[k] for k in keys] for j in jitters])
    their_first = torch.stack([j["fn_idx"][0] for j in jitters])

    draws = raw_draws(from_lightly(view, blur_kernel=KERNEL), N, size)
    box = draws["crop.box"]
    stats = {
        "area fraction": lambda b: b[:, 2] * b[:, 3] / (size[0] * size[1]),
        "log aspect": lambda b: (b[:, 3] / b[:, 2]).log(),
        "top": lambda b: b[:, 0],
        "left": lambda b: b[:, 1],
    }
    for what, stat in stats.items():
        assert ks_distance(stat(box), stat(theirs)) < ks_bound(N, N), what
    applied = draws["color_jitter.applied"]
    factors, order = draws["color_jitter.factors"][applied], draws["color_jitter.order"][applied]
    for k, key in enumerate(keys):
        assert ks_distance(factors[:, k], their_factors[:, k]) < ks_bound(len(factors), N), key
    for k in range(4):
        assert_rate(order[:, 0] == k, their_first == k)


# --- torchvision pipelines ------------------------------------------------------------------


def v2_pipeline(size: int = SIZE, interpolation=v2.InterpolationMode.BILINEAR) -> v2.Compose:
    return v2.Compose(
        [
            v2.ToImage(),
            v2.RandomResizedCrop(size, scale=(0.2, 1.0), interpolation=interpolation),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.RandomApply([v2.GaussianBlur(3, (0.1, 2.0))], p=0.5),
            v2.ToDtype(torch.float32, scale=True),
            v2.RandomSolarize(0.5, p=0.2),
        ]
    )


def v1_pipeline(size: int = SIZE) -> T.Compose:
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=(0.2, 1.0)),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([T.GaussianBlur(3, (0.1, 2.0))], p=0.5),
            T.RandomSolarize(128, p=0.2),  # before ToTensor: on PIL's 0-255 scale
            T.ToTensor(),
        ]
    )


def test_v1_and_v2_pipelines_give_the_presets_layout_and_torchvisions_settings():
    preset = augment.byol(SIZE, 2, "cifar", blur_p=0.5)
    for pipeline in (v2_pipeline(), v1_pipeline()):
        aug = from_torchvision(pipeline)
        assert aug.layout == preset.layout
        assert [op.p for op in aug.ops] == [None, 0.5, 0.8, 0.2, 0.5, 0.2]
        assert aug.ops[0].scale == (0.2, 1.0) and aug.ops[0].interpolation == "bilinear"
        assert aug.ops[2].ranges == ((0.6, 1.4), (0.6, 1.4), (0.8, 1.2), (-0.1, 0.1))
        assert (aug.ops[4].kernel_size, aug.ops[4].sigma) == (3, (0.1, 2.0))
    assert from_torchvision(v1_pipeline()).ops[-1].threshold == 128 / 255


@pytest.mark.exactness
@pytest.mark.parametrize("encoding", ["normalized", "official"])
def test_a_v2_pipeline_replays_bit_identically_and_identity_returns_the_input(encoding):
    aug = from_torchvision(v2_pipeline(), encoding=encoding)
    x = images(12, seed=3)
    views, params = aug(x, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(views, x)
    assert torch.equal(aug(x, params=params)[0], views)
    assert torch.equal(aug(x.clone(), params=params.clone())[0], views)
    assert torch.allclose(aug(x, params=aug.identity_params(12))[0], x, atol=1e-6)


@fast
@given(
    chosen=st.lists(st.sampled_from(range(5)), unique=True),
    seed=st.integers(0, 2**16),
    v1=st.booleans(),
)
def test_any_subset_of_the_common_ops_converts_and_replays(chosen, seed, v1):
    M = T if v1 else v2
    ops = [
        M.RandomHorizontalFlip(p=0.5),
        M.RandomApply([M.ColorJitter(0.3, 0.2, 0.1, 0.05)], p=0.6),
        M.RandomGrayscale(p=0.3),
        M.GaussianBlur(5, (0.5, 1.0)),
        M.RandomSolarize(0.6, p=0.4),
    ]
    aug = from_torchvision([M.RandomResizedCrop(12)] + [ops[i] for i in sorted(chosen)])
    fields = [["flip"], ["color_jitter", "jitter_order", "jitter_factors"], ["grayscale"]]
    fields += [["blur"], ["solarize"]]
    assert list(aug.layout.fields) == ["crop"] + [f for i in sorted(chosen) for f in fields[i]]
    x = images(5, 16, seed)
    views, params = aug(x, generator=torch.Generator().manual_seed(seed))
    assert views.shape == (5, 3, 12, 12)
    assert torch.equal(aug(x, params=params)[0], views)


def functional(name: str, image: torch.Tensor, raw: dict, i: int, op) -> torch.Tensor:
    """torchvision's functional operation on ``image``, with the values of sample ``i``."""
    if name == "TorchvisionColorJitter":
        steps = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
        for k in raw["order"][i].tolist():
            image = steps[k](image, float(raw["factors"][i, k]))
        return image
    if name == "HorizontalFlip":
        return TF.horizontal_flip(image)
    if name == "RandomGrayscale":
        return TF.rgb_to_grayscale(image, num_output_channels=3)
    if name == "GaussianBlur":
        sigma = float(raw["sigma"][i])
        return TF.gaussian_blur(image, [op.kernel_size] * 2, [sigma, sigma])
    assert name == "RandomSolarize"
    return TF.solarize(image, op.threshold)


def test_each_operation_gives_torchvisions_image_for_the_sampled_values():
    aug = from_torchvision(v2_pipeline())
    x = images(48, seed=2)
    params = aug.sample_params(48, SIZE, generator=torch.Generator().manual_seed(2))
    size = (SIZE, SIZE)
    y = x
    for op, s in zip(aug.ops[1:], aug._slices[1:], strict=True):  # the crop: below
        raw, name = op.decode(params[:, s], size), type(op).__name__
        assert raw["applied"].any(), name
        ours = op.apply(y, params[:, s])
        expected = torch.stack(
            [
                functional(name, y[i], raw, i, op) if raw["applied"][i] else y[i]
                for i in range(len(y))
            ]
        )
        torch.testing.assert_close(ours, expected, rtol=0, atol=3e-6, msg=name)
        y = ours


@pytest.mark.parametrize("source", [24, 48], ids=["upscaled", "downscaled"])
def test_the_bilinear_crop_gives_torchvisions_image_for_the_sampled_box(source):
    """Upscaled boxes: torchvision's image; downscaled ones: torchvision's without its
    antialiasing (which the on-device crop does not do)."""
    aug = from_torchvision([v2.RandomResizedCrop(SIZE, scale=(0.08, 1.0))])
    x = images(32, source, seed=4)
    params = aug.sample_params(32, source, generator=torch.Generator().manual_seed(4))
    box = aug.ops[0].decode(params, (source, source))["box"].long()
    expected = torch.stack(
        [
            TF.resized_crop(x[i], *box[i].tolist(), [SIZE, SIZE], antialias=source <= SIZE)
            for i in range(len(x))
        ]
    )
    torch.testing.assert_close(aug(x, params=params)[0], expected, rtol=0, atol=2e-6)


def test_the_bicubic_crop_is_torchvisions_but_at_the_box_edges():
    """grid_sample's cubic kernel (torchvision's without antialiasing) inside the views; next
    to the box's edges its taps read the pixels just outside the box."""
    mode = v2.InterpolationMode.BICUBIC
    aug = from_torchvision([v2.RandomResizedCrop(SIZE, interpolation=mode)])
    x = images(32, seed=5)
    params = aug.sample_params(32, SIZE, generator=torch.Generator().manual_seed(5))
    box = aug.ops[0].decode(params, (SIZE, SIZE))["box"].long()
    expected = torch.stack(
        [
            TF.resized_crop(x[i], *box[i].tolist(), [SIZE, SIZE], mode, antialias=False)
            for i in range(len(x))
        ]
    ).clamp(0, 1)
    ours = aug(x, params=params)[0]
    inner = (..., slice(8, -8), slice(8, -8))  # the smallest box is upscaled 3.5 times
    torch.testing.assert_close(ours[inner], expected[inner], rtol=0, atol=1e-6)
    assert 0 < (ours - expected).abs().mean() < 0.01


def test_random_apply_multiplies_probabilities_and_never_applied_ops_are_skipped():
    aug = from_torchvision(
        [
            v2.RandomResizedCrop(8),
            v2.RandomVerticalFlip(p=0.0),  # never applied: skipped whatever it is
            v2.RandomApply([v2.RandomRotation(30)], p=0.0),
            v2.RandomApply([v2.Compose([v2.RandomGrayscale(p=0.5)])], p=0.4),
            v2.RandomApply([v2.RandomHorizontalFlip(p=1.0)], p=0.3),
            v2.ColorJitter(),  # no strength: changes nothing
        ]
    )
    assert list(aug.layout.fields) == ["crop", "grayscale", "flip"]
    assert (aug.ops[1].p, aug.ops[2].p) == (0.2, 0.3)
    draws = raw_draws(aug, N, 16)
    assert_rate(draws["grayscale.applied"], 0.2)


@pytest.mark.parametrize(
    ("pipeline", "threshold"),
    [
        ([v2.RandomSolarize(128, p=0.5), v2.ToImage(), v2.ToDtype(torch.float32, scale=True)], 128),
        ([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.RandomSolarize(0.25)], 63.75),
        ([T.PILToTensor(), T.RandomSolarize(100), T.ConvertImageDtype(torch.float32)], 100),
        ([v2.RandomSolarize(0.75)], 191.25),  # no conversion: a threshold <= 1 is in [0, 1]
        ([v2.RandomSolarize(200)], 200),  # ... and one above 1 on the 0-255 scale
    ],
)
def test_a_solarize_threshold_is_read_on_the_scale_of_the_images_there(pipeline, threshold):
    assert from_torchvision(pipeline).ops[0].threshold == pytest.approx(threshold / 255)


# --- lightly's operations give lightly's images ----------------------------------------------


def uint8_images(batch: int, seed: int) -> torch.Tensor:
    """Smooth ``uint8`` images (blurred noise), so that a blur has structure to act on."""
    noise = torch.rand(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    return (TF.gaussian_blur(noise, [5, 5], [1.0, 1.0]) * 255).round().to(torch.uint8)


def test_lightlys_solarisation_is_reproduced_exactly_on_uint8_images():
    with pytest.warns(UserWarning, match="no Normalize"):
        op = from_lightly(T.Compose([RandomSolarization(prob=1.0)])).ops[0]
    x = uint8_images(4, seed=6)
    ours = op.apply(x.float() / 255, torch.ones(4, 1))
    lightly_op = RandomSolarization(prob=1.0)
    theirs = torch.stack([TF.pil_to_tensor(lightly_op(TF.to_pil_image(i))) for i in x])
    assert not torch.equal(theirs, x)
    assert op.threshold == lightly_op.threshold / 255  # PIL's threshold 128, on [0, 1]
    assert torch.equal((ours * 255).round().to(torch.uint8), theirs)


def test_lightlys_pil_blur_is_approximated_by_the_default_kernel():
    """PIL's box approximation against the Gaussian kernel, at lightly's largest sigma: the
    default kernel (13 taps) is within 1.5 levels of 255 on average, a 3-tap kernel is not."""
    x = uint8_images(4, seed=7)
    sigma = 2.0
    theirs = torch.stack(
        [TF.pil_to_tensor(TF.to_pil_image(i).filter(ImageFilter.GaussianBlur(sigma))) for i in x]
    ).float()
    gaps = {}
    for kernel in (None, 3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            aug = from_lightly(
                T.Compose([GaussianBlur(prob=1.0, sigmas=(0.1, sigma))]), blur_kernel=kernel
            )
        op = aug.ops[0]
        params = torch.tensor([[1.0, sigma]]).expand(4, 2)
        gaps[op.kernel_size] = (op.apply(x.float() / 255, params) * 255 - theirs).abs().mean()
    assert set(gaps) == {KERNEL, 3}
    assert gaps[KERNEL] < 1.5 < gaps[3]


# --- warnings and errors --------------------------------------------------------------------


def test_the_default_blur_kernel_warns_once_and_a_given_one_does_not():
    with pytest.warns(UserWarning, match=r"\(GaussianBlur\).*PIL.*blur_kernel=13") as record:
        from_lightly(byol_transform())
    assert len([w for w in record if issubclass(w.category, UserWarning)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_lightly(byol_transform(), blur_kernel=KERNEL)
    assert from_lightly(byol_transform(), blur_kernel=5)[0].ops[4].kernel_size == 5


@pytest.mark.parametrize(
    ("normalize", "match"),
    [
        (None, "normalize=None"),
        ({"mean": [0.5] * 3, "std": [0.2] * 3}, r"normalize=augment.Normalize\(\[0.5, 0.5, 0.5\]"),
    ],
)
def test_a_normalisation_other_than_the_branchs_default_says_what_to_pass(normalize, match):
    with pytest.warns(UserWarning, match=match):
        from_lightly(SimCLRTransform(input_size=SIZE, normalize=normalize), blur_kernel=KERNEL)
    with pytest.raises(ValueError, match="normalise differently"):
        from_lightly(
            [
                SimCLRViewTransform(input_size=SIZE, normalize=normalize),
                SimCLRViewTransform(input_size=SIZE),
            ],
            blur_kernel=KERNEL,
        )


@pytest.mark.parametrize(
    "transform",
    [
        lambda: DINOTransform(global_crop_size=SIZE, local_crop_size=16, n_local_views=2),
        lambda: SwaVTransform(crop_sizes=(SIZE, 16), crop_counts=(2, 2)),
    ],
    ids=["dino", "swav"],
)
def test_multi_crop_is_rejected_with_the_reason(transform):
    with pytest.raises(ValueError, match=r"2 views of 32 x 32.*2 views of 16 x 16.*multi-crop"):
        from_lightly(transform(), blur_kernel=KERNEL)


@pytest.mark.parametrize(
    ("transform", "error", "match"),
    [
        (
            lambda: BYOLView1Transform(input_size=SIZE, rr_prob=0.5),
            TypeError,
            r"transform.transform.transforms\[3\] \(RandomRotate\) cannot be encoded.*rr_prob=0",
        ),
        (
            lambda: BYOLView1Transform(input_size=SIZE, rr_prob=0.5, rr_degrees=15),
            TypeError,
            r"transforms\[3\].transform.transforms\[0\] \(RandomRotation\)",
        ),
        (
            lambda: BYOLView1Transform(input_size=SIZE, vf_prob=0.5),
            TypeError,
            r"\(RandomVerticalFlip\).*vf_prob=0",
        ),
        (
            lambda: [BYOLView1Transform(input_size=SIZE), T.Compose([T.RandomGrayscale()])],
            ValueError,
            r"transform\[1\] has no RandomResizedCrop",
        ),
        (lambda: PIRLTransform(), TypeError, r"transform.transforms\[1\] must be .*got Jigsaw"),
        (lambda: [], ValueError, "empty"),
        (lambda: nn.Identity(), TypeError, "must be a lightly transform"),
        (
            lambda: [
                T.Compose([T.RandomResizedCrop(8), T.RandomGrayscale(), T.RandomSolarize(0.5)]),
                T.Compose([T.RandomResizedCrop(8), T.RandomSolarize(0.5), T.RandomGrayscale()]),
            ],
            ValueError,
            r"transform\[1\] applies 'grayscale' after 'solarize'.*one order",
        ),
    ],
)
def test_what_from_lightly_cannot_encode_is_rejected_by_name(transform, error, match):
    with pytest.raises(error, match=match):
        from_lightly(transform(), blur_kernel=KERNEL)


def test_blur_kernel_is_checked():
    with pytest.raises(ValueError, match="blur_kernel must be a positive odd int"):
        from_lightly(byol_transform(), blur_kernel=4)


@pytest.mark.parametrize(
    ("pipeline", "error", "match"),
    [
        (
            v2.Compose([v2.RandomResizedCrop(8), v2.RandomRotation(10)]),
            TypeError,
            r"pipeline.transforms\[1\] \(RandomRotation\) cannot be encoded.*RandomResizedCrop",
        ),
        ([v2.Resize(8)], TypeError, r"pipeline\[0\] \(Resize\).*originals' transform"),
        (
            [v2.RandomResizedCrop(8), v2.Normalize([0.5] * 3, [0.25] * 3)],
            ValueError,
            r"pipeline\[1\] \(Normalize\).*normalize=augment.Normalize\(\[0.5, 0.5, 0.5\], "
            r"\[0.25, 0.25, 0.25\]\)",
        ),
        (
            [v2.RandomApply([v2.ColorJitter(0.1), v2.RandomGrayscale()], p=0.5)],
            ValueError,
            r"pipeline\[0\] \(RandomApply\) applies .*ColorJitter.*RandomGrayscale.* together",
        ),
        ([v2.RandomChoice([v2.RandomGrayscale()])], ValueError, r"\(RandomChoice\)"),
        ([v2.RandomOrder([v2.RandomGrayscale()])], ValueError, r"\(RandomOrder\)"),
        (
            [v2.RandomApply([v2.RandomResizedCrop(8)], p=0.5)],
            ValueError,
            r"pipeline\[0\].transforms\[0\] \(RandomResizedCrop\) is inside a RandomApply",
        ),
        (
            [v2.RandomResizedCrop(8, interpolation=v2.InterpolationMode.NEAREST)],
            ValueError,
            "interpolation='nearest'",
        ),
        ([v2.RandomResizedCrop(8, scale=(0.5, 1.5))], ValueError, r"\(RandomResizedCrop\): scale"),
        ([v2.GaussianBlur((3, 5))], ValueError, r"\(GaussianBlur\): kernel_size=\(3, 5\)"),
        ([v2.RandomSolarize(300)], ValueError, r"\(RandomSolarize\): threshold=300"),
        ([v2.ToDtype(torch.uint8)], ValueError, r"\(ToDtype\): dtype=torch.uint8"),
        (
            [v2.RandomHorizontalFlip(), T.RandomHorizontalFlip()],
            ValueError,
            r"pipeline\[1\] \(RandomHorizontalFlip\) and pipeline\[0\].*'flip'",
        ),
        ([v2.RandomResizedCrop(8), v2.RandomResizedCrop(4)], ValueError, "one crop"),
        ([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)], ValueError, "no operation"),
        ([GaussianBlur()], TypeError, r"pipeline\[0\] \(GaussianBlur\) is lightly's.*from_lightly"),
        (BYOLView1Transform(), TypeError, "a lightly transform: use .*from_lightly"),
        (3, TypeError, "pipeline must be a torchvision Compose"),
    ],
)
def test_what_from_torchvision_cannot_encode_is_rejected_by_name(pipeline, error, match):
    with pytest.raises(error, match=match):
        from_torchvision(pipeline)


def test_from_torchvision_checks_its_encoding_arguments():
    with pytest.raises(ValueError, match="standardization"):
        from_torchvision(v2_pipeline(), encoding="official_standardized")
    with pytest.raises(ValueError, match="encoding must be one of"):
        from_torchvision(v2_pipeline(), encoding="pixels")


# --- with the branch and a lightly BYOL model ------------------------------------------------


class BYOL(nn.Module):
    """lightly's examples/pytorch/byol.py model, with a small backbone."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.projection_head = BYOLProjectionHead(8, 32, 16)
        self.prediction_head = BYOLPredictionHead(16, 32, 16)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)

    def forward(self, x):
        return self.prediction_head(self.projection_head(self.backbone(x)))

    def forward_momentum(self, x):
        return self.projection_head_momentum(self.backbone_momentum(x)).detach()


def test_a_converted_byol_transform_trains_a_lightly_byol_model():
    torch.manual_seed(0)
    model = BYOL()
    transform = attach(
        model, from_lightly(byol_transform(), blur_kernel=KERNEL), hidden_dim=16, output_dim=8
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06)
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    criterion = NegativeCosineSimilarity()
    x0, x1 = model.equivariance.views(images(6))
    update_momentum(model.backbone, model.backbone_momentum, m=0.99)
    update_momentum(model.projection_head, model.projection_head_momentum, m=0.99)
    p0, z0 = model(x0), model.forward_momentum(x0)
    p1, z1 = model(x1), model.forward_momentum(x1)
    loss = 0.5 * (criterion(p0, z1) + criterion(p1, z0)) + model.equivariance.loss()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    after = [p for p in model.parameters() if p.requires_grad]
    assert all(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
    assert transform.size == (SIZE, SIZE)
    assert model.equivariance.term.param_dim == 18


@pytest.mark.parametrize(
    ("raw", "explicit"),
    [
        (byol_transform, lambda: from_lightly(byol_transform())[0]),
        (
            lambda: [BYOLView1Transform(input_size=SIZE), BYOLView2Transform(input_size=SIZE)],
            lambda: from_lightly(byol_transform())[0],
        ),
        (v2_pipeline, lambda: from_torchvision(v2_pipeline())),
        (lambda: [v1_pipeline(), v1_pipeline()], lambda: from_torchvision(v1_pipeline())),
    ],
    ids=["byol", "views", "v2", "two-v1"],
)
def test_attach_takes_a_raw_recipe_and_converts_it(raw, explicit):
    model = BYOL()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. the blur kernel PIL has no size for
        attach(model, raw())
        expected = explicit()
    assert model.equivariance.augments[0].layout == expected.layout
    model.equivariance.views(torch.rand(4, 3, SIZE, SIZE))
    assert torch.isfinite(model.equivariance.loss())
