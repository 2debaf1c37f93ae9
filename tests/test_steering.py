"""SteeringOperator, SteeringLoss, SteeringTerm, the steering wrap and embedding-space TTA."""

from __future__ import annotations

import copy
import pickle

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
from equimod_plugin.integrations.lightly import attach
from equimod_plugin.steering import ExponentialSteering, FullSteering, LowRankSteering
from equimod_plugin.tta import SteeredTTA, dispersion, tta_params

KINDS = ["low_rank", "exponential", "full"]
CLASSES = {"low_rank": LowRankSteering, "exponential": ExponentialSteering, "full": FullSteering}
fast = settings(max_examples=15, deadline=None)


def operator(kind: str, dim: int = 6, param_dim: int = 5, **kwargs) -> SteeringOperator:
    torch.manual_seed(0)
    return SteeringOperator(dim, param_dim, kind=kind, rank=3, hidden_dim=16, **kwargs)


@pytest.mark.exactness
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


# --- one class per parameterisation ---------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_kind_builds_the_class_of_that_kind(kind):
    op = operator(kind)
    assert type(op) is CLASSES[kind]
    assert isinstance(op, SteeringOperator) and op.kind == kind
    torch.manual_seed(0)
    assert type(SteeringOperator(6, 5, kind, None, 3)) is CLASSES[kind]  # positional, as before
    assert type(SteeringOperator(6, 5)) is LowRankSteering  # the default kind


@pytest.mark.exactness
@pytest.mark.parametrize(
    "kind, options",
    [
        ("low_rank", {"rank": 3, "hidden_dim": 16}),
        ("exponential", {"num_generators": 4}),
        ("full", {"hidden_dim": 16}),
    ],
)
def test_a_class_built_directly_equals_the_kind_call(kind, options):
    """Same seed, same parameters (values and state-dict keys) and same outputs: a replay."""
    identity = torch.tensor([0.0, 0.5, 1.0, 1.0, -1.0])
    torch.manual_seed(0)
    by_kind = SteeringOperator(6, 5, kind=kind, identity=identity, **options)
    torch.manual_seed(0)
    direct = CLASSES[kind](6, 5, identity, **options)
    assert by_kind.state_dict().keys() == direct.state_dict().keys()
    for name, value in by_kind.state_dict().items():
        assert torch.equal(value, direct.state_dict()[name]), name
    f, a = torch.randn(4, 6), torch.randn(4, 5)
    assert torch.equal(by_kind(f, a), direct(f, a))
    assert torch.equal(by_kind.steer_many(f, a[:3]), direct.steer_many(f, a[:3]))
    assert torch.equal(by_kind.maps(a), direct.maps(a))


@pytest.mark.parametrize(
    "kind, keys",
    [
        ("low_rank", ["identity", "hyper.0.weight", "hyper.0.bias", "hyper.2.weight"]),
        ("exponential", ["generators", "identity", "coefficients.weight"]),
        ("full", ["identity", "hyper.0.weight", "hyper.0.bias", "hyper.2.weight"]),
    ],
)
def test_state_dict_keys_are_those_of_existing_checkpoints(kind, keys):
    assert list(operator(kind).state_dict()) == keys


