"""The standard test set of ``tests/_standard.py`` applied to every public module."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from _standard import Case, StandardTests
from torch import nn

from equimod_plugin import (
    EquiModCosineLoss,
    EquiModLoss,
    EquiModTerm,
    EquivarianceHead,
    SteeringLoss,
    SteeringOperator,
    SteeringTerm,
    augment,
)
from equimod_plugin.tta import SteeredTTA

D, P, E, V, SIZE = 6, 5, 4, 2, 8
NAN = math.nan


def seeded(make):
    def build() -> nn.Module:
        torch.manual_seed(0)
        return make()

    return build


def randn(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def term_inputs(b: int, dtype: torch.dtype, p: int = P) -> tuple:
    return (
        randn(b, D, dtype=dtype),
        randn(V, b, D, dtype=dtype, seed=2),
        randn(V, b, p, seed=3, dtype=dtype),
    )


def embedding_inputs(b: int, dtype: torch.dtype) -> tuple:
    return randn(V, b, E, dtype=dtype), randn(V, b, E, dtype=dtype, seed=2)


def matrix_inputs(b: int, dtype: torch.dtype) -> tuple:
    return randn(b, D, dtype=dtype), randn(b, D, dtype=dtype, seed=2)


def operator_inputs(b: int, dtype: torch.dtype) -> tuple:
    return randn(b, D, dtype=dtype), 0.5 * randn(b, P, dtype=dtype, seed=2)


TERM_BAD = [
    (
        lambda: (randn(4, D + 1), randn(V, 4, D), randn(V, 4, P)),
        ValueError,
        r"features_o must have shape",
    ),
    (
        lambda: (randn(4, D), randn(V, 3, D), randn(V, 4, P)),
        ValueError,
        r"features_views\[0\] must have shape",
    ),
    (
        lambda: (randn(4, D), randn(V, 4, D), randn(V, 4, P + 1)),
        ValueError,
        r"params\[0\] must have shape",
    ),
    (
        lambda: (randn(4, D), randn(V, 4, D), randn(V + 1, 4, P)),
        ValueError,
        r"params must have shape",
    ),
    (
        lambda: (randn(4, D), torch.full((V, 4, D), NAN), randn(V, 4, P)),
        ValueError,
        r"features_views\[0\] must be finite",
    ),
    (
        lambda: (randn(4, D).long(), randn(V, 4, D), randn(V, 4, P)),
        ValueError,
        r"features_o must be a floating point",
    ),
    (
        lambda: (randn(0, D), randn(V, 0, D), randn(V, 0, P)),
        ValueError,
        r"features_views must have at least one view and one sample",
    ),
]
EMBEDDING_BAD = [
    (lambda: (randn(4, E), randn(4, E)), ValueError, r"y_views must have shape \(V, B, E\)"),
    (lambda: (randn(V, 4, E), randn(V, 4, E + 1)), ValueError, r"y_pred\[0\] must have shape"),
    (
        lambda: (randn(V, 4, E), torch.full((V, 4, E), math.inf)),
        ValueError,
        r"y_pred\[0\] must be finite",
    ),
    (lambda: ([[0.0]], randn(V, 4, E)), TypeError, r"y_views must be a torch.Tensor"),
]
MATRIX_BAD = [
    (
        lambda: (randn(4, D), randn(4, D + 1)),
        ValueError,
        rf"target must have shape \(4, {D}\)",
    ),
    (lambda: (randn(4, D), randn(3, D)), ValueError, r"target must have shape"),
    (lambda: (torch.full((4, D), NAN), randn(4, D)), ValueError, r"steered must be finite"),
    (lambda: (randn(D), randn(D)), ValueError, r"steered must have shape \(B, D\)"),
]
OPERATOR_BAD = [
    (
        lambda: (randn(4, D + 1), randn(4, P)),
        ValueError,
        rf"features must have shape \(B, {D}\)",
    ),
    (
        lambda: (randn(4, D), randn(4, P + 1)),
        ValueError,
        rf"params must have shape \(4, {P}\)",
    ),
    (lambda: (randn(4, D), randn(3, P)), ValueError, rf"params must have shape \(4, {P}\)"),
    (lambda: (randn(4, D), torch.full((4, P), NAN)), ValueError, r"params must be finite"),
    (lambda: (randn(4, D).int(), randn(4, P)), ValueError, r"features must be a floating point"),
]

HEAD = {"hidden_dim": 8, "output_dim": E, "param_embed_dim": 4}
CASES: list[Case] = [
    Case(
        "EquivarianceHead",
        seeded(lambda: EquivarianceHead(D, P, **HEAD)),
        term_inputs,
        lambda b: [(b, E), (V, b, E), (V, b, E)],
        TERM_BAD,
        grad_args=(0, 1, 2),
        train_min_batch=2,
    ),
    Case(
        "EquiModLoss", seeded(EquiModLoss), embedding_inputs, lambda b: [()], EMBEDDING_BAD, (0, 1)
    ),
    Case(
        "EquiModLoss-sibling",
        seeded(lambda: EquiModLoss(exclude_sibling=True)),
        embedding_inputs,
        lambda b: [()],
        EMBEDDING_BAD,
        (0, 1),
    ),
    Case(
        "EquiModCosineLoss",
        seeded(EquiModCosineLoss),
        embedding_inputs,
        lambda b: [()],
        EMBEDDING_BAD,
        (0, 1),
    ),
    *[
        Case(
            f"SteeringOperator-{kind}",
            seeded(partial(SteeringOperator, D, P, kind=kind, rank=2, hidden_dim=8)),
            operator_inputs,
            lambda b: [(b, D)],
            OPERATOR_BAD,
            (0, 1),
        )
        for kind in ("low_rank", "full", "exponential")
    ],
    *[
        Case(
            f"SteeringLoss-{d}",
            seeded(partial(SteeringLoss, d)),
            matrix_inputs,
            lambda b: [()],
            MATRIX_BAD,
            (0, 1),
        )
        for d in ("cosine", "mse")
    ],
    Case(
        "EquiModTerm",
        seeded(lambda: EquiModTerm(D, P, **HEAD)),
        term_inputs,
        lambda b: [()],
        TERM_BAD,
        grad_args=(0, 1, 2),
        train_min_batch=2,
    ),
    Case(
        "SteeringTerm",
        seeded(lambda: SteeringTerm(D, P, rank=2, hidden_dim=8)),
        term_inputs,
        lambda b: [()],
        TERM_BAD,
        grad_args=(0, 1, 2),
        train_min_batch=2,
    ),
]

PRESETS = {
    "simclr-cifar": lambda: augment.simclr(SIZE, "cifar"),
    "simclr-imagenet": lambda: augment.simclr(SIZE, blur_kernel=3, blur_p=1.0),
    "byol-1": lambda: augment.byol(SIZE, 1, "cifar"),
    "byol-2": lambda: augment.byol(SIZE, 2, "cifar", solarize_p=1.0),
}


def augment_inputs(make, b: int, dtype: torch.dtype) -> tuple:
    """Images in [0.2, 0.8] (gradcheck stays inside [0, 1]) and drawn parameters to replay."""
    x = 0.2 + 0.6 * torch.rand(b, 3, SIZE + 2, SIZE + 2, generator=torch.Generator().manual_seed(4))
    params = make().sample(x, generator=torch.Generator().manual_seed(5))
    return x.to(dtype), params


def augment_bad(make) -> list:
    aug = make()
    p = aug.layout.param_dim
    x = torch.rand(2, 3, SIZE, SIZE)
    return [
        (lambda: (torch.rand(3, SIZE, SIZE),), ValueError, r"x must have shape \(B, C, H, W\)"),
        (lambda: (torch.rand(2, 1, SIZE, SIZE),), ValueError, r"x must have 3 channels"),
        (lambda: ((255 * x).byte(),), ValueError, r"x must be a floating point image batch"),
        (lambda: (x + 1,), ValueError, r"x must have values in \[0, 1\]"),
        (
            lambda: (torch.full_like(x, NAN),),
            ValueError,
            r"x must have values in \[0, 1\] \(no NaN\)",
        ),
        (lambda: (x, aug.identity_params(3)), ValueError, rf"params must have shape \(2, {p}\)"),
        (
            lambda: (x, aug.identity_params(2)[:, 1:]),
            ValueError,
            rf"params must have shape \(2, {p}\)",
        ),
        (lambda: (x, torch.full((2, p), NAN)), ValueError, r"params must be finite"),
        (lambda: ([[0.5]],), TypeError, r"x must be a torch.Tensor"),
    ]


for name, make in PRESETS.items():
    CASES.append(
        Case(
            f"ParamAugment-{name}",
            seeded(make),
            partial(augment_inputs, make),
            partial(
                lambda b, width: [(b, 3, SIZE, SIZE), (b, width)], width=make().layout.param_dim
            ),
            augment_bad(make),
            grad_args=(0,),
        )
    )


def make_tta() -> nn.Module:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(3, D, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    aug = augment.byol(SIZE, 1, "cifar")
    params = aug.sample_params(4, SIZE, generator=torch.Generator().manual_seed(6))
    operator = SteeringOperator(D, aug.layout.param_dim, rank=2, hidden_dim=8)
    return SteeredTTA(encoder, operator, params, grad=True)  # grad: for gradcheck


CASES.append(
    Case(
        "SteeredTTA",
        make_tta,
        lambda b, dtype: (randn(b, 3, SIZE, SIZE, dtype=dtype),),
        lambda b: [(b, D), (b,), (b, 4, D)],
        [
            (
                lambda: (randn(3, SIZE, SIZE),),
                ValueError,
                r"images must be a float tensor \(B, 3, H, W\)",
            ),
            (
                lambda: (randn(2, 3, SIZE, SIZE).long(),),
                ValueError,
                r"images must be a float tensor",
            ),
        ],
    )
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        params = []
        for case in CASES:
            reason = case.xfail.get(metafunc.definition.originalname)
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            params.append(pytest.param(case, id=case.name, marks=marks))
        metafunc.parametrize("case", params)


class TestStandard(StandardTests):
    """Every public module passes the standard set."""
