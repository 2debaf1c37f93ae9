"""The per-augmentation equivariance report on tiny inputs."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from equimod_plugin import EquivarianceHead, SteeringOperator, SteeringTerm, augment
from equimod_plugin.augment import ColorJitter, HorizontalFlip, ParamAugment, ParamOp
from equimod_plugin.augment.functional import GRAY_WEIGHTS
from equimod_plugin.eval.report import (
    AugmentationReport,
    Sweep,
    augmentation_report,
    default_sweeps,
)
from equimod_plugin.metrics import equivariance_metrics

JITTER = (0.2, 0.2, 0.2, 0.05)


def conv_encoder(seed: int = 0, width: int = 8) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, width, 3),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


class HalfMeans(nn.Module):
    """Mean colour of the left and of the right half: ``(N, 3, H, W) -> (N, 6)``."""

    def forward(self, x: Tensor) -> Tensor:
        w = x.shape[-1] // 2
        return torch.cat([x[..., :w].mean((2, 3)), x[..., w:].mean((2, 3))], dim=1)


def half_means_map(layout, params: Tensor) -> Tensor:
    """The exact ``(N, 6, 6)`` map of :class:`HalfMeans` features for flip, contrast,
    saturation and grayscale (colour jitter without clamping), composed in the pipeline's order.

    Flip swaps the halves; saturation and grayscale blend each half's mean colour with its grey
    value; contrast blends with the grey mean of the whole image, the mean of both halves.
    """
    n, fields = len(params), layout.split(params)
    _, contrast, saturation, _ = (fields["jitter_factors"] + 1).unbind(1)  # normalized encoding
    grey = torch.tensor(GRAY_WEIGHTS).expand(3, 3)  # every row the grey weights
    eye3, eye6 = torch.eye(3), torch.eye(6).expand(n, 6, 6)
    both = torch.block_diag(grey, grey)
    swap = torch.zeros(6, 6)
    swap[:3, 3:], swap[3:, :3] = eye3, eye3

    def blend(factor: Tensor, target: Tensor) -> Tensor:
        return factor[:, None, None] * eye6 + (1 - factor)[:, None, None] * target

    flip = fields["flip"][:, :, None]
    gray = fields["grayscale"][:, :, None]
    m = flip * swap + (1 - flip) * eye6
    m = blend(contrast, 0.5 * grey.repeat(2, 2)) @ m
    m = blend(saturation, both) @ m
    return (gray * both + (1 - gray) * eye6) @ m


def perfect_steering(layout):
    """Predicts :class:`HalfMeans` features of a flip / contrast / saturation / grey view."""

    def steer(features: Tensor, params: Tensor) -> Tensor:
        return (half_means_map(layout, params) @ features[..., None])[..., 0]

    return steer


def colour_aug() -> ParamAugment:
    return augment.simclr(8, variant="cifar", jitter=JITTER)


def mid_images(n: int = 6, size: int = 8, seed: int = 0) -> Tensor:
    """Values in [0.3, 0.6]: the jitter of strength 0.2 never clamps."""
    g = torch.Generator().manual_seed(seed)
    return 0.3 + 0.3 * torch.rand(n, 3, size, size, generator=g)


# identity and coverage


@pytest.mark.exactness
def test_identity_values_give_exactly_zero_move_and_others_move():
    aug = augment.byol(8, view=2, variant="cifar")
    report = augmentation_report(
        conv_encoder(), aug, mid_images(), steering=lambda e, p: e, steps=3
    )
    identity = [r for r in report.rows if r.identity]
    # one identity value per sweep except the crop position sweeps (a fixed smaller box)
    assert [r.sweep for r in identity] == [
        s.name for s in default_sweeps(aug, 3) if s.name not in ("crop_x", "crop_y")
    ]
    for r in identity:
        assert (r.move_cos, r.move_l2, r.steer_cos_orig) == (0.0, 0.0, 1.0)
        assert r.steer_explained is None
    # sigma 0.1 with BYOL's CIFAR kernel of 3 taps: neighbour weights exp(-50), no change
    (faint,) = [r for r in report.rows if r.sweep == "blur_sigma" and r.value == 0.1]
    assert faint.move_l2 < 1e-6 and faint.steer_explained is None and not faint.identity
    moved = [r for r in report.rows if not r.identity and r is not faint]
    assert all(r.move_cos > 1e-8 and r.move_l2 > 1e-5 for r in moved)


@pytest.mark.parametrize(
    "aug",
    [
        augment.byol(16, view=2, variant="cifar"),
        augment.simclr(16, variant="imagenet"),
        augment.simclr(16, variant="cifar", encoding="official"),
        augment.byol(16, view=1, encoding="official"),
    ],
    ids=["byol", "simclr-imagenet", "simclr-official", "byol-official"],
)
def test_default_sweeps_cover_every_field_and_replay(aug):
    sweeps = default_sweeps(aug, steps=4)
    identity = aug.identity_params(1)
    changed = set()
    for s in sweeps:
        assert s.params.shape == (len(s.values), aug.layout.param_dim)
        for name, cols in aug.layout.split(s.params).items():
            if not torch.equal(cols, aug.layout.split(identity)[name].expand_as(cols)):
                changed.add(name)
        aug(torch.rand(len(s.values), 3, 16, 16), params=s.params)  # valid replay parameters
        rows = [row for row in s.params if torch.equal(row[None], identity)]
        assert len(rows) == (0 if s.name in ("crop_x", "crop_y") else 1)
    assert changed == set(aug.layout.fields) - {"jitter_order"}
    report = augmentation_report(conv_encoder(), aug, torch.rand(2, 3, 16, 16), steps=4)
    assert len(report.rows) == sum(len(s.values) for s in sweeps)
    assert list(report.by_sweep()) == [s.name for s in sweeps]
    assert report.num_images == 2 and report.feature_dim == 8


def test_default_sweeps_follow_the_sampling_ranges():
    aug = augment.simclr(32, variant="cifar", jitter=(0.4, 0.0, 0.3, 0.1))
    sweeps = {s.name: s for s in default_sweeps(aug, steps=5)}
    assert "contrast" not in sweeps  # strength 0: nothing to vary
    assert sweeps["brightness"].values == (0.6, 0.8, 1.0, 1.2, 1.4)
    assert sweeps["saturation"].values == (0.7, 0.85, 1.0, 1.15, 1.3)
    assert sweeps["hue"].values == (-0.1, -0.05, 0.0, 0.05, 0.1)
    assert sweeps["crop_scale"].values == (0.2, 0.4, 0.6, 0.8, 1.0)
    crop = sweeps["crop_scale"].params[:, :4]  # (top, left, height, width), centred
    assert torch.allclose(crop[:, 2] * crop[:, 3], torch.tensor([0.2, 0.4, 0.6, 0.8, 1.0]))
    assert torch.allclose(crop[:, 0], (1 - crop[:, 2]) / 2)
    blur = default_sweeps(augment.byol(32, view=1), steps=3)[-2]
    assert blur.name == "blur_sigma" and blur.values == (0.0, 0.1, 1.05, 2.0)


# predictors


def test_perfect_predictor_explains_the_whole_move():
    aug = colour_aug()
    steer = perfect_steering(aug.layout)
    report = augmentation_report(HalfMeans(), aug, mid_images(), steering=steer, steps=5)
    checked = 0
    for r in report.rows:
        if r.sweep in ("flip", "contrast", "saturation", "grayscale") and not r.identity:
            assert r.move_cos > 1e-6  # a real move ...
            assert r.steer_explained == pytest.approx(1.0, abs=1e-6)  # ... fully predicted
            checked += 1
    assert checked == 1 + 4 + 4 + 1
    # the crop changes the half means in a way the predictor ignores
    crop = [r.steer_explained for r in report.rows if r.sweep == "crop_x"]
    assert max(crop) < 0.5


def test_perfect_predictor_in_an_embedded_space():
    aug = colour_aug()
    mean, std = torch.rand(6), 0.5 + torch.rand(6)

    def embed(f: Tensor) -> Tensor:
        return (f - mean) / std

    steer_raw = perfect_steering(aug.layout)

    def steer(e: Tensor, params: Tensor) -> Tensor:
        return embed(steer_raw(e * std + mean, params))

    report = augmentation_report(
        HalfMeans(), aug, mid_images(), steering=steer, embed=embed, steps=3
    )
    rows = [r for r in report.rows if r.sweep in ("contrast", "saturation") and not r.identity]
    assert len(rows) == 4
    assert all(r.steer_explained == pytest.approx(1.0, abs=1e-6) for r in rows)
    # the steering columns are in the embedded space, the move in the encoder's
    assert all(abs((1 - r.steer_cos_orig) - r.move_cos) > 1e-6 for r in rows)


@pytest.mark.exactness
def test_non_predictors_explain_nothing():
    aug = colour_aug()
    images = mid_images()
    unchanged = augmentation_report(
        HalfMeans(), aug, images, steering=lambda e, p: e.clone(), steps=3
    )
    moved = [r for r in unchanged.rows if r.steer_explained is not None]
    assert len(moved) > 10
    assert all(r.steer_explained == 0.0 for r in moved)
    assert "| 0.2 .. 1 (3) |" in unchanged.to_markdown(summary=True)
    g = torch.Generator().manual_seed(1)
    fixed = torch.rand(1, 6, generator=g)
    constant = augmentation_report(
        HalfMeans(), aug, images, steering=lambda e, p: fixed.expand_as(e), steps=3
    )
    assert all(r.steer_explained < -1 for r in constant.rows if r.steer_explained is not None)


def identity_head(dim: int, param_dim: int) -> EquivarianceHead:
    """A head whose prediction is the original embedding: y_hat = y_o (up to BN's eps)."""
    head = EquivarianceHead(
        dim, param_dim, output_dim=dim, param_embed_dim=4, num_projector_layers=1
    )
    with torch.no_grad():
        head.projector[0].weight.copy_(torch.eye(dim))
        head.predictor[0].weight.zero_()
        head.predictor[0].weight[:, :dim] = torch.eye(dim)
    return head


def test_head_columns_match_equimods_metrics():
    aug = colour_aug()
    images = mid_images()
    encoder = conv_encoder(width=6)
    torch.manual_seed(3)
    head = EquivarianceHead(6, aug.layout.param_dim, hidden_dim=16, output_dim=5).eval()
    report = augmentation_report(encoder, aug, images, head=head, steps=3)
    sweep = default_sweeps(aug, 3)[4]  # brightness
    row = next(r for r in report.rows if r.sweep == "brightness" and r.value == sweep.values[0])
    params = sweep.params[:1].expand(len(images), -1)
    with torch.no_grad():
        f_o = encoder.eval()(aug(images, params=aug.identity_params(len(images)))[0])
        f_a = encoder(aug(images, params=params)[0])
        y_o, y_a = head.project(f_o), head.project(f_a)
        expected = equivariance_metrics(y_o, y_a[None], head.predict(y_o, params)[None])
    assert row.head_cos_pred == pytest.approx(float(expected["cos_pred"]), abs=1e-6)
    assert row.head_cos_orig == pytest.approx(float(expected["cos_original"]), abs=1e-6)
    # equivariance_metrics takes 1 - cos in float32, the report in float64: ~1e-3 apart here
    assert row.head_explained == pytest.approx(1 - 1 / float(expected["relative"]), rel=2e-3)

    report = augmentation_report(
        encoder, aug, images, head=identity_head(6, aug.layout.param_dim), steps=3
    )
    moved = [r.head_explained for r in report.rows if r.head_explained is not None]
    assert len(moved) > 10 and max(abs(e) for e in moved) < 1e-3


@pytest.mark.exactness
def test_steering_operator_at_identity_and_modes_restored():
    aug = colour_aug()
    encoder, head = conv_encoder(), None
    operator = SteeringOperator(8, aug.layout.param_dim, rank=2, identity=aug.identity_params(1)[0])
    encoder.train()
    operator.train()
    report = augmentation_report(encoder, aug, mid_images(), steering=operator, head=head, steps=3)
    assert encoder.training and operator.training
    for r in report.rows:
        assert r.head_cos_pred is None and r.head_explained is None
        if r.identity:
            assert r.steer_cos_pred == 1.0  # M(a_id) = I exactly


@pytest.mark.exactness
def test_steering_term_with_its_standardisation():
    """``embed=term.embed``: the steering columns use the term's running statistics."""
    aug = colour_aug()
    term = SteeringTerm(8, aug.layout.param_dim, aug.identity_params(1)[0], rank=2)
    params = aug.sample(torch.rand(32, 3, 8, 8)).view(2, 16, -1)
    term(torch.randn(16, 8) + 3, torch.randn(2, 16, 8) + 3, params)  # updates the statistics
    encoder, images = conv_encoder(), mid_images()
    report = augmentation_report(
        encoder, aug, images, steering=term.operator, embed=term.embed, steps=3
    )
    assert term.training and encoder.training  # modes restored
    sweep = default_sweeps(aug, 3)[0]  # crop_scale, first value 0.2
    with torch.no_grad():
        f_o = encoder.eval()(images)
        f_a = encoder(aug(images, params=sweep.params[:1].expand(len(images), -1))[0])
        bn = term.embed
        e_o, e_a = ((f - bn.running_mean) / (bn.running_var + bn.eps).sqrt() for f in (f_o, f_a))
        cos = torch.nn.functional.cosine_similarity(e_o, e_a).mean().item()
    assert report.rows[0].steer_cos_orig == pytest.approx(cos, abs=1e-5)
    assert abs(report.rows[0].steer_cos_orig - (1 - report.rows[0].move_cos)) > 1e-3
    assert all(r.steer_cos_pred == 1.0 for r in report.rows if r.identity)


def test_normalize_is_applied_before_the_encoder():
    aug = colour_aug()
    images = mid_images()
    mean, std = torch.tensor([0.4, 0.5, 0.6]), torch.tensor([0.2, 0.3, 0.4])

    def normalize(x: Tensor) -> Tensor:
        return (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)

    class Normalize(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return normalize(x)

    a = augmentation_report(HalfMeans(), aug, images, normalize=normalize, steps=3)
    b = augmentation_report(nn.Sequential(Normalize(), HalfMeans()), aug, images, steps=3)
    c = augmentation_report(HalfMeans(), aug, images, steps=3)
    assert [r.move_cos for r in a.rows] == pytest.approx([r.move_cos for r in b.rows], abs=1e-9)
    assert [r.move_cos for r in a.rows] != pytest.approx([r.move_cos for r in c.rows], abs=1e-6)


# output


def test_markdown_and_dict():
    aug = colour_aug()
    report = augmentation_report(
        conv_encoder(), aug, mid_images(), steering=lambda e, p: e.clone(), steps=3
    )
    table = report.to_markdown().splitlines()
    assert len(table) == 2 + len(report.rows)
    assert "steering explained" in table[0] and "head" not in table[0]
    assert "| crop_scale | 1 (id) | 0.0000 | 0.0000 |" in report.to_markdown()
    summary = report.to_markdown(summary=True).splitlines()
    assert len(summary) == 2 + len(report.by_sweep())
    assert all(line.endswith("| 0.000 |") for line in summary[2:])  # pooled share of e -> e
    data = json.loads(json.dumps(report.to_dict()))
    assert data["num_images"] == 6 and len(data["rows"]) == len(report.rows)
    assert data["rows"][0]["sweep"] == "crop_scale" and data["rows"][0]["head_cos_pred"] is None
    assert isinstance(report, AugmentationReport)


# bad input


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"images": (mid_images() * 255).to(torch.uint8)}, ValueError, "images"),
        ({"images": mid_images()[:, :1]}, ValueError, "images"),
        ({"images": mid_images()[0]}, ValueError, "images"),
        (
            {"images": mid_images().index_fill(0, torch.tensor([1]), float("nan"))},
            ValueError,
            "images",
        ),
        ({"images": mid_images() + 1}, ValueError, "images"),
        ({"images": mid_images()[:0]}, ValueError, "images"),
        ({"augment": lambda x: x}, TypeError, "augment"),
        ({"head": EquivarianceHead(7, 15, hidden_dim=8, output_dim=4)}, ValueError, "head"),
        (
            {"head": EquivarianceHead(8, 18, hidden_dim=8, output_dim=4)},
            ValueError,
            "head.param_dim",
        ),
        ({"steering": SteeringOperator(7, 15, rank=2)}, ValueError, "steering.dim"),
        ({"steering": SteeringOperator(8, 18, rank=2)}, ValueError, "steering.param_dim"),
        ({"steering": lambda e, p: e[:, :2]}, ValueError, "steering"),
        ({"embed": lambda f: f}, ValueError, "embed"),
        ({"steering": lambda e, p: e, "embed": lambda f: f[:1]}, ValueError, "embed"),
        ({"sweeps": [Sweep("s", "u", (1.0,), torch.zeros(1, 18))]}, ValueError, r"sweeps\[0\]"),
        ({"steps": 1}, ValueError, "steps"),
        ({"batch_size": 0}, ValueError, "batch_size"),
    ],
    ids=[
        "uint8",
        "one-channel",
        "3d",
        "nan",
        "above-1",
        "empty",
        "augment",
        "head-input-width",
        "head-param-width",
        "steering-width",
        "steering-param-width",
        "steering-output",
        "embed-without-steering",
        "embed-output",
        "sweep-width",
        "steps",
        "batch-size",
    ],
)
def test_bad_input_names_the_argument(change, error, match):
    kwargs = {
        "encoder": conv_encoder(),
        "augment": colour_aug(),
        "images": mid_images(),
        "steps": 3,
    }
    kwargs.update(change)
    with pytest.raises(error, match=match):
        augmentation_report(**kwargs)


