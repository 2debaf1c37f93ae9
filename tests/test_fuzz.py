"""Bad input at every public entry point, fuzzed with hypothesis.

Each entry point has an oracle: the inputs its docstring accepts. Accepted inputs must give
finite outputs of the documented shape; anything else must raise ``ValueError``, ``TypeError`` or
``RuntimeError`` whose message names the offending argument. Nothing may broadcast silently.
Tensors vary in rank, sizes (0 included), dtype, values (NaN, Inf, out of [0, 1]) and device
("meta" stands for another device).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import equimod_plugin
from equimod_plugin import (
    EquiModCosineLoss,
    EquiModLoss,
    EquiModTerm,
    EquivarianceHead,
    SteeringLoss,
    SteeringOperator,
    SteeringTerm,
    augment,
    equivariance_metrics,
)
from equimod_plugin.integrations.lightly import attach
from equimod_plugin.tta import SteeredTTA, dispersion, tta_params

FUZZ = settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)  # derandomize: the same examples in every CI run
ERRORS = (ValueError, TypeError, RuntimeError)
FLOATS = (torch.float32, torch.float64, torch.bfloat16)
D, P, E = 4, 3, 4


@dataclass
class Arg:
    """A fuzzed tensor and what it is."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    fill: str  # "normal", "unit" ([0, 1]), "nan", "inf", "big" (outside [0, 1])
    device: str

    def tensor(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        t = {
            "normal": lambda: torch.randn(self.shape, generator=g),
            "unit": lambda: torch.rand(self.shape, generator=g),
            "nan": lambda: torch.full(self.shape, math.nan),
            "inf": lambda: torch.full(self.shape, -math.inf),
            "big": lambda: 2 + torch.rand(self.shape, generator=g),
        }[self.fill]()
        t = t.to(self.dtype) if self.dtype != torch.int64 else (t * 10).clamp(-9, 9).long()
        return t.to(self.device)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOATS

    @property
    def finite(self) -> bool:
        no_data = math.prod(self.shape) == 0 or self.device == "meta"  # nothing to check
        return self.fill in ("normal", "unit", "big") or no_data

    @property
    def unit(self) -> bool:
        return self.fill == "unit" or math.prod(self.shape) == 0


def args(shape: tuple[int, ...], fills: tuple[str, ...] = ("normal", "nan", "inf")) -> Any:
    """Mostly the expected ``shape``; sometimes a size off by one, another rank, dtype, device."""
    size = st.sampled_from([0, 1, 2, 3])

    def mutate(s: tuple[int, ...], how: int, i: int, v: int) -> tuple[int, ...]:
        if how == 1 and s:  # one size changed
            s = s[: i % len(s)] + (v,) + s[i % len(s) + 1 :]
        elif how == 2:  # another rank
            s = s[:-1] if s and v % 2 else (*s, 2)
        return s

    shapes = st.builds(mutate, st.just(shape), st.sampled_from([0, 0, 0, 1, 2]), size, size)
    dtypes = st.sampled_from([torch.float32] * 4 + [torch.float64, torch.bfloat16, torch.int64])
    fill = st.sampled_from(fills[:1] * 4 + fills[1:])
    device = st.sampled_from(["cpu"] * 12 + ["meta"])
    return st.builds(Arg, shapes, dtypes, fill, device)


def check(call: Any, names: list[str], valid: bool, shapes: list[tuple[int, ...]] | None) -> None:
    """``valid``: must succeed with finite outputs of ``shapes``; else raise naming an argument."""
    try:
        out = call()
    except ERRORS as error:
        assert not valid, f"valid input rejected: {error!r}"
        message = str(error)
        assert any(n in message for n in names), f"message names no argument: {message!r}"
        return
    assert valid, "invalid input accepted"
    outs = [t for t in (out if isinstance(out, tuple) else (out,)) if isinstance(t, torch.Tensor)]
    if shapes is not None:
        assert [tuple(t.shape) for t in outs] == shapes
    assert all(torch.isfinite(t.float()).all() for t in outs if t.device.type != "meta")


def same_device(*xs: Arg) -> bool:
    return len({x.device for x in xs}) == 1


def stack_ok(x: Arg, views: int | None, rows: int | None, cols: int) -> bool:
    """A finite float (V >= 1, B >= 1, cols) stack, optionally with V and B fixed."""
    s = x.shape
    return (
        len(s) == 3
        and x.is_float
        and x.finite
        and s[0] >= 1
        and s[1] >= 1
        and s[2] == cols
        and (views is None or s[0] == views)
        and (rows is None or s[1] == rows)
    )


def matrix_ok(x: Arg, rows: int | None, cols: int) -> bool:
    s = x.shape
    return len(s) == 2 and x.is_float and x.finite and s[1] == cols and rows in (None, s[0])


@FUZZ
@given(y_views=args((2, 3, E)), y_pred=args((2, 3, E)), cosine=st.booleans())
def test_equimod_losses(y_views: Arg, y_pred: Arg, cosine: bool) -> None:
    loss = EquiModCosineLoss() if cosine else EquiModLoss()
    v = y_views.shape
    valid = (
        stack_ok(y_views, None, None, v[-1] if v else -1)
        and v[-1] >= 1
        and stack_ok(y_pred, v[0], v[1], v[2])
        and same_device(y_views, y_pred)
    )  # mixed float dtypes are promoted
    check(lambda: loss(y_views.tensor(), y_pred.tensor()), ["y_views", "y_pred"], valid, [()])


def head_valid(f_o: Arg, f_views: Arg, params: Arg, min_batch: int) -> bool:
    b = f_o.shape[0] if f_o.shape else -1
    return (
        matrix_ok(f_o, None, D)
        and b >= min_batch
        and stack_ok(f_views, None, b, D)
        and stack_ok(params, f_views.shape[0], b, P)
        and same_device(f_o, f_views, params)
        and len({f_o.dtype, f_views.dtype, params.dtype}) == 1
    )


@FUZZ
@given(
    f_o=args((3, D)),
    f_views=args((2, 3, D)),
    params=args((2, 3, P)),
    which=st.sampled_from(["head", "equimod"]),
    train=st.booleans(),
)
def test_heads_and_terms(f_o: Arg, f_views: Arg, params: Arg, which: str, train: bool) -> None:
    torch.manual_seed(0)
    module = {
        "head": lambda: EquivarianceHead(D, P, hidden_dim=8, output_dim=E, param_embed_dim=4),
        "equimod": lambda: EquiModTerm(D, P, hidden_dim=8, output_dim=E, param_embed_dim=4),
        "steering": lambda: SteeringTerm(D, P, rank=2, hidden_dim=8),
    }[which]().train(train)
    valid = head_valid(f_o, f_views, params, 2 if train else 1) and f_o.device == "cpu"
    if valid and f_o.dtype != torch.float32:  # inputs of another dtype than the module's:
        with pytest.raises(RuntimeError, match="dtype"):  # torch's own error, naming dtypes
            module(f_o.tensor(), f_views.tensor(), params.tensor())
        return
    b, v = f_o.shape[0] if valid else 0, f_views.shape[0] if valid else 0
    shapes = [(b, E), (v, b, E), (v, b, E)] if which == "head" else [()]
    names = ["features_o", "features_views", "params", "y_o"]
    check(lambda: module(f_o.tensor(), f_views.tensor(), params.tensor()), names, valid, shapes)


@FUZZ
@given(
    features=args((3, D)),
    params=args((3, P)),
    kind=st.sampled_from(["low_rank", "full", "exponential"]),
    many=st.booleans(),
)
def test_steering_operator(features: Arg, params: Arg, kind: str, many: bool) -> None:
    torch.manual_seed(0)
    op = SteeringOperator(D, P, kind=kind, rank=2, hidden_dim=8)
    b = features.shape[0] if features.shape else -1
    valid = (
        matrix_ok(features, None, D)
        and matrix_ok(params, None if many else b, P)
        and features.device == params.device == "cpu"  # the operator's identity is on cpu
    )
    if many:
        k = params.shape[0] if valid else 0
        call, shapes = lambda: op.steer_many(features.tensor(), params.tensor()), [(b, k, D)]
    else:
        call, shapes = lambda: op(features.tensor(), params.tensor()), [(max(b, 0), D)]
    check(call, ["features", "params"], valid, shapes if valid else None)


@FUZZ
@given(steered=args((3, D)), target=args((3, D)), distance=st.sampled_from(["cosine", "mse"]))
def test_steering_loss(steered: Arg, target: Arg, distance: str) -> None:
    s = steered.shape
    valid = (
        len(s) == 2
        and s[0] >= 1
        and s[1] >= 1
        and matrix_ok(steered, None, s[1])
        and matrix_ok(target, s[0], s[1])
        and same_device(steered, target)
    )
    if steered.device != target.device or s[:1] == (0,):
        return  # known gaps, test_known_gaps_for_the_lead
    call = lambda: SteeringLoss(distance)(steered.tensor(), target.tensor())  # noqa: E731
    check(call, ["steered", "target"], valid, [()])


@FUZZ
@given(y_o=args((3, E)), y_views=args((2, 3, E)), y_pred=args((2, 3, E)))
def test_equivariance_metrics(y_o: Arg, y_views: Arg, y_pred: Arg) -> None:
    b = y_o.shape[0] if y_o.shape else -1
    valid = (
        matrix_ok(y_o, None, E)
        and b >= 1
        and stack_ok(y_views, None, b, E)
        and stack_ok(y_pred, y_views.shape[0], b, E)
        and same_device(y_o, y_views, y_pred)
    )
    try:
        out = equivariance_metrics(y_o.tensor(), y_views.tensor(), y_pred.tensor())
    except ERRORS as error:
        assert not valid, repr(error)
        assert any(n in str(error) for n in ("y_o", "y_views", "y_pred")), str(error)
        return
    assert valid, "invalid input accepted"
    assert all(math.isfinite(v) for v in out.values())


PRESETS = [
    augment.simclr(8, "cifar"),
    augment.byol(8, 2, "cifar"),
    augment.simclr(8, blur_kernel=3, encoding="official"),
]


@FUZZ
@given(
    x=args((2, 3, 10, 10), fills=("unit", "big", "nan", "normal")),
    replay=st.sampled_from(["none", "identity", "drawn", "random"]),
    which=st.sampled_from(range(len(PRESETS))),
)
def test_augmentations(x: Arg, replay: str, which: int) -> None:
    aug = PRESETS[which]
    s = x.shape
    valid = len(s) == 4 and x.is_float and s[1] == 3 and x.unit and min(s[2:], default=0) >= 1
    valid = valid and x.device == "cpu"  # kornia's blur cannot run on meta tensors
    b = s[0] if s else 0
    params = None
    if replay == "identity":
        params = aug.identity_params(max(b, 0))
        # the official encoding's identity box is the view size: outside smaller images
        valid = valid and (aug.layout.encoding == "normalized" or min(s[2:], default=0) >= 8)
    elif replay == "drawn" and valid:
        params = aug.sample(x.tensor(), generator=torch.Generator().manual_seed(1))
    elif replay == "random":
        params = torch.randn(max(b, 0), aug.layout.param_dim)
        valid = valid and b == 0  # random values are no valid augmentation
    shapes = [(b, 3, 8, 8), (b, aug.layout.param_dim)] if valid else None
    check(lambda: aug(x.tensor(), params=params), ["x", "params"], valid, shapes)


@FUZZ
@given(value=st.floats(allow_nan=True, allow_infinity=True, width=32))
def test_augmentation_constructors(value: float) -> None:
    makes = {
        "p": lambda: augment.HorizontalFlip(value),
        "threshold": lambda: augment.RandomSolarize(0.5, threshold=value),
        "hue": lambda: augment.ColorJitter(hue=value),
        "brightness": lambda: augment.ColorJitter(brightness=value),
        "sigma": lambda: augment.GaussianBlur(0.5, 3, (value, 2.0)),
        "scale": lambda: augment.RandomResizedCrop(8, scale=(value, 1.0)),
    }
    valid = {
        "p": 0 <= value <= 1,
        "threshold": 0 <= value <= 1,
        "hue": 0 <= value <= 0.5,
        "brightness": value >= 0 and math.isfinite(value),
        "sigma": 0 < value <= 2,
        "scale": 0 < value <= 1,
    }
    for name, make in makes.items():
        check(make, [name], valid[name], None)


@FUZZ
@given(steered=args((2, 3, D)))
def test_tta_dispersion(steered: Arg) -> None:
    shape = steered.shape
    if not (steered.is_float and steered.finite) or (len(shape) == 3 and min(shape[1:]) == 0):
        return  # known gaps, test_known_gaps_for_the_lead
    valid = len(steered.shape) == 3 and steered.is_float and steered.finite
    shapes = [(steered.shape[0],)] if valid else None  # B = 0: an empty score
    check(lambda: dispersion(steered.tensor()), ["steered"], valid, shapes)


def tta() -> SteeredTTA:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(3, D, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    aug = augment.byol(8, 1, "cifar")
    params = tta_params(aug, 5, (8, 8), generator=torch.Generator().manual_seed(0))
    return SteeredTTA(encoder, SteeringOperator(D, aug.layout.param_dim, rank=2), params).eval()


@FUZZ
@given(images=args((2, 3, 8, 8)))
def test_tta_forward(images: Arg) -> None:
    s = images.shape
    valid = len(s) == 4 and images.is_float and images.finite and s[1] == 3
    valid = valid and min(s[2:]) >= 3 and images.device == "cpu"  # B = 0: empty outputs
    valid = valid and images.dtype == torch.float32  # the encoder's dtype
    if not valid:  # raised by the user's encoder or by the operator on its features
        with pytest.raises(ERRORS):
            tta()(images.tensor())
        return
    check(lambda: tta()(images.tensor()), ["images"], valid, [(s[0], D), (s[0],), (s[0], 5, D)])


class NoBackbone(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Holder(nn.Module):
    def __init__(self, backbone: Any) -> None:
        super().__init__()
        self.backbone = backbone


class Scalar(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum()


class Dict(nn.Module):
    def forward(self, x: torch.Tensor) -> dict:
        return {"x": x}


def conv() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())


MODELS = {
    "ok": (lambda: Holder(conv()), True, None),
    "no backbone": (NoBackbone, False, "backbone"),
    "backbone not a module": (lambda: Holder.__new__(Holder), False, "backbone"),
    "scalar output": (lambda: Holder(Scalar()), False, "backbone"),
    "dict output": (lambda: Holder(Dict()), False, "backbone"),
    "wrong channels": (lambda: Holder(nn.Conv2d(1, 4, 3)), False, "channels"),
    "not a module": (lambda: object(), False, "model"),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_wrap_rejects_models_without_what_it_needs(name: str) -> None:
    make, valid, word = MODELS[name]
    model = make()
    if name == "backbone not a module":
        nn.Module.__init__(model)
        model.backbone = "resnet"
    aug = augment.byol(8, 1, "cifar")
    if valid:
        attach(model, aug, hidden_dim=8, output_dim=E, param_embed_dim=4)
        model.equivariance.views(torch.rand(2, 3, 8, 8))
        assert math.isfinite(float(model.equivariance.loss().detach()))
        return
    with pytest.raises(ERRORS, match=word):
        attach(model, aug)


@FUZZ
@given(
    images=args((3, 3, 8, 8), fills=("unit", "big", "nan")),
    term=st.sampled_from(["equimod", "steering"]),
)
def test_wrapped_model_views(images: Arg, term: str) -> None:
    torch.manual_seed(0)
    kwargs: dict[str, Any] = {"hidden_dim": 8, "output_dim": E} if term == "equimod" else {}
    model = Holder(conv())
    attach(model, augment.byol(8, 1, "cifar"), term=term, **kwargs)
    s = images.shape
    valid = len(s) == 4 and images.is_float and s[1] == 3 and images.unit and s[0] >= 2
    valid = valid and min(s[2:]) >= 1 and images.device == "cpu"
    if valid or s[:1] != (1,):  # one image: the EquiMod head's BatchNorm rejects it by name
        call = lambda: (*model.equivariance.views(images.tensor()), model.equivariance.loss())  # noqa: E731
        check(call, ["images"], valid, None)


@FUZZ
@given(x=args((2, 3, 4, 4), fills=("unit", "big")))
def test_normalize(x: Arg) -> None:
    valid = len(x.shape) == 4 and x.shape[1] == 3 and x.is_float
    norm = augment.Normalize.imagenet().to("cpu")
    shapes = None if not valid else [x.shape]
    call = lambda: norm(x.tensor())  # noqa: E731
    if x.device == "meta" and valid:
        assert norm(x.tensor()).shape == x.shape
        return
    check(call, ["x"], valid, shapes)


def test_every_public_entry_point_is_fuzzed() -> None:
    """A new public name must get a fuzz test (or be listed here as not taking tensors)."""
    fuzzed = {
        "EquiModCosineLoss", "EquiModLoss", "EquiModTerm", "EquivarianceHead", "SteeringLoss",
        "SteeringOperator", "SteeringTerm", "equivariance_metrics",
        "EquivarianceBranch", "equimod_branch", "steering_branch",  # through attach
        "ColorJitter", "GaussianBlur", "HorizontalFlip", "ParamAugment", "RandomGrayscale",
        "RandomResizedCrop", "RandomSolarize", "byol", "byol_views", "simclr", "Normalize",
    }  # fmt: skip
    not_tensor_entry_points = {
        "augment", "validation", "EquivarianceOutput", "Field", "ParamLayout", "ParamOp",
        "Term",  # a Protocol
        "from_kornia", "from_lightly", "from_torchvision",  # take pipelines (tests/test_from_*.py)
    }  # fmt: skip
    public = set(equimod_plugin.__all__) | set(augment.__all__)
    assert public <= fuzzed | not_tensor_entry_points, public - fuzzed - not_tensor_entry_points


def _steering_cases() -> list[Any]:
    torch.manual_seed(0)
    term = SteeringTerm(D, P, rank=2, hidden_dim=8)
    meta = [torch.randn(3, D), torch.randn(2, 3, D), torch.randn(2, 3, P)]
    meta = [t.to("meta") for t in meta]
    nan = torch.full((2, 3, D), math.nan)
    return [
        pytest.param(
            lambda: SteeringLoss()(torch.randn(3, D), torch.randn(3, D, device="meta")),
            ["steered", "target"],
            id="SteeringLoss-devices",
        ),
        pytest.param(
            lambda: SteeringLoss()(torch.randn(0, D), torch.randn(0, D)),
            ["steered", "target"],
            id="SteeringLoss-empty",
        ),
        pytest.param(
            lambda: term(*meta),
            ["features_o", "features_views", "params"],
            id="SteeringTerm-device",
        ),
        pytest.param(
            lambda: term(torch.randn(3, D), torch.randn(2, 3, D).double(), torch.randn(2, 3, P)),
            ["features_o", "features_views", "params"],
            id="SteeringTerm-dtypes",
        ),
        pytest.param(
            lambda: dispersion(nan),
            ["steered"],
            id="dispersion-nan",
        ),
        pytest.param(
            lambda: dispersion(torch.randn(2, 0, D)),
            ["steered"],
            id="dispersion-no-embeddings",
        ),
        pytest.param(
            lambda: dispersion(torch.ones(2, 3, D, dtype=torch.int64)),
            ["steered"],
            id="dispersion-int",
        ),
    ]


@pytest.mark.parametrize(("call", "names"), _steering_cases())
def test_steering_entry_points_name_bad_arguments(call: Any, names: list[str]) -> None:
    """Bad input to the steering loss, term and dispersion gets an error naming the argument."""
    check(call, names, False, None)
