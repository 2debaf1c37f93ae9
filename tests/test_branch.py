"""The branch: attached to the user's model, one batched backbone pass, the equivariance term.

Tested against lightly's real modules (BYOL heads, NegativeCosineSimilarity, NTXentLoss,
update_momentum) in the layout of lightly's own examples.
"""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from lightly.loss import NegativeCosineSimilarity, NTXentLoss
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead, SimCLRProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from torch import nn

from equimod_plugin import (
    EquiModLoss,
    EquiModTerm,
    EquivarianceBranch,
    augment,
    equimod_branch,
    steering_branch,
)
from equimod_plugin.augment.normalize import IMAGENET_NORMALIZE
from equimod_plugin.branch import infer_feature_dim, make_branch
from equimod_plugin.integrations.lightly import EquivariantModel, OriginalTransform, attach, wrap

SIZE = 16
WIDTHS = dict(hidden_dim=32, output_dim=16, param_embed_dim=8)


def convnet(width: int = 8) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
    )


class BYOL(nn.Module):
    """lightly's examples/pytorch/byol.py model, with a small backbone."""

    def __init__(self, backbone: nn.Module, dim: int = 8) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = BYOLProjectionHead(dim, 32, 16)
        self.prediction_head = BYOLPredictionHead(16, 32, 16)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)

    def forward(self, x):
        y = self.backbone(x).flatten(start_dim=1)
        return self.prediction_head(self.projection_head(y))

    def forward_momentum(self, x):
        y = self.backbone_momentum(x).flatten(start_dim=1)
        return self.projection_head_momentum(y).detach()


class SimCLR(nn.Module):
    def __init__(self, backbone: nn.Module, dim: int = 8) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(dim, 32, 16)

    def forward(self, x):
        return self.projection_head(self.backbone(x).flatten(start_dim=1))


def attached(model: nn.Module, aug, **kwargs) -> nn.Module:
    attach(model, aug, **kwargs)
    return model


def byol_augments(size: int = SIZE):
    return (
        augment.byol(size, view=1, blur_kernel=3),
        augment.byol(size, view=2, blur_kernel=3),
    )


def byol_step(model, criterion, images):
    x0, x1 = model.equivariance.views(images)
    update_momentum(model.backbone, model.backbone_momentum, m=0.99)
    update_momentum(model.projection_head, model.projection_head_momentum, m=0.99)
    p0, z0 = model(x0), model.forward_momentum(x0)
    p1, z1 = model(x1), model.forward_momentum(x1)
    invariance = 0.5 * (criterion(p0, z1) + criterion(p1, z0))
    return invariance, model.equivariance.loss()


class CountBatches:
    """Forward hook recording the batch size of every real backbone computation."""

    def __init__(self, module: nn.Module) -> None:
        self.sizes: list[int] = []
        module[0].register_forward_hook(lambda m, i, o: self.sizes.append(i[0].shape[0]))


def test_one_batched_pass_serves_the_users_calls():
    torch.manual_seed(0)
    model = attached(BYOL(convnet()), byol_augments(), **WIDTHS)
    counter = CountBatches(model.backbone)
    momentum_counter = CountBatches(model.backbone_momentum)
    images = torch.rand(6, 3, SIZE, SIZE)
    byol_step(model, NegativeCosineSimilarity(), images)
    # the online backbone computed once, on originals + 2 views; the momentum one per view
    assert counter.sizes == [18]
    assert momentum_counter.sizes == [6, 6]


def test_served_features_are_the_batched_pass():
    torch.manual_seed(1)
    model = attached(SimCLR(convnet()), augment.simclr(SIZE, variant="cifar"), **WIDTHS)
    images = torch.rand(5, 3, SIZE, SIZE)
    reference = copy.deepcopy(model.backbone)  # an independent copy, taken before the step
    x0, x1 = model.equivariance.views(images)
    original = (images - torch.tensor(IMAGENET_NORMALIZE[0]).view(1, 3, 1, 1)) / torch.tensor(
        IMAGENET_NORMALIZE[1]
    ).view(1, 3, 1, 1)
    served = model.backbone(x0)
    # an independent computation: the class's forward on the concatenated batch
    expected = nn.Sequential.forward(reference, torch.cat([original, x0, x1]))
    torch.testing.assert_close(served, expected[5:10])
    assert model.backbone(x0) is served
    other = x0.clone()
    assert model.backbone(other) is not served
    model.equivariance.loss()
    assert model.backbone(x0) is not served  # the step ended: computed again