def test_unknown_kind_is_named_with_the_classes_to_use():
    with pytest.raises(
        ValueError,
        match=r"kind must be one of \('low_rank', 'exponential', "
        r"'full'\) \(or build LowRankSteering.*got 'affine'",
    ):
        SteeringOperator(4, 3, kind="affine")


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: LowRankSteering(4, 3, rank=0), "rank must be a positive int"),
        (lambda: LowRankSteering(4, 3, hidden_dim=2.0), "hidden_dim must be a positive int"),
        (lambda: ExponentialSteering(4, 3, num_generators=0), "num_generators must be a positive"),
        (lambda: FullSteering(0, 3), "dim must be a positive int"),
        (lambda: FullSteering(4, 3, identity=torch.zeros(2)), r"identity must have shape \(3,\)"),
    ],
)
def test_each_class_checks_its_own_arguments(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_each_class_takes_only_its_own_arguments():
    with pytest.raises(TypeError, match="num_generators"):
        LowRankSteering(4, 3, num_generators=2)
    with pytest.raises(TypeError, match="kind"):
        FullSteering(4, 3, kind="full")


@pytest.mark.parametrize("kind", KINDS)
def test_copies_and_pickles_keep_the_class(kind):
    op = operator(kind)
    f, a = torch.randn(4, 6), torch.randn(4, 5)
    for clone in (copy.deepcopy(op), pickle.loads(pickle.dumps(op))):
        assert type(clone) is CLASSES[kind]
        torch.testing.assert_close(clone(f, a), op(f, a), rtol=0, atol=0)


class _Scaling(SteeringOperator):
    """A new parameterisation: only ``_maps``; M(a) = (1 + sum d) I."""

    kind = "scaling"

    def _maps(self, params: torch.Tensor) -> torch.Tensor:
        scale = 1 + self._displacement(params).sum(dim=1)
        return scale[:, None, None] * torch.eye(self.dim)


def test_a_subclass_defining_only_maps_gets_checks_forward_and_steer_many():
    op = _Scaling(3, 2, identity=torch.ones(2))
    f, a = torch.randn(4, 3), torch.tensor([[1.0, 1.0], [2.0, 1.0], [1.0, 3.0], [0.0, 1.0]])
    scale = torch.tensor([1.0, 2.0, 3.0, 0.0])
    torch.testing.assert_close(op(f, a), scale[:, None] * f)
    torch.testing.assert_close(op.steer_many(f, a), scale[None, :, None] * f[:, None])
    with pytest.raises(ValueError, match=r"params must have shape \(4, 2\)"):
        op(f, a[:, :1])


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
    term = SteeringTerm(8, 5, rank=2, hidden_dim=8, objective="regression")
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
    assert backbone(x0) is branch.step.features[1]
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

    model = Model()
    attach(model, augment.byol(12, blur_kernel=3), term="steering", rank=2)
    x0, x1 = model.equivariance.views(torch.rand(4, 3, 12, 12))
    loss = (model(x0) - model(x1)).pow(2).mean() + model.equivariance.loss()
    loss.backward()
    assert model.equivariance.term.operator.kind == "low_rank"
    with pytest.raises(ValueError, match="term must be one of"):
        attach(Model(), augment.byol(12), term="invariance")


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
        embedded = term.embed.eval()(encoder(images).flatten(1))
        expected = term.operator.steer_many(embedded, params)
        out = tta(images)
    torch.testing.assert_close(out.steered, expected)
    assert tta.encoder[-1] is term.embed  # running statistics, not a copy
    with pytest.raises(TypeError, match="term must be a SteeringTerm"):
        SteeredTTA.from_term(encoder, EquiModTerm(8, 18, hidden_dim=8), params)


def test_steering_term_loss_has_no_shared_component_shortcut():
    """A component shared by all images makes raw cosines ~1; standardised, it changes nothing."""
    torch.manual_seed(4)
    f_o, f_v, params = torch.randn(32, 8), torch.randn(2, 32, 8), torch.randn(2, 32, 18)
    shared = 100 * torch.rand(8)
    for kind in ("low_rank", "exponential"):
        torch.manual_seed(5)
        term = SteeringTerm(8, 18, kind=kind, rank=2, hidden_dim=8, objective="regression")
        plain = term(f_o, f_v, params)
        close = dict(rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(term(f_o + shared, f_v + shared, params), plain, **close)
        torch.testing.assert_close(term(3 * f_o, 3 * f_v, params), plain, **close)
        torch.manual_seed(5)
        raw = SteeringTerm(
            8, 18, kind=kind, rank=2, hidden_dim=8, standardize=False, objective="regression"
        )
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


# SteeringTerm objectives and spaces (issue 15)


def invariant_inputs(views: int = 2, batch: int = 6, dim: int = 8, param_dim: int = 5):
    """Features of an encoder that ignores the augmentation: every view equals its original."""
    g = torch.Generator().manual_seed(0)
    features_o = torch.randn(batch, dim, generator=g)
    return (
        features_o,
        features_o.expand(views, -1, -1).clone(),
        torch.zeros(views, batch, param_dim),
    )


def test_the_contrastive_objective_rules_out_the_invariant_solution():
    """M = I on an encoder that ignores ``a`` is a minimum of the regression loss (0), but the
    contrastive loss cannot go below log 2: the sibling view is as close as the positive."""
    features = invariant_inputs()
    identity = torch.zeros(5)  # the params are the identity: M(a) = I exactly
    regression = SteeringTerm(
        8, 5, identity=identity, rank=2, standardize=False, objective="regression"
    )
    contrastive = SteeringTerm(
        8, 5, identity=identity, rank=2, standardize=False, objective="contrastive"
    )
    assert regression(*features).item() == pytest.approx(0.0, abs=1e-6)
    assert contrastive(*features).item() >= torch.log(torch.tensor(2.0)).item() - 1e-5


def test_the_contrastive_objective_is_equimods_nt_xent_on_steered_and_true_views():
    from equimod_plugin import EquiModLoss

    torch.manual_seed(0)
    term = SteeringTerm(8, 5, rank=2, objective="contrastive")
    f_o, f_views, params = torch.randn(6, 8), torch.randn(2, 6, 8), torch.randn(2, 6, 5)
    loss = term(f_o, f_views, params)
    embedded = term.embed(torch.cat([f_o, f_views.flatten(0, 1)]))
    steered = term.operator(embedded[:6].repeat(2, 1), params.flatten(0, 1))
    expected = EquiModLoss(temperature=0.2)(
        embedded[6:].unflatten(0, (2, 6)), steered.unflatten(0, (2, 6))
    )
    torch.testing.assert_close(loss, expected)


def test_a_steering_projector_is_a_space_of_its_own():
    torch.manual_seed(0)
    term = SteeringTerm(8, 5, rank=2, projector=(16, 4), objective="contrastive")
    assert term.operator.dim == 4 and isinstance(term.embed, nn.Sequential)
    assert not term.embed[-1].affine  # the last BatchNorm is not affine, as EquiMod's g'
    f_o = torch.randn(6, 8, requires_grad=True)
    term(f_o, torch.randn(2, 6, 8), torch.randn(2, 6, 5)).backward()
    assert f_o.grad is not None and all(p.grad is not None for p in term.embed.parameters())
    aug = augment.byol(16, view=1)
    encoder = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1))
    term = SteeringTerm.build(8, aug, rank=2, projector=(16, 4))
    tta = SteeredTTA.from_term(encoder, term, tta_params(aug, 3, (16, 16))).eval()
    assert tta.encoder[-1] is term.embed
    assert tta(torch.rand(2, 3, 16, 16)).steered.shape == (2, 3, 4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"objective": "infonce"}, "objective must be 'regression' or 'contrastive'"),
        ({"projector": ()}, "projector must be a non-empty sequence of positive ints"),
        ({"projector": (16, 0)}, "projector must be a non-empty sequence of positive ints"),
        ({"projector": 16}, "projector must be a non-empty sequence of positive ints"),
        ({"projector": (16, 4), "standardize": False}, "drop one of the two arguments"),
    ],
)
def test_steering_term_options_are_checked_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SteeringTerm(8, 5, rank=2, **kwargs)


