"""The wrap: one batched backbone pass, served views, and the equivariance term.

Tested against lightly's real modules (BYOL heads, NegativeCosineSimilarity, NTXentLoss,
update_momentum) in the layout of lightly's own examples.
"""

from __future__ import annotations

import copy
import pickle

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
from equimod_plugin.integrations.lightly import EquivariantModel, OriginalTransform, wrap
from equimod_plugin.wrap import IMAGENET_NORMALIZE, infer_feature_dim

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


def byol_augments(size: int = SIZE):
    return (
        augment.byol(size, view=1, blur_kernel=3),
        augment.byol(size, view=2, blur_kernel=3),
    )


def byol_step(model, criterion, images):
    x0, x1 = model.views(images)
    update_momentum(model.backbone, model.backbone_momentum, m=0.99)
    update_momentum(model.projection_head, model.projection_head_momentum, m=0.99)
    p0, z0 = model(x0), model.forward_momentum(x0)
    p1, z1 = model(x1), model.forward_momentum(x1)
    invariance = 0.5 * (criterion(p0, z1) + criterion(p1, z0))
    return invariance, model.equivariance_loss()


class CountBatches:
    """Forward hook recording the batch size of every real backbone computation."""

    def __init__(self, module: nn.Module) -> None:
        self.sizes: list[int] = []
        module[0].register_forward_hook(lambda m, i, o: self.sizes.append(i[0].shape[0]))


def test_one_batched_pass_serves_the_users_calls():
    torch.manual_seed(0)
    model, _ = wrap(BYOL(convnet()), byol_augments(), **WIDTHS)
    counter = CountBatches(model.backbone)
    momentum_counter = CountBatches(model.backbone_momentum)
    images = torch.rand(6, 3, SIZE, SIZE)
    byol_step(model, NegativeCosineSimilarity(), images)
    # the online backbone computed once, on originals + 2 views; the momentum one per view
    assert counter.sizes == [18]
    assert momentum_counter.sizes == [6, 6]


def test_served_features_are_the_batched_pass():
    torch.manual_seed(1)
    model, _ = wrap(SimCLR(convnet()), augment.simclr(SIZE, variant="cifar"), **WIDTHS)
    images = torch.rand(5, 3, SIZE, SIZE)
    x0, x1 = model.views(images)
    original = (images - torch.tensor(IMAGENET_NORMALIZE[0]).view(1, 3, 1, 1)) / torch.tensor(
        IMAGENET_NORMALIZE[1]
    ).view(1, 3, 1, 1)
    served = model.backbone(x0)
    # an independent computation: the unpatched forward on the concatenated batch
    reference = copy.deepcopy(model.backbone)
    expected = nn.Sequential.forward(reference, torch.cat([original, x0, x1]))
    torch.testing.assert_close(served, expected[5:10])
    assert model.backbone(x0) is served
    other = x0.clone()
    assert model.backbone(other) is not served
    model.equivariance_loss()
    assert model.backbone(x0) is not served  # the step ended: computed again


def test_views_that_are_not_passed_unchanged_warn_once():
    model, _ = wrap(SimCLR(convnet()), augment.simclr(SIZE, variant="cifar"), **WIDTHS)
    images = torch.rand(4, 3, SIZE, SIZE)
    for _ in range(2):
        x0, x1 = model.views(images)
        model(x0.clone()), model(x1.clone())
        if _ == 0:
            with pytest.warns(UserWarning, match="computed again"):
                model.equivariance_loss()
        else:
            model.equivariance_loss()  # warned once only


def test_gradients_reach_backbone_and_head_not_momentum_branch():
    torch.manual_seed(2)
    model, _ = wrap(BYOL(convnet()), byol_augments(), **WIDTHS)
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


def test_optimizer_from_wrapped_parameters_trains_the_head():
    model, _ = wrap(BYOL(convnet()), byol_augments(), **WIDTHS)
    params = {id(p) for p in model.parameters()}
    assert {id(p) for p in model.equivariance.term.parameters()} <= params
    assert {id(p) for p in model.model.parameters()} <= params
    # no parameter is registered twice (the branch only references the backbone)
    names = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    assert len(names) == len(set(id(p) for p in model.parameters()))


def test_momentum_update_still_reaches_the_momentum_copy():
    model, _ = wrap(BYOL(convnet()), byol_augments(), **WIDTHS)
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
    model, _ = wrap(SimCLR(convnet(16), dim=16), augment.simclr(SIZE, variant="cifar"), **WIDTHS)
    criterion = NTXentLoss(temperature=0.5)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    images = torch.rand(16, 3, SIZE, SIZE)
    losses = []
    for _ in range(40):
        torch.manual_seed(4)  # the same views every step
        x0, x1 = model.views(images)
        loss = criterion(model(x0), model(x1)) + model.equivariance_loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


