"""Seeded runs reproduce augmentations, initial parameters and losses exactly on CPU."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from lightly.loss import NegativeCosineSimilarity
from test_branch import BYOL, SIZE, WIDTHS, byol_augments, convnet

from equimod_plugin import augment
from equimod_plugin.integrations.lightly import attach
from equimod_plugin.tta import tta_params

PRESETS = {
    "simclr-cifar": lambda: augment.simclr(SIZE, "cifar"),
    "simclr-imagenet": lambda: augment.simclr(SIZE, blur_kernel=3),
    "byol-1": lambda: augment.byol(SIZE, 1, blur_kernel=3),
    "byol-2": lambda: augment.byol(SIZE, 2, blur_kernel=3),
}


def run(seed: int, term: str, steps: int = 3) -> dict[str, Any]:
    """Seed once, then build, augment and train as a script would."""
    torch.manual_seed(seed)
    kwargs: dict[str, Any] = WIDTHS if term == "equimod" else {"rank": 2, "hidden_dim": 8}
    model = BYOL(convnet())
    attach(model, byol_augments(), term=term, **kwargs)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses, params = [], []
    for _ in range(steps):
        images = torch.rand(6, 3, SIZE, SIZE)
        x0, x1 = model.equivariance.views(images)
        params.append(model.equivariance.step.params)  # the views' augmentation parameters
        criterion = NegativeCosineSimilarity()
        p0, z0, p1, z1 = (
            model(x0),
            model.forward_momentum(x0),
            model(x1),
            model.forward_momentum(x1),
        )
        loss = 0.5 * (criterion(p0, z1) + criterion(p1, z0)) + model.equivariance.loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return {"initial": initial, "losses": losses, "params": params, "final": model.state_dict()}


@pytest.mark.exactness
@pytest.mark.parametrize("term", ["equimod", "steering"])
def test_seeded_training_runs_are_identical(term: str) -> None:
    first, second, other = run(0, term), run(0, term), run(1, term)
    assert first["losses"] == second["losses"]
    assert all(torch.equal(a, b) for a, b in zip(first["params"], second["params"], strict=True))
    for key in ("initial", "final"):
        for name, value in first[key].items():
            assert torch.equal(value, second[key][name]), (key, name)
    assert first["losses"] != other["losses"]  # the seed matters: the test can fail


@pytest.mark.exactness
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_augmentations_reproduce_with_a_seed_or_a_generator(name: str) -> None:
    aug = PRESETS[name]()
    x = torch.rand(8, 3, SIZE + 4, SIZE + 4, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(3)
    views, params = aug(x)
    torch.manual_seed(3)
    again, again_params = aug(x)
    assert torch.equal(views, again) and torch.equal(params, again_params)
    # an explicit generator is independent of the global RNG
    a, pa = aug(x, generator=torch.Generator().manual_seed(4))
    torch.manual_seed(99)
    b, pb = aug(x, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and torch.equal(pa, pb)
    assert not torch.equal(pa, params)


@pytest.mark.exactness
def test_tta_params_reproduce_with_a_generator() -> None:
    aug = augment.byol(SIZE, 1)
    first = tta_params(aug, 16, (SIZE, SIZE), generator=torch.Generator().manual_seed(0))
    second = tta_params(aug, 16, (SIZE, SIZE), generator=torch.Generator().manual_seed(0))
    assert torch.equal(first, second)
