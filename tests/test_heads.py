import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from equimod_plugin.heads import EquivarianceHead, EquivarianceOutput

FAST = settings(max_examples=25, deadline=None)
DIMS = {"input_dim": 12, "param_dim": 5, "hidden_dim": 16, "output_dim": 8, "param_embed_dim": 6}


def make_head(**overrides: object) -> EquivarianceHead:
    torch.manual_seed(0)
    return EquivarianceHead(**{**DIMS, **overrides})


def make_inputs(
    batch_size: int = 4, num_views: int = 2, input_dim: int = 12, param_dim: int = 5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return (
        torch.randn(batch_size, input_dim, generator=generator),
        torch.randn(num_views, batch_size, input_dim, generator=generator),
        torch.randn(num_views, batch_size, param_dim, generator=generator),
    )


def linear_shapes(module: nn.Module) -> list[tuple[int, int, bool]]:
    return [
        (m.in_features, m.out_features, m.bias is not None)
        for m in module.modules()
        if isinstance(m, nn.Linear)
    ]


def test_defaults_follow_the_official_code() -> None:
    head = EquivarianceHead(input_dim=512, param_dim=17)
    assert linear_shapes(head.projector) == [
        (512, 2048, False),
        (2048, 2048, False),
        (2048, 128, False),
    ]
    assert linear_shapes(head.param_projector) == [(17, 128, False)]
    assert linear_shapes(head.predictor) == [(256, 128, False)]
    assert isinstance(head.projector[-1], nn.BatchNorm1d) and not head.projector[-1].affine
    assert isinstance(head.param_projector[-1], nn.BatchNorm1d) and head.param_projector[-1].affine
    assert isinstance(head.predictor[-1], nn.BatchNorm1d) and not head.predictor[-1].affine


def test_hidden_layers_are_configurable() -> None:
    head = make_head(predictor_hidden_dims=(10, 9), num_projector_layers=1)
    assert linear_shapes(head.projector) == [(12, 8, False)]
    assert linear_shapes(head.predictor) == [(14, 10, False), (10, 9, False), (9, 8, False)]
    assert sum(isinstance(m, nn.ReLU) for m in head.predictor) == 2


@FAST
@given(
    batch_size=st.integers(2, 16),
    num_views=st.integers(1, 3),
    input_dim=st.integers(1, 20),
    param_dim=st.integers(1, 20),
    output_dim=st.integers(1, 20),
    predictor_hidden_dims=st.lists(st.integers(1, 12), max_size=2),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_forward_shapes_and_dtypes(
    batch_size: int,
    num_views: int,
    input_dim: int,
    param_dim: int,
    output_dim: int,
    predictor_hidden_dims: list[int],
    dtype: torch.dtype,
) -> None:
    head = EquivarianceHead(
        input_dim,
        param_dim,
        hidden_dim=8,
        output_dim=output_dim,
        param_embed_dim=4,
        predictor_hidden_dims=predictor_hidden_dims,
    ).to(dtype)
    inputs = [t.to(dtype) for t in make_inputs(batch_size, num_views, input_dim, param_dim)]
    out = head(*inputs)
    assert isinstance(out, EquivarianceOutput)
    assert out.y_o.shape == (batch_size, output_dim)
    assert out.y_views.shape == (num_views, batch_size, output_dim)
    assert out.y_pred.shape == (num_views, batch_size, output_dim)
    for t in out:
        assert t.dtype == dtype
        assert torch.isfinite(t).all()


def test_projector_runs_once_on_the_concatenated_batch() -> None:
    head = make_head()
    reference = copy.deepcopy(head)
    calls = {"projector": 0, "param_projector": 0, "predictor": 0}
    for name in calls:

        def count(*_: object, name: str = name) -> None:
            calls[name] += 1

        getattr(head, name).register_forward_hook(count)

    features_o, features_views, params = make_inputs(batch_size=4, num_views=3)
    out = head(features_o, features_views, params)
    assert calls == {"projector": 1, "param_projector": 1, "predictor": 1}

    y = reference.projector(torch.cat([features_o, *features_views]))
    torch.testing.assert_close(out.y_o, y[:4])
    torch.testing.assert_close(out.y_views.flatten(0, 1), y[4:])
    head_bns = [m for m in head.projector if isinstance(m, nn.BatchNorm1d)]
    reference_bns = [m for m in reference.projector if isinstance(m, nn.BatchNorm1d)]
    for bn, reference_bn in zip(head_bns, reference_bns, strict=True):
        torch.testing.assert_close(bn.running_mean, reference_bn.running_mean)
        torch.testing.assert_close(bn.running_var, reference_bn.running_var)


def test_forward_prediction_matches_predict_in_eval_mode() -> None:
    head = make_head().eval()
    features_o, features_views, params = make_inputs(num_views=2)
    out = head(features_o, features_views, params)
    torch.testing.assert_close(out.y_o, head.project(features_o))
    for k in range(2):
        torch.testing.assert_close(out.y_views[k], head.project(features_views[k]))
        torch.testing.assert_close(out.y_pred[k], head.predict(out.y_o, params[k]))


@pytest.mark.parametrize("train", [True, False])
def test_predict_depends_on_params(train: bool) -> None:
    head = make_head().train(train)
    y_o = torch.randn(6, 8)
    params = torch.randn(6, 5)
    first = head.predict(y_o, params)
    assert not torch.allclose(first, head.predict(y_o, params + torch.randn(6, 5)), atol=1e-3)
    torch.testing.assert_close(first, head.predict(y_o, params.clone()))


def test_gradients_reach_every_parameter_and_the_features() -> None:
    head = make_head(predictor_hidden_dims=(7,))
    features_o, features_views, params = (t.requires_grad_() for t in make_inputs())
    out = head(features_o, features_views, params)
    weights = torch.Generator().manual_seed(2)
    loss = sum((t * torch.randn(t.shape, generator=weights)).sum() for t in out)
    loss.backward()
    for name, parameter in head.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    for t in (features_o, features_views, params):
        assert t.grad is not None and t.grad.abs().sum() > 0


def test_eval_mode_accepts_a_single_sample() -> None:
    head = make_head().eval()
    out = head(*make_inputs(batch_size=1, num_views=1))
    assert out.y_o.shape == (1, 8) and out.y_pred.shape == (1, 1, 8)
    assert head.project(torch.randn(1, 12)).shape == (1, 8)
    assert head.predict(torch.randn(1, 8), torch.randn(1, 5)).shape == (1, 8)


def test_training_mode_rejects_a_single_sample() -> None:
    head = make_head()
    with pytest.raises(ValueError, match=r"features_o must hold at least 2 samples.*\.eval\(\)"):
        head(*make_inputs(batch_size=1, num_views=2))
    with pytest.raises(ValueError, match="features must hold at least 2 samples"):
        head.project(torch.randn(1, 12))
    with pytest.raises(ValueError, match="y_o must hold at least 2 samples"):
        head.predict(torch.randn(1, 8), torch.randn(1, 5))


def _replace(index: int, value: torch.Tensor) -> tuple[torch.Tensor, ...]:
    inputs = list(make_inputs(batch_size=4, num_views=2))
    inputs[index] = value
    return tuple(inputs)


def _with_value(index: int, value: float) -> tuple[torch.Tensor, ...]:
    inputs = list(make_inputs(batch_size=4, num_views=2))
    inputs[index] = inputs[index].clone()
    inputs[index].view(-1)[3] = value
    return tuple(inputs)


@pytest.mark.parametrize(
    ("inputs", "error", "match"),
    [
        (_replace(0, torch.randn(1, 4, 12)), ValueError, r"features_o must have shape \(B, 12\)"),
        (_replace(0, torch.randn(4, 11)), ValueError, r"features_o must have shape \(B, 12\)"),
        (_replace(0, torch.ones(4, 12, dtype=torch.long)), ValueError, "features_o .*floating"),
        (_replace(0, [[0.0] * 12] * 4), TypeError, "features_o must be a torch.Tensor"),
        (_replace(1, torch.randn(4, 12)), ValueError, r"features_views must have shape \(V, 4"),
        (_replace(1, torch.randn(0, 4, 12)), ValueError, "features_views must have at least one"),
        (_replace(1, torch.randn(2, 3, 12)), ValueError, r"features_views\[0\] must have shape"),
        (_replace(1, torch.randn(2, 4, 13)), ValueError, r"features_views\[0\] must have shape"),
        (_replace(2, torch.randn(3, 4, 5)), ValueError, r"params must have shape \(2, 4, param"),
        (_replace(2, torch.randn(2, 5, 5)), ValueError, r"params\[0\] must have shape \(4, 5\)"),
        (_replace(2, torch.randn(2, 4, 6)), ValueError, r"params\[0\] must have shape \(4, 5\)"),
        (_with_value(1, float("nan")), ValueError, r"features_views\[0\] must be finite"),
        (_with_value(2, float("inf")), ValueError, r"params\[0\] must be finite"),
        (_with_value(0, float("-inf")), ValueError, "features_o must be finite"),
    ],
)
def test_forward_rejects_bad_inputs(
    inputs: tuple[torch.Tensor, ...], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        make_head()(*inputs)


def test_predict_and_project_reject_bad_inputs() -> None:
    head = make_head()
    with pytest.raises(ValueError, match=r"y_o must have shape \(B, 8\)"):
        head.predict(torch.randn(4, 9), torch.randn(4, 5))
    with pytest.raises(ValueError, match=r"params must have shape \(4, 5\)"):
        head.predict(torch.randn(4, 8), torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"features must have shape \(B, 12\)"):
        head.project(torch.randn(4, 8))


def test_constructor_rejects_a_bare_int_for_predictor_hidden_dims() -> None:
    with pytest.raises(TypeError, match=r"predictor_hidden_dims must be a sequence .* got 64"):
        make_head(predictor_hidden_dims=64)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"input_dim": 0}, "input_dim must be a positive int, got 0"),
        ({"param_dim": 2.5}, "param_dim must be a positive int"),
        ({"hidden_dim": -1}, "hidden_dim must be a positive int"),
        ({"output_dim": True}, "output_dim must be a positive int"),
        ({"param_embed_dim": 0}, "param_embed_dim must be a positive int"),
        ({"predictor_hidden_dims": (4, 0)}, r"predictor_hidden_dims\[1\] must be a positive int"),
        ({"num_projector_layers": 0}, "num_projector_layers must be a positive int"),
    ],
)
def test_constructor_rejects_bad_sizes(overrides: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_head(**overrides)


def test_standardize_params_is_off_by_default_and_a_non_affine_batchnorm_first() -> None:
    assert len(make_head().param_projector) == 2  # the official Linear -> BatchNorm
    first = make_head(standardize_params=True).param_projector[0]
    assert isinstance(first, nn.BatchNorm1d) and not first.affine and first.num_features == 5
    with pytest.raises(TypeError, match="standardize_params must be a bool"):
        make_head(standardize_params=1)


@FAST
@given(
    scale=st.lists(st.floats(0.1, 100.0), min_size=5, max_size=5),
    shift=st.lists(st.floats(-100.0, 100.0), min_size=5, max_size=5),
)
def test_standardized_params_make_the_head_blind_to_column_scales(
    scale: list[float], shift: list[float]
) -> None:
    # In training mode a per-column affine change of the parameters leaves the predictions
    # unchanged up to BatchNorm's eps: each column's learning rate no longer depends on its units.
    head = make_head(standardize_params=True).double()
    features_o, features_views, params = (t.double() for t in make_inputs(batch_size=16))
    params = params * 3.0
    moved = params * torch.tensor(scale, dtype=torch.float64) + torch.tensor(
        shift, dtype=torch.float64
    )
    expected = head(features_o, features_views, params).y_pred
    actual = head(features_o, features_views, moved).y_pred
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-3)


def test_equimod_term_standardizes_params_unless_the_encoding_is_officially_standardized() -> None:
    from equimod_plugin import augment
    from equimod_plugin.terms import EquiModTerm

    def standardizes(aug: augment.ParamAugment, **kwargs: object) -> bool:
        term = EquiModTerm.build(8, aug, hidden_dim=16, **kwargs)
        return isinstance(term.head.param_projector[0], nn.BatchNorm1d)

    assert standardizes(augment.byol(32, variant="cifar"))
    assert standardizes(augment.byol(32, variant="cifar", encoding="official"))
    assert not standardizes(augment.byol(32, variant="cifar", encoding="official_standardized"))
    assert not standardizes(augment.byol(32, variant="cifar"), standardize_params=False)