@pytest.mark.filterwarnings("ignore:the model never called its backbone")
def test_loss_equals_the_term_on_the_batched_features():
    torch.manual_seed(5)
    model, _ = wrap(SimCLR(convnet()), augment.simclr(SIZE, variant="cifar"), weight=0.5, **WIDTHS)
    images = torch.rand(4, 3, SIZE, SIZE)
    model.views(images)
    features = [f.flatten(1) for f in model.equivariance.features]
    params = model.equivariance.params
    term = copy.deepcopy(model.equivariance.term)
    expected = 0.5 * term(features[0], torch.stack(features[1:]), params)
    torch.testing.assert_close(model.equivariance_loss(), expected)
    assert set(model.equivariance_metrics()) == {
        "loss",
        "absolute",
        "relative",
        "cos_pred",
        "cos_original",
    }


@pytest.mark.filterwarnings("ignore:the model never called its backbone")
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
    assert branch.params.shape == (views, batch, 15)
    loss = branch.loss()
    assert loss.shape == () and torch.isfinite(loss)


def test_originals_of_another_size_are_resized_to_the_views():
    backbone = convnet()
    branch = equimod_branch(backbone, augment.simclr(SIZE, variant="cifar"), **WIDTHS)
    counter = CountBatches(backbone)
    branch.views(torch.rand(3, 3, 24, 24))
    assert counter.sizes == [9]


@pytest.mark.filterwarnings("ignore:the model never called its backbone")
def test_state_dict_round_trip_gives_the_same_loss():
    torch.manual_seed(6)
    model, _ = wrap(SimCLR(convnet()), augment.simclr(SIZE, variant="cifar"), **WIDTHS)
    model.eval()
    images = torch.rand(4, 3, SIZE, SIZE)
    torch.manual_seed(7)
    model.views(images)
    loss = model.equivariance_loss()
    clone, _ = wrap(SimCLR(convnet()), augment.simclr(SIZE, variant="cifar"), **WIDTHS)
    clone.load_state_dict(model.state_dict())
    clone.eval()
    torch.manual_seed(7)
    clone.views(images)
    torch.testing.assert_close(clone.equivariance_loss(), loss)


def test_copies_and_pickles_serve_nothing_and_compute_normally():
    model, _ = wrap(SimCLR(convnet()), augment.simclr(SIZE, variant="cifar"), **WIDTHS)
    x0, _ = model.views(torch.rand(3, 3, SIZE, SIZE))  # mid-step: views are being served
    served = model.backbone(x0)
    copied = copy.deepcopy(model.backbone)
    pickled = pickle.loads(pickle.dumps(model.backbone))
    for other in (copied, pickled):
        assert other.forward.module is other
        out = other(x0)
        assert out is not served and out.shape == served.shape


def test_original_transform_yields_rgb_floats():
    from PIL import Image

    image = Image.new("L", (40, 30), color=128)
    out = OriginalTransform(16)(image)
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full_like(out, 128 / 255))


def test_wrapped_model_behaves_like_the_model():
    inner = BYOL(convnet())
    model, _ = wrap(inner, byol_augments(), **WIDTHS)
    assert isinstance(model, EquivariantModel) and model.model is inner
    assert model.prediction_head is inner.prediction_head
    x = torch.rand(3, 3, SIZE, SIZE)
    inner.eval()
    torch.testing.assert_close(model(x), inner(x))
    with pytest.raises(AttributeError, match="no_such_attribute"):
        getattr(model, "no_such_attribute")  # noqa: B009


def test_infer_feature_dim_keeps_modes_and_statistics():
    backbone = convnet(5)
    stats = backbone[1].running_mean.clone()
    assert infer_feature_dim(backbone, (8, 8)) == 5
    assert backbone.training and torch.equal(backbone[1].running_mean, stats)


# --- errors ---------------------------------------------------------------------------------


def test_model_without_backbone_is_rejected():
    with pytest.raises(ValueError, match="no nn.Module attribute 'backbone'"):
        wrap(nn.Linear(3, 3), byol_augments())
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        wrap("resnet", byol_augments())


def test_feature_width_mismatch_is_rejected():
    with pytest.raises(ValueError, match="feature_dim is 64 but the backbone returns 8"):
        wrap(BYOL(convnet()), byol_augments(), feature_dim=64)


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
    model, _ = wrap(BYOL(convnet()), byol_augments(), **WIDTHS)
    with pytest.raises(ValueError, match=match):
        model.views(images)


def test_diverged_backbone_is_reported():
    model, _ = wrap(BYOL(convnet()), byol_augments(), **WIDTHS)
    with torch.no_grad():
        model.backbone[0].weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="diverged"):
        model.views(torch.rand(2, 3, SIZE, SIZE))


def test_loss_without_views_is_rejected():
    model, _ = wrap(BYOL(convnet()), byol_augments(), **WIDTHS)
    with pytest.raises(RuntimeError, match="views"):
        model.equivariance_loss()


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