def test_views_that_are_not_passed_unchanged_warn_once():
    model = attached(SimCLR(convnet()), augment.simclr(SIZE, variant="cifar"), **WIDTHS)
    images = torch.rand(4, 3, SIZE, SIZE)
    for _ in range(2):
        x0, x1 = model.equivariance.views(images)
        model(x0.clone()), model(x1.clone())
        if _ == 0:
            with pytest.warns(UserWarning, match="extra backbone pass"):
                model.equivariance.loss()
        else:
            model.equivariance.loss()  # warned once only


def test_gradients_reach_backbone_and_head_not_momentum_branch():
    torch.manual_seed(2)
    model = attached(BYOL(convnet()), byol_augments(), **WIDTHS)
    _, equivariance = byol_step(model, NegativeCosineSimilarity(), torch.rand(6, 3, SIZE, SIZE))
    equivariance.backward()
    for name, p in model.equivariance.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for p in model.backbone.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    for p in [*model.backbone_momentum.parameters(), *model.projection_head_momentum.parameters()]:
        assert p.grad is None
    # the invariance heads do not see the equivariance term
    assert all(p.grad is None for p in model.prediction_head.parameters())


def test_optimizer_from_the_models_parameters_trains_the_head():
    plain = BYOL(convnet())
    plain_params = {id(p) for p in plain.parameters()}
    model = attached(plain, byol_augments(), **WIDTHS)
    params = {id(p) for p in model.parameters()}
    assert {id(p) for p in model.equivariance.term.parameters()} <= params
    assert plain_params <= params
    # no parameter is registered twice (the branch only references the backbone)
    names = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    assert len(names) == len(set(id(p) for p in model.parameters()))


def test_momentum_update_still_reaches_the_momentum_copy():
    model = attached(BYOL(convnet()), byol_augments(), **WIDTHS)
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.backbone_momentum.parameters()]
    update_momentum(model.backbone, model.backbone_momentum, m=0.5)
    after = list(model.backbone_momentum.parameters())
    for b, a, online in zip(before, after, model.backbone.parameters(), strict=True):
        torch.testing.assert_close(a, 0.5 * b + 0.5 * online)


def test_training_decreases_the_loss_on_a_fixed_batch():
    torch.manual_seed(3)
    model = attached(SimCLR(convnet(16), dim=16), augment.simclr(SIZE, variant="cifar"), **WIDTHS)
    criterion = NTXentLoss(temperature=0.5)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    images = torch.rand(16, 3, SIZE, SIZE)
    losses = []
    for _ in range(40):
        torch.manual_seed(4)  # the same views every step
        x0, x1 = model.equivariance.views(images)
        loss = criterion(model(x0), model(x1)) + model.equivariance.loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


def test_loss_equals_the_term_on_the_batched_features():
    torch.manual_seed(5)
    model = attached(SimCLR(convnet()), augment.simclr(SIZE, variant="cifar"), weight=0.5, **WIDTHS)
    images = torch.rand(4, 3, SIZE, SIZE)
    model.equivariance.views(images)
    features = [f.flatten(1) for f in model.equivariance.step.features]
    params = model.equivariance.step.params
    term = copy.deepcopy(model.equivariance.term)
    expected = 0.5 * term(features[0], torch.stack(features[1:]), params)
    torch.testing.assert_close(model.equivariance.loss(), expected)
    assert set(model.equivariance.metrics()) == {
        "loss",
        "absolute",
        "relative",
        "cos_pred",
        "cos_original",
    }