class TestSteerManyReuse:
    """steer_many reuses what it built from the same K parameter sets (test-time augmentation)
    while no graph is recorded and neither the values nor the operator's weights changed."""

    @staticmethod
    def counted(op: SteeringOperator) -> list[int]:
        name = "_low_rank" if op.kind == "low_rank" else "_maps"
        calls = [0]
        build = getattr(op, name)

        def counting(params):
            calls[0] += 1
            return build(params)

        setattr(op, name, counting)
        return calls

    @pytest.mark.parametrize("kind", ["low_rank", "exponential", "full"])
    def test_reused_across_batches_and_equal_to_a_fresh_build(self, kind: str) -> None:
        torch.manual_seed(0)
        op = SteeringOperator(8, 5, kind=kind, rank=2, hidden_dim=4, num_generators=2)
        params, calls = torch.randn(6, 5), self.counted(op)
        with torch.no_grad():
            first = op.steer_many(torch.randn(3, 8), params)
            f = torch.randn(4, 8)
            second = op.steer_many(f, params.clone())  # same values, another tensor
            assert calls[0] == 1
            op._built = None
            torch.testing.assert_close(op.steer_many(f, params), second, rtol=0, atol=0)
        assert first.shape == (3, 6, 8)

    def test_rebuilt_when_the_values_or_the_weights_change(self) -> None:
        torch.manual_seed(1)
        op = SteeringOperator(8, 5, rank=2, hidden_dim=4)
        params, f = torch.randn(6, 5), torch.randn(3, 8)
        calls = self.counted(op)
        with torch.no_grad():
            op.steer_many(f, params)
            params[0, 0] += 1.0  # in place: same tensor, new values
            op.steer_many(f, params)
            assert calls[0] == 2
        optimizer = torch.optim.SGD(op.parameters(), lr=0.1)
        op.steer_many(f, params).sum().backward()  # records a graph: built afresh
        assert calls[0] == 3
        optimizer.step()
        with torch.no_grad():
            after_step = op.steer_many(f, params)
            assert calls[0] == 4
            op.load_state_dict(SteeringOperator(8, 5, rank=2, hidden_dim=4).state_dict())
            reloaded = op.steer_many(f, params)
            assert calls[0] == 5
        assert not torch.equal(after_step, reloaded)

    def test_never_kept_while_a_graph_is_recorded(self) -> None:
        op = SteeringOperator(8, 5, rank=2, hidden_dim=4)
        params, f = torch.randn(6, 5), torch.randn(3, 8)
        calls = self.counted(op)
        for _ in range(2):
            out = op.steer_many(f, params)
        assert calls[0] == 2 and out.requires_grad and op._built is None
