"""``augment.from_kornia``: a Kornia pipeline as a parameter-recording augmentation.

Checked against Kornia itself, never against the adapter's own code: the parameters it draws
follow the distributions of the Kornia pipeline's own draws (``forward_parameters``, seeded,
compared with two-sample Kolmogorov-Smirnov distances and binomial tolerances), and each
operation given the values a Kornia operation drew gives that operation's image. Replay from
the parameters is bit-identical, the identity parameters return the input, and what cannot
be encoded is rejected by name.
"""

from __future__ import annotations

import math
import warnings

import kornia.augmentation as K
import pytest
import torch
from _sampling import ks_distance, random_images
from hypothesis import given, settings
from hypothesis import strategies as st
from kornia.augmentation.utils import _range_bound
from torch import nn

from equimod_plugin import augment
from equimod_plugin.augment import from_kornia
from equimod_plugin.augment.kornia import KorniaColorJitter, KorniaResizedCrop
from equimod_plugin.augment.standardize import official_standardization
from equimod_plugin.branch import make_branch
from equimod_plugin.integrations.lightly import attach

SIZE = 16
N = 4000  # samples of the distribution tests
fast = settings(max_examples=15, deadline=None)


def simclr_pipeline(size: int = SIZE, **crop) -> K.AugmentationSequential:
    """SimCLR's CIFAR recipe, written in Kornia."""
    return K.AugmentationSequential(
        K.RandomResizedCrop((size, size), scale=(0.2, 1.0), **crop),
        K.RandomHorizontalFlip(),
        K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
        K.RandomGrayscale(p=0.2),
    )


def byol_pipeline(size: int = SIZE, blur_p: float = 0.1, solarize_p: float = 0.2):
    """BYOL's second view (bicubic, blur 0.1, solarize 0.2), written in Kornia."""
    return K.AugmentationSequential(
        K.RandomResizedCrop((size, size), scale=(0.08, 1.0), resample="bicubic"),
        K.RandomHorizontalFlip(),
        K.ColorJitter(0.4, 0.4, 0.2, 0.1, p=0.8),
        K.RandomGrayscale(p=0.2),
        K.RandomGaussianBlur(3, (0.1, 2.0), p=blur_p),
        K.RandomSolarize(0.0, 0.0, p=solarize_p),
    )


PIPELINES = {"simclr": simclr_pipeline, "byol": byol_pipeline}
PRESETS = {
    "simclr": lambda e: augment.simclr(SIZE, "cifar", interpolation="bilinear", encoding=e),
    "byol": lambda e: augment.byol(SIZE, 2, "cifar", blur_p=0.1, encoding=e),
}


def convert(pipeline, **kwargs):
    return from_kornia(pipeline, jitter_order="per_sample", **kwargs)


def images(batch: int, size: int | tuple[int, int] = SIZE, seed: int = 0) -> torch.Tensor:
    return random_images(batch, size, seed)


def ks_bound(n: int, m: int) -> float:
    """The KS distance exceeded with probability 0.001 when both samples share a law."""
    return 1.95 * math.sqrt((n + m) / (n * m))


def assert_same_rate(a: torch.Tensor, b: torch.Tensor) -> None:
    """Two 0/1 samples have the same frequency within 4.5 binomial standard errors."""
    pa, pb = a.double().mean().item(), b.double().mean().item()
    p = (pa + pb) / 2
    se = math.sqrt(max(p * (1 - p), 1e-4) * (1 / a.numel() + 1 / b.numel()))
    assert abs(pa - pb) < 4.5 * se, (pa, pb)


def kornia_draws(pipeline, n: int, size: tuple[int, int], seed: int = 0) -> dict[str, dict]:
    """Kornia's own parameters for ``n`` images of ``size``, per operation class name."""
    torch.manual_seed(seed)
    items = pipeline.forward_parameters(torch.Size([n, 3, *size]))
    return {item.name.rsplit("_", 1)[0]: item.data for item in items}


def kornia_box(data: dict) -> torch.Tensor:
    """``(top, left, height, width)`` ``(B, 4)`` of Kornia's crop parameters ``src``."""
    src = data["src"]
    left, top = src[:, 0, 0], src[:, 0, 1]
    return torch.stack((top, left, src[:, 3, 1] - top + 1, src[:, 1, 0] - left + 1), dim=1)