@settings(max_examples=10, deadline=None)
@given(
    batch=st.integers(2, 6),
    width=st.integers(2, 12),
    size=st.sampled_from([8, 12]),
    views=st.integers(1, 3),
)
def test_shapes_for_any_batch_width_and_view_count(batch, width, size, views):
    backbone = convnet(width)
    augs = [augment.simclr(size, variant="cifar") for _ in range(views)]
    branch = equimod_branch(backbone, augs, **WIDTHS)
    assert branch.term.feature_dim == width
    out = branch.views(torch.rand(batch, 3, size + 4, size + 4))
    assert len(out) == views and all(v.shape == (batch, 3, size, size) for v in out)
    assert branch.step.params.shape == (views, batch, 15)
    loss = branch.loss()
    assert loss.shape == () and torch.isfinite(loss)


def test_originals_of_another_size_are_resized_to_the_views():
    backbone = convnet()
    branch = equimod_branch(backbone, augment.simclr(SIZE, variant="cifar"), **WIDTHS)
    counter = CountBatches(backbone)
    branch.views(torch.rand(3, 3, 24, 24))
    assert counter.sizes == [9]


def test_state_dict_round_trip_gives_the_same_loss():
    torch.manual_seed(6)
    model = attached(SimCLR(convnet()), augment.simclr(SIZE, variant="cifar"), **WIDTHS)
    model.eval()
    images = torch.rand(4, 3, SIZE, SIZE)
    torch.manual_seed(7)
    model.equivariance.views(images)
    loss = model.equivariance.loss()
    clone = attached(SimCLR(convnet()), augment.simclr(SIZE, variant="cifar"), **WIDTHS)
    clone.load_state_dict(model.state_dict())
    clone.eval()
    torch.manual_seed(7)
    clone.equivariance.views(images)
    torch.testing.assert_close(clone.equivariance.loss(), loss)


def test_copies_and_pickles_outside_a_step_are_plain_modules():
    model = attached(SimCLR(convnet()), augment.simclr(SIZE, variant="cifar"), **WIDTHS)
    model.equivariance.views(torch.rand(3, 3, SIZE, SIZE))
    model.equivariance.loss()
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert "forward" not in vars(other.backbone) and not other.backbone._forward_pre_hooks
        assert isinstance(other, SimCLR) and other.equivariance.backbone is other.backbone


def test_copying_a_backbone_mid_step_is_a_named_error():
    model = attached(SimCLR(convnet()), augment.simclr(SIZE, variant="cifar"), **WIDTHS)
    model.equivariance.views(torch.rand(3, 3, SIZE, SIZE))
    with pytest.raises(TypeError, match="between views\\(\\) and loss\\(\\)"):
        copy.deepcopy(model.backbone)


def test_original_transform_yields_rgb_floats():
    from PIL import Image

    image = Image.new("L", (40, 30), color=128)
    out = OriginalTransform(16)(image)
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full_like(out, 128 / 255))


def test_attach_keeps_the_users_model():
    """isinstance holds, state-dict keys are the model's plus equivariance.*, writes land."""
    plain_keys = set(BYOL(convnet()).state_dict())
    model = BYOL(convnet())
    attach(model, byol_augments(), **WIDTHS)
    assert isinstance(model, BYOL) and type(model) is BYOL
    keys = set(model.state_dict())
    assert plain_keys <= keys
    assert all(k.startswith("equivariance.") for k in keys - plain_keys)
    # the state dict loads into the plain model, no key renaming
    plain = BYOL(convnet())
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(k.startswith("equivariance.") for k in unexpected)
    for name, t in plain.state_dict().items():
        assert torch.equal(t, model.state_dict()[name]), name


def test_attribute_writes_reach_the_model():
    """B7: with no proxy, a new backbone or attribute is the one the model uses."""
    model = attached(SimCLR(convnet()), augment.simclr(SIZE, variant="cifar"), **WIDTHS)
    model.scale = 2
    assert model.scale == 2 and model.__dict__["scale"] == 2
    new = convnet()
    model.backbone = new
    x = torch.rand(2, 3, SIZE, SIZE)
    model.eval()
    torch.testing.assert_close(model(x), model.projection_head(new(x).flatten(1)))


