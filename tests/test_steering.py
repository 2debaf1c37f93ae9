"""SteeringOperator, SteeringLoss, SteeringTerm, the steering wrap and embedding-space TTA."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from equimod_plugin import (
    EquiModTerm,
    SteeringLoss,
    SteeringOperator,
    SteeringTerm,
    augment,
    steering_branch,
)
from equimod_plugin.integrations.lightly import wrap
from equimod_plugin.tta import SteeredTTA, dispersion, tta_params

KINDS = ["low_rank", "exponential", "full"]
fast = settings(max_examples=15, deadline=None)


def operator(kind: str, dim: int = 6, param_dim: int = 5, **kwargs) -> SteeringOperator:
    torch.manual_seed(0)
    return SteeringOperator(dim, param_dim, kind=kind, rank=3, hidden_dim=16, **kwargs)


@pytest.mark.parametrize("kind", KINDS)
def test_identity_parameters_give_exactly_the_identity_map(kind):
    identity = torch.tensor([0.0, 0.0, 1.0, 1.0, -1.0])
    op = operator(kind, identity=identity)
    params = identity.expand(4, -1)
    assert torch.equal(op.maps(params), torch.eye(6).expand(4, 6, 6))
    f = torch.randn(4, 6)
    assert torch.equal(op(f, params), f)
    # and other parameters move the embedding
    assert not torch.allclose(op(f, params + 0.5), f)


def test_exponential_form_composes_when_generators_commute():
    op = operator("exponential", dim=5, param_dim=3)
    # commuting generators: polynomials in one matrix
    base = torch.randn(5, 5) * 0.3
    with torch.no_grad():
        op.generators.copy_(torch.stack([base, base @ base, torch.eye(5) * 0.1]))
    a, b = torch.randn(7, 3) * 0.5, torch.randn(7, 3) * 0.5
    product = op.maps(a) @ op.maps(b)
    torch.testing.assert_close(product, op.maps(a + b), atol=1e-5, rtol=1e-4)


def test_exponential_form_does_not_compose_for_generic_generators():
    op = operator("exponential", dim=5, param_dim=3)
    with torch.no_grad():
        op.generators.mul_(30)
    a, b = torch.randn(7, 3), torch.randn(7, 3)
    assert not torch.allclose(op.maps(a) @ op.maps(b), op.maps(a + b), atol=1e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_forward_equals_the_maps_applied(kind):
    op = operator(kind)
    f, a = torch.randn(4, 6), torch.randn(4, 5)
    expected = torch.einsum("bij,bj->bi", op.maps(a), f)
    torch.testing.assert_close(op(f, a), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_steer_many_equals_a_loop(kind):
    op = operator(kind)
    f, params = torch.randn(3, 6), torch.randn(4, 5)
    many = op.steer_many(f, params)
    for k in range(4):
        loop = op(f, params[k].expand(3, -1))
        torch.testing.assert_close(many[:, k], loop, atol=1e-5, rtol=1e-5)


@fast
@given(
    kind=st.sampled_from(KINDS),
    b=st.integers(1, 5),
    k=st.integers(1, 4),
    d=st.integers(1, 7),
    p=st.integers(1, 4),
)
def test_shapes_for_any_sizes(kind, b, k, d, p):
    op = SteeringOperator(d, p, kind=kind, rank=2, hidden_dim=8)
    f = torch.randn(b, d, dtype=torch.float64)
    assert op(f, torch.randn(b, p)).shape == (b, d)
    assert op(f, torch.randn(b, p)).dtype == torch.float64
    assert op.maps(torch.randn(b, p)).shape == (b, d, d)
    assert op.steer_many(f, torch.randn(k, p)).shape == (b, k, d)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_the_operator_and_the_encoder(kind):
    op = operator(kind)
    encoder = nn.Linear(4, 6)
    x, a = torch.randn(8, 4), torch.randn(8, 5)
    target = torch.randn(8, 6)
    SteeringLoss("mse")(op(encoder(x), a), target).backward()
    for name, param in [*op.named_parameters(), *encoder.named_parameters()]:
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_operator_learns_a_known_linear_action():
    # ground truth: a rotation in embedding space whose angle is the first parameter
    torch.manual_seed(1)
    op = SteeringOperator(2, 1, kind="exponential")
    optimizer = torch.optim.Adam(op.parameters(), lr=0.05)
    for _ in range(300):
        theta = torch.rand(64, 1) * 2 - 1
        f = torch.randn(64, 2)
        rot = torch.stack(
            [torch.cat([theta.cos(), -theta.sin()], 1), torch.cat([theta.sin(), theta.cos()], 1)],
            dim=1,
        )
        loss = SteeringLoss("mse")(op(f, theta), torch.einsum("bij,bj->bi", rot, f))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 1e-3


def test_steering_loss_values():
    t = torch.randn(5, 4)
    assert SteeringLoss("cosine")(2 * t, t).item() == pytest.approx(0.0, abs=1e-6)
    assert SteeringLoss("cosine")(-t, t).item() == pytest.approx(2.0, abs=1e-6)
    assert SteeringLoss("mse")(torch.zeros(5, 4), t).item() == pytest.approx(1.0)
    s = torch.randn(5, 4, requires_grad=True)
    target = torch.randn(5, 4, requires_grad=True)
    SteeringLoss(detach_target=True)(s, target).backward()
    assert target.grad is None and s.grad is not None


def test_steering_term_metrics():
    term = SteeringTerm(8, 5, rank=2, hidden_dim=8)
    f_o = torch.randn(4, 8)
    loss = term(f_o, torch.stack([f_o, f_o]), torch.zeros(2, 4, 5))  # identity views
    metrics = term.metrics()
    assert metrics["cos_steered"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["cos_original"] == pytest.approx(1.0, abs=1e-6)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def convnet() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1))


def test_steering_branch_reuses_the_shared_pass_and_identity_of_the_layout():
    backbone = convnet()
    aug = augment.byol(12, view=2, blur_kernel=3)
    branch = steering_branch(backbone, aug, rank=2, hidden_dim=8)
    assert torch.equal(branch.term.operator.identity, aug.identity_params(1)[0])
    sizes: list[int] = []
    backbone[0].register_forward_hook(lambda m, i, o: sizes.append(i[0].shape[0]))
    x0, x1 = branch.views(torch.rand(5, 3, 12, 12))
    assert backbone(x0) is branch.features[1]
    loss = branch.loss()
    loss.backward()
    assert sizes == [15]
    assert all(p.grad is not None for p in backbone.parameters())
    assert set(branch.metrics()) == {"loss", "cos_steered", "cos_original"}


def test_lightly_wrap_with_the_steering_term():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = convnet()

        def forward(self, x):
            return self.backbone(x).flatten(1)

    model, _ = wrap(Model(), augment.byol(12, blur_kernel=3), term="steering", rank=2)
    x0, x1 = model.views(torch.rand(4, 3, 12, 12))
    loss = (model(x0) - model(x1)).pow(2).mean() + model.equivariance_loss()
    loss.backward()
    assert model.equivariance.term.operator.kind == "low_rank"
    with pytest.raises(ValueError, match="term must be one of"):
        wrap(Model(), augment.byol(12), term="invariance")


def test_tta_steers_once_encoded_features():
    torch.manual_seed(2)
    encoder = nn.Sequential(convnet(), nn.Flatten())
    op = SteeringOperator(8, 18, rank=2, hidden_dim=8)
    aug = augment.byol(12, view=1, blur_kernel=3)
    params = tta_params(aug, 6, (12, 12))
    assert params.shape == (6, 18)
    tta = SteeredTTA(encoder, op, params).eval()
    images = torch.randn(3, 3, 12, 12)
    out = tta(images)
    with torch.no_grad():
        expected = op.steer_many(encoder(images), params)
    torch.testing.assert_close(out.steered, expected)
    torch.testing.assert_close(out.embedding, expected.mean(dim=1))
    # identity augmentations only: no spread
    still = SteeredTTA(encoder, op, aug.identity_params(4)).eval()
    assert still(images).score.abs().max() < 1e-6


def test_tta_from_term_steers_in_the_terms_standardised_space():
    torch.manual_seed(3)
    encoder = convnet()
    term = SteeringTerm(8, 18, rank=2, hidden_dim=8)
    term(torch.randn(16, 8) + 5, torch.randn(2, 16, 8) + 5, torch.randn(2, 16, 18))
    params = tta_params(augment.byol(12, view=1, blur_kernel=3), 5, (12, 12))
    tta = SteeredTTA.from_term(encoder, term, params).eval()
    images = torch.randn(3, 3, 12, 12)
    with torch.no_grad():
        embedded = term.standardize.eval()(encoder(images).flatten(1))
        expected = term.operator.steer_many(embedded, params)
        out = tta(images)
    torch.testing.assert_close(out.steered, expected)
    assert tta.encoder[-1] is term.standardize  # running statistics, not a copy
    with pytest.raises(TypeError, match="term must be a SteeringTerm"):
        SteeredTTA.from_term(encoder, EquiModTerm(8, 18, hidden_dim=8), params)


def test_steering_term_loss_has_no_shared_component_shortcut():
    """A component shared by all images makes raw cosines ~1; standardised, it changes nothing."""
    torch.manual_seed(4)
    f_o, f_v, params = torch.randn(32, 8), torch.randn(2, 32, 8), torch.randn(2, 32, 18)
    shared = 100 * torch.rand(8)
    for kind in ("low_rank", "exponential"):
        torch.manual_seed(5)
        term = SteeringTerm(8, 18, kind=kind, rank=2, hidden_dim=8)
        plain = term(f_o, f_v, params)
        close = dict(rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(term(f_o + shared, f_v + shared, params), plain, **close)
        torch.testing.assert_close(term(3 * f_o, 3 * f_v, params), plain, **close)
        torch.manual_seed(5)
        raw = SteeringTerm(8, 18, kind=kind, rank=2, hidden_dim=8, standardize=False)
        assert raw(f_o, f_v, params).item() > 0.5
        assert raw(f_o + shared, f_v + shared, params).item() < 0.01  # the shortcut


def test_steering_term_rejects_mismatched_features():
    term = SteeringTerm(8, 18, rank=2, hidden_dim=8)
    with pytest.raises(ValueError, match=r"features_views\[0\] must have shape \(4, 8\)"):
        term(torch.randn(4, 8), torch.randn(2, 4, 7), torch.randn(2, 4, 18))
    with pytest.raises(ValueError, match=r"params must have shape \(2, 4, P\)"):
        term(torch.randn(4, 8), torch.randn(2, 4, 8), torch.randn(1, 4, 18))
    with pytest.raises(ValueError, match="features_o must have shape"):
        term(torch.randn(4, 9), torch.randn(2, 4, 8), torch.randn(2, 4, 18))


def test_dispersion_orders_spread():
    tight = torch.randn(2, 1, 5).expand(2, 8, 5) + 0.01 * torch.randn(2, 8, 5)
    loose = torch.randn(2, 8, 5)
    assert (dispersion(tight) < dispersion(loose)).all()
    with pytest.raises(ValueError, match=r"\(B, K, D\)"):
        dispersion(torch.randn(3, 5))


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda op: op(torch.randn(3, 7), torch.randn(3, 5)), r"features must have shape \(B, 6\)"),
        (lambda op: op(torch.randn(3, 6), torch.randn(3, 4)), r"params must have shape \(3, 5\)"),
        (lambda op: op(torch.randn(3, 6), torch.randn(2, 5)), r"params must have shape \(3, 5\)"),
        (lambda op: op(torch.randn(6), torch.randn(1, 5)), "features must have shape"),
        (lambda op: op.steer_many(torch.randn(3, 6), torch.randn(4, 6)), "params must have"),
        (lambda op: op.maps(torch.full((2, 5), float("nan"))), "finite"),
        (lambda op: op(torch.randn(3, 6).long(), torch.randn(3, 5)), "floating point"),
    ],
)
def test_bad_input_is_rejected(call, match):
    with pytest.raises(ValueError, match=match):
        call(operator("low_rank"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(dim=0, param_dim=3), "dim must be a positive int"),
        (dict(dim=4, param_dim=3, kind="affine"), "kind must be one of"),
        (dict(dim=4, param_dim=3, identity=torch.zeros(4)), r"identity must have shape \(3,\)"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SteeringOperator(**kwargs)


def test_tta_rejects_bad_params_and_images():
    op = SteeringOperator(8, 18, rank=2)
    encoder = nn.Sequential(convnet(), nn.Flatten())
    with pytest.raises(ValueError, match=r"params must have shape \(K, 18\)"):
        SteeredTTA(encoder, op, torch.zeros(4, 17))
    tta = SteeredTTA(encoder, op, torch.zeros(4, 18))
    with pytest.raises(ValueError, match="float tensor"):
        tta(torch.zeros(2, 3, 12, 12, dtype=torch.uint8))
    with pytest.raises(ValueError, match="k must be"):
        tta_params(augment.byol(12), 0, (12, 12))
    with pytest.raises(ValueError, match="distance must be"):
        SteeringLoss("l1")
