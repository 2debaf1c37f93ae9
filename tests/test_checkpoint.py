"""Checkpoints: a wrapped lightly model's state dict round trip, and resuming training exactly.

Every public module's own ``state_dict`` round trip (through ``torch.save`` and
``torch.load(weights_only=True)``) is in the standard set, ``tests/test_standard.py``.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch
from lightly.loss import NegativeCosineSimilarity
from test_branch import BYOL, SIZE, WIDTHS, byol_augments, byol_step, convnet

from equimod_plugin.integrations.lightly import attach

STEPS, RESUME_AT, BATCH = 5, 2, 6


def make(seed: int, term: str = "equimod") -> tuple[BYOL, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    kwargs: dict[str, Any] = WIDTHS if term == "equimod" else {"rank": 2, "hidden_dim": 8}
    model = BYOL(convnet())
    attach(model, byol_augments(), term=term, **kwargs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)  # stateful: moments per weight
    return model, optimizer


def images(step: int) -> torch.Tensor:
    return torch.rand(BATCH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(step))


def step(model: BYOL, optimizer: torch.optim.Optimizer, i: int) -> float:
    invariance, equivariance = byol_step(model, NegativeCosineSimilarity(), images(i))
    loss = invariance + equivariance
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def save(obj: Any) -> Any:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.exactness
@pytest.mark.parametrize("term", ["equimod", "steering"])
def test_wrapped_lightly_model_state_dict_round_trip(term: str) -> None:
    model, optimizer = make(0, term)
    step(model, optimizer, 0)  # trained weights and BatchNorm statistics
    state = save(model.state_dict())
    prefixes = {key.split(".")[0] for key in state}
    # the model's own keys, unprefixed, plus the attached branch's
    plain = {key.split(".")[0] for key in BYOL(convnet()).state_dict()}
    assert prefixes == plain | {"equivariance"}
    assert any(key.startswith("equivariance.term.") for key in state)
    assert any(key.startswith("backbone_momentum.") for key in state)
    fresh, _ = make(1, term)
    assert any(not torch.equal(fresh.state_dict()[k], v) for k, v in state.items())
    fresh.load_state_dict(state)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    for m in (model, fresh):
        m.eval()
    x = images(9)
    assert torch.equal(fresh(x), model(x))
    torch.manual_seed(3)
    views = model.equivariance.views(x)
    expected = model.equivariance.loss()
    torch.manual_seed(3)
    assert all(torch.equal(a, b) for a, b in zip(fresh.equivariance.views(x), views, strict=True))
    assert torch.equal(fresh.equivariance.loss(), expected)


@pytest.mark.exactness
@pytest.mark.parametrize("term", ["equimod", "steering"])
def test_resuming_from_a_checkpoint_continues_the_same_loss_curve(term: str) -> None:
    model, optimizer = make(0, term)
    torch.manual_seed(100)  # the views' draws come from the global RNG
    uninterrupted = [step(model, optimizer, i) for i in range(STEPS)]
    final = {k: v.clone() for k, v in model.state_dict().items()}

    model, optimizer = make(0, term)
    torch.manual_seed(100)
    resumed = [step(model, optimizer, i) for i in range(RESUME_AT)]
    checkpoint = save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": torch.get_rng_state(),
            "step": RESUME_AT,
        }
    )
    del model, optimizer
    model, optimizer = make(7, term)  # another process: other weights, other RNG
    torch.manual_seed(7)
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    torch.set_rng_state(checkpoint["rng"])
    resumed += [step(model, optimizer, i) for i in range(checkpoint["step"], STEPS)]

    assert resumed == uninterrupted  # exactly, on CPU
    for key, value in model.state_dict().items():
        assert torch.equal(value, final[key]), key


def test_resuming_without_the_rng_state_draws_other_views() -> None:
    """The RNG state belongs in the checkpoint: the views are drawn from it."""
    model, optimizer = make(0)
    torch.manual_seed(100)
    uninterrupted = [step(model, optimizer, i) for i in range(RESUME_AT + 1)]
    model, optimizer = make(0)
    torch.manual_seed(100)
    for i in range(RESUME_AT):
        step(model, optimizer, i)
    torch.manual_seed(5)  # the RNG a restarted process has
    assert step(model, optimizer, RESUME_AT) != uninterrupted[-1]