def raw_draws(aug, n: int, size: tuple[int, int], seed: int = 1) -> dict[str, torch.Tensor]:
    """The adapter's draws for ``n`` images of ``size``, decoded to raw values, by field."""
    params = aug.sample_params(n, size, generator=torch.Generator().manual_seed(seed))
    out = {}
    for op, s in zip(aug.ops, aug._slices, strict=True):
        raw = op.decode(params[:, s], size)
        out.update({f"{op.fields[0].name}.{k}": v for k, v in raw.items()})
    return out


# --- layout, replay, identity --------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PIPELINES))
@pytest.mark.parametrize("encoding", ["normalized", "official"])
def test_layout_is_the_presets_and_views_have_its_shapes(name, encoding):
    aug = convert(PIPELINES[name](), encoding=encoding)
    assert aug.layout == PRESETS[name](encoding).layout
    views, params = aug(images(5))
    assert views.shape == (5, 3, SIZE, SIZE) and params.shape == (5, aug.layout.param_dim)
    assert params.dtype == torch.float32 and aug.output_size == (SIZE, SIZE)


@pytest.mark.exactness
@pytest.mark.parametrize("name", sorted(PIPELINES))
@pytest.mark.parametrize("encoding", ["normalized", "official", "official_standardized"])
def test_views_replay_bit_identically_and_identity_returns_the_input(name, encoding):
    constants = official_standardization(name, "cifar") if "standard" in encoding else None
    aug = convert(
        PIPELINES[name](),
        encoding=encoding,
        standardization=constants,
    )
    x = images(12, seed=3)
    views, params = aug(x, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(views, x)
    assert torch.equal(aug(x, params=params)[0], views)
    same, _ = aug(x.clone(), params=params.clone())
    assert torch.equal(same, views)
    assert torch.allclose(aug(x, params=aug.identity_params(12))[0], x, atol=1e-6)


def test_the_crop_may_come_after_other_operations():
    pipeline = [K.RandomHorizontalFlip(), K.RandomResizedCrop((8, 8)), K.RandomGrayscale(p=0.5)]
    aug = convert(pipeline)
    assert list(aug.layout.fields) == ["flip", "crop", "grayscale"]
    x = images(6)
    views, params = aug(x)
    assert views.shape == (6, 3, 8, 8) and torch.equal(aug(x, params=params)[0], views)


# --- the sampled distributions are Kornia's ------------------------------------------------


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_parameter_distributions_match_the_kornia_pipelines_own(name):
    size = (24, 40)  # not square: the aspect ratio and the position ranges differ per axis
    pipeline = PIPELINES[name](size=SIZE)
    theirs = kornia_draws(pipeline, N, size)
    ours = raw_draws(convert(pipeline), N, size)

    box, k_box = ours["crop.box"], kornia_box(theirs["RandomResizedCrop"])
    stats = {
        "area fraction": lambda b: b[:, 2] * b[:, 3] / (size[0] * size[1]),
        "log aspect": lambda b: (b[:, 3] / b[:, 2]).log(),
        "top": lambda b: b[:, 0],
        "left": lambda b: b[:, 1],
    }
    for what, stat in stats.items():
        assert ks_distance(stat(box), stat(k_box)) < ks_bound(N, N), what
    area = stats["area fraction"]
    assert abs(area(box).mean() - area(k_box).mean()) < 0.02

    gates = {
        "flip.applied": "RandomHorizontalFlip",
        "color_jitter.applied": "ColorJitter",
        "grayscale.applied": "RandomGrayscale",
        "blur.applied": "RandomGaussianBlur",
        "solarize.applied": "RandomSolarize",
    }
    for ours_key, op in gates.items():
        if op in theirs:
            assert_same_rate(ours[ours_key], theirs[op]["batch_prob"] > 0.5)

    applied = ours["color_jitter.applied"]
    k_applied = theirs["ColorJitter"]["batch_prob"] > 0.5
    keys = ("brightness_factor", "contrast_factor", "saturation_factor", "hue_factor")
    for k, key in enumerate(keys):
        mine, kornia = ours["color_jitter.factors"][applied, k], theirs["ColorJitter"][key]
        kornia = kornia[k_applied]
        assert ks_distance(mine, kornia) < ks_bound(len(mine), len(kornia)), key
        assert mine.min() >= kornia.min() - 0.01 and mine.max() <= kornia.max() + 0.01
    if "RandomGaussianBlur" in theirs:
        blurred = ours["blur.applied"]
        k_sigma = theirs["RandomGaussianBlur"]["sigma"]
        assert ks_distance(ours["blur.sigma"][blurred], k_sigma) < ks_bound(
            int(blurred.sum()), len(k_sigma)
        )


def test_a_fallback_crop_is_placed_at_random_as_kornia_places_it():
    """A 6 x 40 image: no try of a near-square box fits, Kornia's fallback box (6 x 8) is
    placed uniformly along the width, where torchvision would centre it."""
    pipeline = [K.RandomResizedCrop((8, 8), scale=(0.9, 1.0))]
    size = (6, 40)
    k_box = kornia_box(
        kornia_draws(K.AugmentationSequential(*pipeline), N, size)["RandomResizedCrop"]
    )
    box = raw_draws(convert(pipeline), N, size)["crop.box"]
    assert torch.equal(box[:, 2:].unique(dim=0), k_box[:, 2:].unique(dim=0))
    assert box[:, 1].unique().numel() == size[1] - 8 + 1  # every position, not the centre
    assert ks_distance(box[:, 1], k_box[:, 1]) < ks_bound(N, N)


def test_jitter_order_per_sample_or_per_batch():
    jitter = K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.0)
    batches, b = 600, 4
    torch.manual_seed(0)
    k_first = torch.stack(
        [jitter.forward_parameters(torch.Size([b, 3, 8, 8]))["order"][0] for _ in range(batches)]
    )
    per_batch = from_kornia([jitter], jitter_order="per_batch")
    g = torch.Generator().manual_seed(0)
    firsts = []
    for _ in range(batches):
        order = per_batch.ops[0].decode(per_batch.sample_params(b, 8, generator=g), (8, 8))["order"]
        assert (order == order[0]).all()  # one order for the batch, as Kornia
        firsts.append(order[0, 0])
    firsts = torch.stack(firsts)
    for k in range(4):  # each step first about a quarter of the time, in both
        assert_same_rate(firsts == k, k_first == k)
    per_sample = from_kornia([jitter], jitter_order="per_sample")
    order = per_sample.ops[0].decode(per_sample.sample_params(N, 8, generator=g), (8, 8))["order"]
    assert order.unique(dim=0).shape[0] == 24  # every permutation, within one batch
    assert_same_rate(order[:, 0] == 0, k_first == 0)