def test_encoder_nan_and_sweep_shape_and_unknown_op():
    class Broken(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return torch.full((x.shape[0], 4), float("nan"))

    with pytest.raises(ValueError, match="encoder"):
        augmentation_report(Broken(), colour_aug(), mid_images(), steps=3)
    with pytest.raises(ValueError, match="values has 2 entries"):
        Sweep("s", "u", (0.0, 1.0), torch.zeros(3, 15))

    class Custom(ParamOp):
        fields = HorizontalFlip().fields

    with pytest.raises(TypeError, match="Custom"):
        default_sweeps(ParamAugment([ColorJitter(), Custom()]))


def test_a_new_op_declares_its_own_sweeps():
    """The report builds its sweeps from the ops' declarations: a new op needs no report edit."""

    class Invert(HorizontalFlip):
        field_name, description, unit = "invert", "1 if inverted", "0 / 1 (inverted)"

        def apply_transform(self, x: Tensor, raw: dict[str, Tensor]) -> Tensor:
            return torch.where(raw["applied"][:, None, None, None], 1 - x, x)

    aug = ParamAugment([ColorJitter(*JITTER), Invert()])
    sweeps = default_sweeps(aug, steps=3)
    assert [s.name for s in sweeps][-1] == "invert" and sweeps[-1].unit == "0 / 1 (inverted)"
    assert sweeps[-1].params[:, -1].tolist() == [0.0, 1.0]
    report = augmentation_report(conv_encoder(), aug, mid_images(), sweeps=sweeps[-1:])
    assert report.rows[0].identity and report.rows[1].move_cos > 0


# batch sizes


@pytest.mark.exactness
@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 6), split=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_rows_are_means_over_images(n, split, seed):
    """Any batch size works, and each move is the mean over the images (BatchNorm in eval)."""
    aug = colour_aug()
    encoder = conv_encoder(seed % 3)
    images = mid_images(n, seed=seed)
    sweeps = [s for s in default_sweeps(aug, 2) if s.name in ("crop_scale", "hue", "flip")]
    report = augmentation_report(encoder, aug, images, sweeps=sweeps, batch_size=4)
    assert len(report.rows) == sum(len(s.values) for s in sweeps) and report.num_images == n
    assert all(r.move_cos >= 0 and r.move_l2 >= 0 for r in report.rows)
    assert all(r.move_cos == 0.0 for r in report.rows if r.identity)
    if n < 2:
        return
    k = min(split, n - 1)
    parts = [
        augmentation_report(encoder, aug, part, sweeps=sweeps, batch_size=4)
        for part in (images[:k], images[k:])
    ]
    for whole, first, rest in zip(report.rows, *(p.rows for p in parts), strict=True):
        combined = (k * first.move_cos + (n - k) * rest.move_cos) / n
        assert whole.move_cos == pytest.approx(combined, rel=1e-4, abs=1e-9)