def test_attach_rejects_a_taken_name_and_wrap_names_its_replacement():
    model = attached(SimCLR(convnet()), augment.simclr(SIZE, variant="cifar"), **WIDTHS)
    with pytest.raises(ValueError, match="already has an attribute 'equivariance'"):
        attach(model, augment.simclr(SIZE, variant="cifar"))
    with pytest.warns(FutureWarning, match="model.equivariance.views"):
        same, transform = wrap(SimCLR(convnet()), augment.simclr(SIZE, variant="cifar"), **WIDTHS)
    assert isinstance(same, SimCLR) and isinstance(transform, OriginalTransform)
    with pytest.raises(TypeError, match="attach"):
        EquivariantModel(same, same.equivariance)


def test_nothing_stays_on_the_backbone_outside_a_step():
    model = attached(BYOL(convnet()), byol_augments(), **WIDTHS)
    backbone = model.backbone
    assert "forward" not in vars(backbone) and not backbone._forward_pre_hooks
    model.equivariance.views(torch.rand(4, 3, SIZE, SIZE))
    assert "forward" in vars(backbone)  # the shared pass, for this step only
    model.equivariance.loss()
    assert "forward" not in vars(backbone) and not backbone._forward_pre_hooks
    assert model.equivariance.step is None


def test_a_view_edited_in_place_is_recomputed():
    """B6: an edited view is never served the features of the original view."""
    model = attached(SimCLR(convnet()), augment.simclr(SIZE, variant="cifar"), **WIDTHS)
    x0, _ = model.equivariance.views(torch.rand(4, 3, SIZE, SIZE))
    served = model.backbone(x0)
    assert served is model.equivariance.step.features[1]
    x0.mul_(0)
    edited = model.backbone(x0)
    assert edited is not served
    reference = nn.Sequential.forward(model.backbone, x0)
    torch.testing.assert_close(edited, reference)


def test_eval_between_views_and_loss_ends_the_step():
    """B6: after .eval(), the train-mode features of the step are not served."""
    model = attached(SimCLR(convnet()), augment.simclr(SIZE, variant="cifar"), **WIDTHS)
    x0, _ = model.equivariance.views(torch.rand(4, 3, SIZE, SIZE))
    served = model.equivariance.step.features[1]
    model.eval()
    out = model.backbone(x0)
    assert out is not served
    torch.testing.assert_close(out, nn.Sequential.forward(model.backbone, x0))
    assert "forward" not in vars(model.backbone)
    with pytest.raises(RuntimeError, match="change of mode"):
        model.equivariance.loss()


def test_views_twice_without_loss_is_a_named_error():
    model = attached(SimCLR(convnet()), augment.simclr(SIZE, variant="cifar"), **WIDTHS)
    model.equivariance.views(torch.rand(4, 3, SIZE, SIZE))
    with pytest.raises(RuntimeError, match="views\\(\\) was called again"):
        model.equivariance.views(torch.rand(4, 3, SIZE, SIZE))
    model.equivariance.end_step()
    model.equivariance.views(torch.rand(4, 3, SIZE, SIZE))
    model.equivariance.loss()
    with pytest.raises(RuntimeError, match="needs a views"):
        model.equivariance.loss()


def _replica(module: nn.Module) -> nn.Module:
    """What nn.DataParallel's replicate() makes of a module on CPU: a shallow copy per
    submodule with its own parameters (here: new values, as if broadcast elsewhere)."""
    replica = module._replicate_for_data_parallel()
    for name, child in module._modules.items():
        replica._modules[name] = _replica(child)
    for name, p in module._parameters.items():
        setattr(replica, name, (p.detach() + 1.0).requires_grad_())
    return replica


