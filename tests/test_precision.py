"""bf16 autocast on CPU: every module stays finite and within a stated tolerance of float32.

Tolerances (also in docs/production.md), as a fraction of the float32 output's largest magnitude
or 2e-3 absolute, whichever is larger (``max |bf16 - fp32| <= max(tol * max |fp32|, 2e-3)``),
with inputs in float32 or already in bfloat16 (as a bf16 backbone returns them; rounding the
inputs alone moves a cosine loss near 0.005 by 0.001). bf16 keeps 8 significant bits:

- EquivarianceHead embeddings: 5 %;  EquiModTerm / EquiModLoss / EquiModCosineLoss: 5 %;
- SteeringOperator (low_rank, full) and SteeringLoss: 5 %;
- augmentation views (pixels in [0, 1]): max 0.1, mean 0.01 absolute.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch.utils._pytree import tree_leaves

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

B, D, P, E = 32, 64, 18, 32
TOL, ATOL = 0.05, 2e-3


def tensors(*shapes: tuple[int, ...], seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g) for s in shapes]


def compare(fn: Callable, args: list[torch.Tensor], bf16_inputs: bool, tol: float = TOL) -> None:
    expected = [t for t in tree_leaves(fn(*args)) if isinstance(t, torch.Tensor)]
    if bf16_inputs:
        args = [a.bfloat16() for a in args]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = [t for t in tree_leaves(fn(*args)) if isinstance(t, torch.Tensor)]
    for o, e in zip(out, expected, strict=True):
        assert torch.isfinite(o).all()
        error = (o.float() - e).abs().max().item()
        assert error <= max(tol * e.abs().max().item(), ATOL), f"bf16 error {error:.3g}"


def head() -> EquivarianceHead:
    torch.manual_seed(0)
    return EquivarianceHead(D, P, hidden_dim=128, output_dim=E, param_embed_dim=16)


@pytest.mark.parametrize("bf16_inputs", [False, True], ids=["fp32-in", "bf16-in"])
@pytest.mark.parametrize(
    "name",
    ["head", "equimod_term", "steering_term", "loss", "loss_close", "cosine", "steer_cos", "mse"],
)
def test_bf16_autocast_stays_close_to_float32(name: str, bf16_inputs: bool) -> None:
    term_args = tensors((B, D), (2, B, D), (2, B, P))
    y_views, y_pred = tensors((2, B, E), (2, B, E), seed=1)
    f, g = tensors((B, D), (B, D), seed=2)
    cases = {
        "head": (head(), term_args),
        "equimod_term": (EquiModTerm(D, P, hidden_dim=128, output_dim=E), term_args),
        "steering_term": (SteeringTerm(D, P, rank=4, hidden_dim=32), term_args),
        "loss": (EquiModLoss(), [y_views, y_pred]),
        "loss_close": (EquiModLoss(), [y_views, y_views + 0.1 * y_pred]),
        "cosine": (EquiModCosineLoss(), [y_views, y_views + 0.1 * y_pred]),
        "steer_cos": (SteeringLoss(), [f + 0.1 * g, f]),
        "mse": (SteeringLoss("mse"), [f + 0.1 * g, f]),
    }
    fn, args = cases[name]
    compare(fn, args, bf16_inputs)


KINDS = ["low_rank", "full", "exponential"]


@pytest.mark.parametrize("bf16_inputs", [False, True], ids=["fp32-in", "bf16-in"])
@pytest.mark.parametrize("kind", KINDS)
def test_bf16_autocast_steering_operator(kind: str, bf16_inputs: bool) -> None:
    torch.manual_seed(0)
    op = SteeringOperator(D, P, kind=kind, rank=4, hidden_dim=32)
    f, a, k = tensors((B, D), (B, P), (5, P), seed=3)
    compare(op, [f, 0.5 * a], bf16_inputs)
    compare(op.steer_many, [f, 0.5 * k], bf16_inputs)


@pytest.mark.parametrize("bf16_inputs", [False, True], ids=["fp32-in", "bf16-in"])
@pytest.mark.parametrize(
    "make",
    [
        lambda: augment.simclr(16),
        lambda: augment.byol(16, 1),
        lambda: augment.byol(16, 2, "cifar", solarize_p=0.5),
    ],
    ids=["simclr", "byol-1", "byol-2"],
)
@pytest.mark.exactness
def test_bf16_augmentations_stay_close_to_float32(make: Callable, bf16_inputs: bool) -> None:
    aug = make()
    x = torch.rand(B, 3, 20, 20, generator=torch.Generator().manual_seed(4))
    params = aug.sample(x, generator=torch.Generator().manual_seed(5))
    expected, _ = aug(x, params=params)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        views, replayed = aug(x.bfloat16() if bf16_inputs else x, params=params)
    assert torch.equal(replayed, params) and replayed.dtype == torch.float32
    error = (views.float() - expected).abs()
    assert torch.isfinite(views).all()
    assert error.max() <= 0.1 and error.mean() <= 0.01, (error.max(), error.mean())