def test_an_unset_jitter_order_warns_once_and_a_set_one_does_not():
    with pytest.warns(UserWarning, match="jitter_order='per_batch'") as record:
        from_kornia(byol_pipeline())
    assert len([w for w in record if issubclass(w.category, UserWarning)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_kornia(byol_pipeline(), jitter_order="per_sample")
        from_kornia([K.ColorJitter(0.1, 0.1, 0.1, 0.1, order=[2, 0, 1, 3])])  # fixed: no draw


def test_a_fixed_jitter_order_is_recorded_and_leaves_the_other_steps_neutral():
    aug = from_kornia([K.ColorJiggle(0.4, 0.4, 0.4, 0.1, p=1.0, order=[3, 1])])
    raw = aug.ops[0].decode(aug.sample_params(50, 8), (8, 8))
    assert (raw["order"] == torch.tensor([3, 1, 0, 2])).all()
    assert (raw["factors"][:, [0, 2]] == 1).all() and (raw["factors"][:, [1, 3]] != 0).all()


@fast
@given(
    value=st.one_of(
        st.floats(0, 1.5),  # above 1: the lower end is floored at 0
        st.tuples(st.floats(0, 1.5), st.floats(0, 1.5)).map(sorted).map(tuple),
    ),
    hue=st.one_of(st.floats(0, 0.5), st.tuples(st.floats(-0.5, 0), st.floats(0, 0.5))),
)
def test_jitter_ranges_are_the_ones_kornia_samples_from(value, hue):
    """The adapter's ranges equal the bounds Kornia's own generator samples from."""
    op = from_kornia([K.ColorJitter(value, value, value, hue)], jitter_order="per_sample").ops[0]
    for k, (arg, center, bounds) in enumerate(
        [(value, 1.0, (0, float("inf")))] * 3 + [(hue, 0.0, (-0.5, 0.5))]
    ):
        low, high = _range_bound(arg, "f", center=center, bounds=bounds, dtype=torch.float64)
        assert op.ranges[k] == pytest.approx((float(low), float(high)), abs=1e-12)


# --- each operation gives Kornia's image for Kornia's values -------------------------------


def replay_kornia(op: nn.Module, x: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Kornia's output, the adapter's output for the values Kornia drew)``."""
    torch.manual_seed(0)
    expected = op(x)
    data = op._params
    ours = from_kornia([op], jitter_order="per_sample").ops[0]
    applied = data["batch_prob"] > 0.5
    raw: dict[str, torch.Tensor] = {"applied": applied}
    if isinstance(op, K.RandomResizedCrop):
        raw = {"box": kornia_box(data)}
    elif isinstance(op, (K.ColorJitter, K.ColorJiggle)):
        keys = ("brightness_factor", "contrast_factor", "saturation_factor", "hue_factor")
        raw["factors"] = torch.stack([data[k] for k in keys], dim=1)
        raw["order"] = data["order"].expand(len(x), 4)
    elif isinstance(op, K.RandomGaussianBlur):
        raw["sigma"] = torch.where(applied, data["sigma"], 0.0)
    size = (x.shape[2], x.shape[3])
    params = ours.encode(raw, size)
    assert torch.equal(ours.encode(ours.decode(params, size), size), params)
    return expected, ours.apply(x, params)


@pytest.mark.parametrize(
    "crop",
    [
        {},
        {"align_corners": False},
        {"resample": "bicubic"},
        {"resample": "bicubic", "align_corners": False},
    ],
    ids=["bilinear", "bilinear-half-pixel", "bicubic", "bicubic-half-pixel"],
)
def test_the_crop_gives_kornias_image_for_kornias_box(crop):
    x = images(16, (20, 28), seed=1)
    expected, ours = replay_kornia(K.RandomResizedCrop((12, 12), **crop), x)
    torch.testing.assert_close(ours, expected.clamp(0, 1), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "op",
    [
        K.RandomHorizontalFlip(p=0.5),
        K.RandomGrayscale(p=0.5),
        K.RandomGrayscale(rgb_weights=torch.tensor([0.2, 0.5, 0.3]), p=0.5),
        K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.7),
        K.ColorJitter((0.5, 1.2), 0.8, (0.2, 1.9), (-0.3, 0.1), p=0.7),
        K.ColorJiggle(0.4, 0.4, 0.4, 0.1, p=0.7),
        K.RandomGaussianBlur(5, (0.1, 2.0), p=0.5),
        K.RandomGaussianBlur((3, 3), (0.5, 1.0), separable=False, p=0.5),
        K.RandomSolarize(0.0, 0.0, p=0.5),
        K.RandomSolarize((0.3, 0.3), 0.0, p=0.5),
    ],
    ids=lambda op: type(op).__name__,
)
def test_each_operation_gives_kornias_image_for_kornias_values(op):
    x = images(16, seed=2)
    expected, ours = replay_kornia(op, x)
    assert not torch.equal(expected, x)  # something happened
    torch.testing.assert_close(ours, expected, rtol=0, atol=2e-6)


@fast
@given(order=st.permutations(range(4)), seed=st.integers(0, 2**16), jiggle=st.booleans())
def test_a_per_sample_order_gives_kornias_image_for_that_order(order, seed, jiggle):
    """Each sample's recorded order and factors give the image Kornia gives for them."""
    cls = K.ColorJiggle if jiggle else K.ColorJitter
    ranges = [(0.5, 1.5), (0.5, 1.5), (0.3, 1.7), (-0.2, 0.2)]
    g = torch.Generator().manual_seed(seed)
    factors = torch.stack([lo + (hi - lo) * torch.rand(3, generator=g) for lo, hi in ranges], 1)
    x = torch.rand(3, 3, 6, 6, generator=g)
    ours = KorniaColorJitter(ranges, formulas=cls.__name__)
    orders = torch.stack([torch.tensor(order), torch.tensor(order).flip(0), torch.arange(4)])
    raw = {"applied": torch.ones(3, dtype=torch.bool), "order": orders, "factors": factors}
    out = ours.apply_transform(x, raw)
    for i in range(3):
        kornia = cls(*[(float(f), float(f)) for f in factors[i]], order=orders[i].tolist())
        torch.testing.assert_close(out[i : i + 1], kornia(x[i : i + 1]), rtol=0, atol=2e-6)


@fast
@given(
    height=st.integers(4, 40),
    width=st.integers(4, 40),
    out=st.integers(2, 12),
    scale=st.tuples(st.floats(0.05, 1.0), st.floats(0.05, 1.0)).map(sorted),
    ratio=st.tuples(st.floats(0.25, 4.0), st.floats(0.25, 4.0)).map(sorted),
    seed=st.integers(0, 2**16),
)
def test_crop_boxes_lie_inside_and_follow_scale_and_ratio(height, width, out, scale, ratio, seed):
    """Every box is inside the image; a box from a try has the drawn area and aspect up to
    rounding to whole pixels, any other is the fallback; replay is exact."""
    crop = KorniaResizedCrop(out, tuple(scale), tuple(ratio))
    size = (height, width)
    params = crop.sample_params(64, size, generator=torch.Generator().manual_seed(seed))
    crop.check_values(params, size)  # inside the image, whole positive pixels
    top, left, h, w = crop.decode(params, size)["box"].unbind(-1)
    fallback = crop._fallback(height, width)
    from_try = (h != fallback[0]) | (w != fallback[1])
    aspect = (w / h)[from_try]
    # each side was rounded from within half a pixel: the drawn area lies between the areas
    # of the box shrunk and grown by half a pixel per side
    h, w = h[from_try], w[from_try]
    grown = (h + 0.5) * (w + 0.5) / (height * width)
    shrunk = (h - 0.5).clamp(min=0) * (w - 0.5).clamp(min=0) / (height * width)
    assert (grown >= scale[0] - 1e-9).all() and (shrunk <= scale[1] + 1e-9).all()
    slack_aspect = (((w + 0.5) / (h - 0.5).clamp(min=0.5)) / (w / h)).max() if h.numel() else 1.0
    assert (aspect >= ratio[0] / slack_aspect).all() and (aspect <= ratio[1] * slack_aspect).all()
    x = torch.rand(64, 3, height, width, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(crop.apply(x, params), crop.apply(x, params.clone()))


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pipeline", "error", "match"),
    [
        (
            [K.RandomResizedCrop((8, 8)), K.RandomVerticalFlip()],
            TypeError,
            r"pipeline\[1\] \(RandomVerticalFlip\) cannot be encoded.*RandomHorizontalFlip",
        ),
        (
            [K.RandomHorizontalFlip(same_on_batch=True)],
            ValueError,
            r"pipeline\[0\] \(RandomHorizontalFlip\): same_on_batch=True",
        ),
        (
            K.AugmentationSequential(K.RandomGrayscale(), same_on_batch=True),
            ValueError,
            r"same_on_batch=True",
        ),
        ([K.RandomResizedCrop((8, 8), p=0.5)], ValueError, r"\(RandomResizedCrop\): p=0.5"),
        (
            [K.RandomResizedCrop((8, 8), cropping_mode="resample")],
            ValueError,
            r"cropping_mode='resample'",
        ),
        ([K.RandomResizedCrop((8, 8), resample="nearest")], ValueError, r"resample='nearest'"),
        (
            [K.RandomResizedCrop((8, 8), scale=(0.5, 1.5))],
            ValueError,
            r"pipeline\[0\] \(RandomResizedCrop\): scale must lie in \(0, 1\]",
        ),
        (
            [K.RandomGaussianBlur(3, (0.1, 2.0), border_type="constant")],
            ValueError,
            r"border_type='constant'",
        ),
        ([K.RandomGaussianBlur((3, 5), (0.1, 2.0))], ValueError, r"kernel_size=\(3, 5\)"),
        ([K.RandomSolarize(p=0.2)], ValueError, r"thresholds=0.0.*additions=0.0"),
        ([K.RandomSolarize(0.0, (0.1, 0.1))], ValueError, r"adds a value"),
        (
            [K.RandomResizedCrop((8, 8)), K.Normalize((0.5,) * 3, (0.25,) * 3)],
            ValueError,
            r"pipeline\[1\] \(Normalize\).*normalize=augment.Normalize\(\[0.5, 0.5, 0.5\], "
            r"\[0.25, 0.25, 0.25\]\)",
        ),
        (
            [K.RandomHorizontalFlip(), K.RandomHorizontalFlip()],
            ValueError,
            r"pipeline\[1\] \(RandomHorizontalFlip\) and pipeline\[0\].*'flip'",
        ),
        ([K.RandomResizedCrop((8, 8)), K.RandomResizedCrop((4, 4))], ValueError, r"one crop"),
        ([K.ColorJitter(0.1), K.ColorJiggle(0.1)], ValueError, r"'color_jitter'"),
        (
            K.AugmentationSequential(K.RandomGrayscale(), random_apply=1),
            ValueError,
            r"random_apply=\(1, 2\)",
        ),
        (
            K.AugmentationSequential(K.RandomGrayscale(), data_keys=["input", "mask"]),
            ValueError,
            r"data_keys=\['IMAGE', 'MASK'\]",
        ),
        ([], ValueError, "no operation"),
        (3, TypeError, "pipeline must be"),
        ([nn.Identity()], TypeError, r"pipeline\[0\] \(Identity\) cannot be encoded"),
    ],
)
def test_what_cannot_be_encoded_is_rejected_by_name(pipeline, error, match):
    with pytest.raises(error, match=match):
        from_kornia(pipeline, jitter_order="per_sample")


def test_nested_sequentials_are_expanded_and_positions_name_the_nesting():
    inner = K.ImageSequential(K.RandomHorizontalFlip(), K.RandomGrayscale(p=0.3))
    aug = from_kornia(K.AugmentationSequential(K.RandomResizedCrop((8, 8)), inner))
    assert list(aug.layout.fields) == ["crop", "flip", "grayscale"]
    with pytest.raises(TypeError, match=r"pipeline\[1\]\[0\] \(RandomVerticalFlip\)"):
        from_kornia([K.RandomResizedCrop((8, 8)), nn.Sequential(K.RandomVerticalFlip())])


def test_encoding_arguments_are_checked():
    with pytest.raises(ValueError, match="standardization"):
        from_kornia(simclr_pipeline(), encoding="official_standardized", jitter_order="per_sample")
    with pytest.raises(ValueError, match="standardization"):
        convert(simclr_pipeline(), standardization=official_standardization("simclr", "cifar"))
    with pytest.raises(ValueError, match="jitter_order"):
        from_kornia(simclr_pipeline(), jitter_order="per_call")


# --- with the branch -----------------------------------------------------------------------


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def test_attach_trains_with_a_converted_pipeline_and_byol_views():
    model = Model()
    attach(model, convert(simclr_pipeline()), hidden_dim=16, output_dim=8)
    x1, x2 = model.equivariance.views(images(4))
    loss = (model.backbone(x1) - model.backbone(x2)).pow(2).mean() + model.equivariance.loss()
    loss.backward()
    assert torch.isfinite(loss)
    # BYOL's asymmetric views: the same operations, p = 0 where a view does not use one
    views = [convert(byol_pipeline(blur_p=1.0, solarize_p=0.0)), convert(byol_pipeline())]
    branch = make_branch(Model().backbone, views, hidden_dim=16, output_dim=8)
    branch.views(images(4))
    assert torch.isfinite(branch.loss())


@pytest.mark.parametrize(
    "raw",
    [
        simclr_pipeline,
        lambda: [simclr_pipeline(), simclr_pipeline()],
        lambda: K.RandomResizedCrop((8, 8)),
    ],
    ids=["pipeline", "two-views", "one-op"],
)
def test_attach_takes_a_raw_kornia_pipeline_and_converts_it(raw):
    model = Model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Kornia's per-batch jitter order, drawn per sample here
        attach(model, raw())
    views = raw() if isinstance(raw(), list) else [raw()]
    expected = from_kornia(views[0], jitter_order="per_sample")
    assert model.equivariance.augments[0].layout == expected.layout
    model.equivariance.views(images(4))
    assert torch.isfinite(model.equivariance.loss())


def test_what_cannot_be_converted_is_named():
    with pytest.raises(TypeError, match=r"pipeline\[1\] \(RandomVerticalFlip\) cannot be encoded"):
        attach(Model(), [K.RandomResizedCrop((8, 8)), K.RandomVerticalFlip()])
    with pytest.raises(TypeError, match="augment must be a ParamAugment .* got int"):
        make_branch(Model().backbone, 3)