def test_a_data_parallel_replica_runs_its_own_weights_mid_step():
    """B10: a replica copies the instance forward; it must still run the replica."""
    model = attached(SimCLR(convnet()), augment.simclr(SIZE, variant="cifar"), **WIDTHS)
    x0, _ = model.equivariance.views(torch.rand(4, 3, SIZE, SIZE))
    replica = _replica(model.backbone)
    out = replica(x0)  # DataParallel gives each replica its scattered copy; even the same
    expected = nn.Sequential.forward(replica, x0)  # tensor must run the replica's weights
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, model.equivariance.step.features[1])
    model.equivariance.loss()


def test_pass_modes_compute_the_same_term_without_batchnorm():
    """Without BatchNorm both modes see the same features (up to batch-size rounding), one
    batched pass of 3B images against three passes of B; with BatchNorm they differ by design.
    """
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    images = torch.rand(4, 3, SIZE, SIZE)
    losses, sizes = [], []
    for shared_pass in (True, False):
        torch.manual_seed(8)
        model = SimCLR(copy.deepcopy(backbone))
        attach(model, augment.simclr(SIZE, variant="cifar"), shared_pass=shared_pass, **WIDTHS)
        model.equivariance.term.eval()  # BatchNorm of the head: running statistics
        counter = CountBatches(model.backbone)
        torch.manual_seed(9)
        x0, x1 = model.equivariance.views(images)
        model(x0), model(x1)
        losses.append(model.equivariance.loss())
        sizes.append(counter.sizes)
    assert sizes == [[12], [4, 4, 4]]
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)


def test_separate_pass_computes_views_the_user_never_passed():
    """A frozen-encoder use: nobody calls the backbone on the views; loss() computes them."""
    backbone = convnet()
    branch = equimod_branch(backbone, augment.simclr(SIZE, variant="cifar"), shared_pass=False)
    counter = CountBatches(backbone)
    branch.views(torch.rand(4, 3, SIZE, SIZE))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = branch.loss()
    assert counter.sizes == [4, 4, 4] and torch.isfinite(loss)


def test_frozen_encoder_in_shared_mode_does_not_warn():
    branch = equimod_branch(convnet(), augment.simclr(SIZE, variant="cifar"), **WIDTHS)
    branch.views(torch.rand(4, 3, SIZE, SIZE))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        branch.loss()


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_a_model_cast_to_another_dtype_trains(dtype):
    """B5: views() casts images to the model's dtype; the parameters follow into the term."""
    torch.manual_seed(10)
    model = attached(SimCLR(convnet()), augment.simclr(SIZE, variant="cifar"), **WIDTHS)
    model.to(dtype)
    x0, x1 = model.equivariance.views(torch.rand(8, 3, SIZE, SIZE))
    assert x0.dtype == dtype
    loss = (model(x0) - model(x1)).float().pow(2).mean() + model.equivariance.loss().float()
    assert torch.isfinite(loss)
    loss.backward()


def test_channels_last_views_are_served_after_the_models_conversion():
    backbone = convnet()
    aug = augment.simclr(SIZE, variant="cifar")
    branch = make_branch(backbone, aug, memory_format=torch.channels_last, **WIDTHS)
    x0, x1 = branch.views(torch.rand(4, 3, SIZE, SIZE))
    converted = x0.to(memory_format=torch.channels_last)
    assert converted is x0 and backbone(converted) is branch.step.features[1]
    branch.loss()


