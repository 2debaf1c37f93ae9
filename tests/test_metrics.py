import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from equimod_plugin.metrics import equivariance_metrics

FAST = settings(max_examples=25, deadline=None)
KEYS = {"absolute", "relative", "cos_pred", "cos_original"}


def unit(angle: float) -> list[float]:
    return [math.cos(angle), math.sin(angle)]


@FAST
@given(
    view_angles=st.lists(st.floats(0.2, 3.0), min_size=2, max_size=2),
    pred_offsets=st.lists(st.floats(0.05, 0.3), min_size=2, max_size=2),
    scale=st.floats(0.1, 10.0),
)
def test_metrics_on_known_angles(
    view_angles: list[float], pred_offsets: list[float], scale: float
) -> None:
    # Two views of one image whose original embedding lies at angle 0 in the plane.
    y_o = torch.tensor([unit(0.0)]) * scale
    y_views = torch.tensor([[unit(a)] for a in view_angles])
    y_pred = torch.tensor([[unit(a + d)] for a, d in zip(view_angles, pred_offsets, strict=True)])
    metrics = equivariance_metrics(y_o, y_views, 2 * y_pred)

    cos_original = sum(math.cos(a) for a in view_angles) / 2
    cos_pred = sum(math.cos(d) for d in pred_offsets) / 2
    assert metrics["cos_original"] == pytest.approx(cos_original, abs=1e-5)
    assert metrics["cos_pred"] == pytest.approx(cos_pred, abs=1e-5)
    assert metrics["absolute"] == pytest.approx(cos_pred - cos_original, abs=1e-5)
    assert metrics["relative"] == pytest.approx((1 - cos_original) / (1 - cos_pred), rel=1e-3)


def test_perfect_predictions_and_orthogonal_original() -> None:
    y_o = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    y_views = torch.tensor([[[0.0, 1.0, 0.0], [0.0, 3.0, 0.0]], [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]])
    metrics = equivariance_metrics(y_o, y_views, y_views.clone())
    assert set(metrics) == KEYS
    # detached 0-dim float32 tensors: logging them needs no host sync
    assert all(
        isinstance(v, torch.Tensor)
        and v.ndim == 0
        and v.dtype == torch.float32
        and not v.requires_grad
        for v in metrics.values()
    )
    assert metrics["cos_pred"] == pytest.approx(1.0)
    assert metrics["cos_original"] == pytest.approx(0.0, abs=1e-7)
    assert metrics["absolute"] == pytest.approx(1.0)
    # 1 - cos_pred is (about) 0: the denominator is clamped to eps, giving a large finite value.
    assert math.isfinite(metrics["relative"]) and metrics["relative"] > 1e6


def test_invariant_embeddings_with_identity_predictor() -> None:
    y_o = torch.randn(5, 8)
    y_views = y_o.expand(3, 5, 8).clone()
    metrics = equivariance_metrics(y_o, y_views, y_views + 0.1 * torch.randn(3, 5, 8))
    assert metrics["cos_original"] == pytest.approx(1.0)
    assert metrics["relative"] == pytest.approx(0.0, abs=1e-4)
    assert metrics["absolute"] < 0


def test_relative_is_a_ratio_of_means() -> None:
    # Per image: 1 - cos_original is 1 and 1; 1 - cos_pred is 1 - cos(0.1) and 1 - cos(1.0).
    y_o = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    y_views = torch.tensor([[unit(math.pi / 2), unit(math.pi / 2)]])
    y_pred = torch.tensor([[unit(math.pi / 2 - 0.1), unit(math.pi / 2 - 1.0)]])
    distances = [1 - math.cos(0.1), 1 - math.cos(1.0)]
    metrics = equivariance_metrics(y_o, y_views, y_pred)
    assert metrics["relative"] == pytest.approx(1.0 / (sum(distances) / 2), rel=1e-4)
    assert metrics["relative"] != pytest.approx(sum(1.0 / d for d in distances) / 2, rel=0.1)


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((torch.randn(2, 4, 8), torch.randn(2, 4, 8), torch.randn(2, 4, 8)), ValueError, "y_o"),
        ((torch.randn(4, 8), torch.randn(2, 3, 8), torch.randn(2, 3, 8)), ValueError, "y_views"),
        ((torch.randn(4, 8), torch.randn(2, 4, 7), torch.randn(2, 4, 7)), ValueError, "y_views"),
        ((torch.randn(4, 8), torch.randn(2, 4, 8), torch.randn(1, 4, 8)), ValueError, "y_pred"),
        ((torch.randn(4, 8), torch.randn(2, 4, 8), torch.randn(2, 4, 9)), ValueError, "y_pred"),
        (
            (torch.full((4, 8), math.inf), torch.randn(2, 4, 8), torch.randn(2, 4, 8)),
            ValueError,
            "y_o must be finite",
        ),
        ((torch.randn(4, 8), torch.randn(2, 4, 8), "y"), TypeError, "y_pred must be a torch"),
    ],
)
def test_metrics_reject_bad_inputs(args: tuple, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        equivariance_metrics(*args)


def test_metrics_reject_non_positive_eps() -> None:
    y_views = torch.randn(1, 2, 3)
    with pytest.raises(ValueError, match="eps must be positive"):
        equivariance_metrics(torch.randn(2, 3), y_views, y_views, eps=0.0)