def test_backbone_returning_a_tuple_is_a_named_error():
    class TupleBackbone(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = convnet()

        def forward(self, x):
            return self.net(x), x

    with pytest.raises(ValueError, match="returns the features tensor"):
        equimod_branch(TupleBackbone(), augment.simclr(SIZE, variant="cifar"))


def test_infer_feature_dim_keeps_modes_and_statistics():
    backbone = convnet(5)
    stats = backbone[1].running_mean.clone()
    assert infer_feature_dim(backbone, (8, 8)) == 5
    assert backbone.training and torch.equal(backbone[1].running_mean, stats)


# --- errors ---------------------------------------------------------------------------------


def test_model_without_backbone_is_rejected():
    with pytest.raises(ValueError, match="no nn.Module attribute 'backbone'"):
        attach(nn.Linear(3, 3), byol_augments())
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        attach("resnet", byol_augments())


def test_feature_width_mismatch_is_rejected():
    with pytest.raises(ValueError, match="feature_dim is 64 but the backbone returns 8"):
        attach(BYOL(convnet()), byol_augments(), feature_dim=64)


def test_views_of_different_layouts_are_rejected():
    with pytest.raises(ValueError, match="share one parameter layout"):
        equimod_branch(convnet(), (augment.byol(SIZE), augment.simclr(SIZE, variant="cifar")))


def test_term_of_other_parameter_width_is_rejected():
    term = EquiModTerm(8, 17, **WIDTHS)
    with pytest.raises(ValueError, match="param_dim 18"):
        EquivarianceBranch(convnet(), augment.byol(SIZE), term)


@pytest.mark.parametrize(
    "images, match",
    [
        (torch.rand(2, 3, SIZE), r"images must have shape \(B, C, H, W\)"),
        (torch.randint(0, 255, (2, 3, SIZE, SIZE), dtype=torch.uint8), "floating point"),
        (torch.rand(2, 3, SIZE, SIZE) * 255, r"values in \[0, 1\]"),
    ],
)
def test_bad_images_are_rejected(images, match):
    model = attached(BYOL(convnet()), byol_augments(), **WIDTHS)
    with pytest.raises(ValueError, match=match):
        model.equivariance.views(images)


def test_diverged_backbone_is_reported():
    model = attached(BYOL(convnet()), byol_augments(), **WIDTHS)
    with torch.no_grad():
        model.backbone[0].weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="diverged"):
        model.equivariance.views(torch.rand(2, 3, SIZE, SIZE))


def test_loss_without_views_is_rejected():
    model = attached(BYOL(convnet()), byol_augments(), **WIDTHS)
    with pytest.raises(RuntimeError, match="views"):
        model.equivariance.loss()


def test_bad_normalize_and_weight_are_rejected():
    with pytest.raises(ValueError, match="normalize"):
        equimod_branch(convnet(), augment.byol(SIZE), normalize=((0.5,), (0.5,)))
    with pytest.raises(ValueError, match="weight"):
        equimod_branch(convnet(), augment.byol(SIZE), weight=-1.0)


def test_custom_loss_is_used():
    branch = equimod_branch(convnet(), augment.byol(SIZE), loss=EquiModLoss(0.5), **WIDTHS)
    assert branch.term.loss.temperature == 0.5


@pytest.mark.parametrize("term", ["equimod", "steering"])
def test_branch_trains_under_bf16_autocast(term):
    """bf16 features next to float32 parameters: autocast's to resolve, not an input error."""
    torch.manual_seed(0)
    backbone = convnet()
    aug = augment.byol_views(16, variant="cifar", blur_kernel=3)
    if term == "equimod":
        branch = equimod_branch(backbone, aug, hidden_dim=16, output_dim=8)
    else:
        branch = steering_branch(backbone, aug, rank=2, hidden_dim=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x0, x1 = branch.views(torch.rand(8, 3, 16, 16))
        features = backbone(x0)
        loss = branch.loss()
    assert features.dtype == torch.bfloat16
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in branch.term.parameters() if p.grad is not None)
    f = features.flatten(1).float()
    params = torch.zeros(2, 8, aug[0].layout.param_dim)
    with pytest.raises(ValueError, match="one dtype"):  # outside autocast: no silent promotion
        branch.term(f, torch.stack([f, f]).double(), params)


def test_monitor_term_trains_its_head_on_detached_features():
    """A baseline's equivariance, measured by a trained head the encoder never feels."""
    model = attached(SimCLR(convnet()), augment.simclr(SIZE, variant="cifar"), term="monitor")
    model.equivariance.views(torch.rand(6, 3, SIZE, SIZE))
    model.equivariance.loss().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    head = model.equivariance.term.term.head
    assert all(p.grad is not None for p in head.parameters() if p.requires_grad)
    assert {"absolute", "relative"} <= set(model.equivariance.metrics())
