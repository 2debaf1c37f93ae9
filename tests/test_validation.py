"""The value checks (finite, range) can be turned off: no host read-back per training step."""

from __future__ import annotations

import asyncio
import math
import threading
import traceback
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn

from equimod_plugin import (
    EquiModCosineLoss,
    EquiModLoss,
    EquivarianceHead,
    augment,
    equimod_branch,
    steering_branch,
    validation,
)
from equimod_plugin._checks import validation_enabled

pytestmark = pytest.mark.filterwarnings("ignore:the model never called its backbone")


@pytest.fixture
def bool_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Files of equimod_plugin that read a tensor's value to the host with bool(tensor)."""
    reads: list[str] = []
    original = torch.Tensor.__bool__

    def counted(self: torch.Tensor) -> bool:
        caller = traceback.extract_stack(limit=2)[0]
        if "equimod_plugin" in caller.filename:
            reads.append(f"{caller.filename}:{caller.lineno}")
        return original(self)

    monkeypatch.setattr(torch.Tensor, "__bool__", counted)
    yield reads


def backbone() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def branches() -> list:
    aug = augment.byol(8, view=2, variant="cifar")
    return [
        equimod_branch(backbone(), aug, hidden_dim=8, output_dim=4, param_embed_dim=4),
        steering_branch(backbone(), aug, rank=2, hidden_dim=8),
    ]


@pytest.mark.parametrize("index", [0, 1], ids=["equimod", "steering"])
def test_branch_without_validation_reads_nothing_back(index: int, bool_reads: list[str]) -> None:
    branch = branches()[index]
    assert branch.validate is True
    branch.views(torch.rand(4, 3, 8, 8))
    branch.loss()
    assert bool_reads, "the default branch validates values each step"
    bool_reads.clear()
    branch.validate = False
    branch.views(torch.rand(4, 3, 8, 8))
    loss = branch.loss()
    assert bool_reads == []
    assert math.isfinite(float(loss.detach()))
    assert validation_enabled()  # the branch's switch does not leak out of the step


@pytest.mark.exactness
def test_branch_validation_flag_changes_nothing_but_the_checks() -> None:
    losses = []
    for validate in (True, False):
        torch.manual_seed(0)
        branch = branches()[0]
        branch.validate = validate
        branch.views(torch.rand(4, 3, 8, 8))
        losses.append(branch.loss())
    assert torch.equal(losses[0], losses[1])


def test_branch_without_validation_skips_the_range_check_only() -> None:
    branch = branches()[0]
    with pytest.raises(ValueError, match=r"images must have values in \[0, 1\]"):
        branch.views(torch.full((4, 3, 8, 8), 2.0))
    branch.validate = False
    branch.views(torch.full((4, 3, 8, 8), 2.0))  # out of range, not checked
    branch.loss()  # ends the step
    with pytest.raises(ValueError, match=r"images must have shape \(B, C, H, W\)"):
        branch.views(torch.rand(3, 8, 8))  # shape checks still run
    with pytest.raises(TypeError, match="validate must be a bool"):
        type(branch)(backbone(), branch.augments[0], branch.term, validate=1)  # type: ignore[arg-type]


def test_context_manager_turns_value_checks_off_and_restores_them() -> None:
    nan = torch.full((1, 2, 4), math.nan)
    with pytest.raises(ValueError, match="y_views.* must be finite"):
        EquiModCosineLoss()(nan, nan)
    with pytest.raises(RuntimeError, match="inside"), validation(False):
        assert not validation_enabled()
        assert torch.isnan(EquiModCosineLoss()(nan, nan))
        raise RuntimeError("inside")
    assert validation_enabled()  # restored, also after an exception
    with validation(False), validation(True):
        with pytest.raises(ValueError, match="y_pred.* must be finite"):
            EquiModLoss()(torch.randn(1, 2, 4), nan)
    with pytest.raises(TypeError, match="enabled must be a bool"), validation("no"):  # type: ignore[arg-type]
        pass


def test_shape_checks_run_without_validation() -> None:
    head = EquivarianceHead(8, 5, hidden_dim=8, output_dim=4, param_embed_dim=4)
    with validation(False), pytest.raises(ValueError, match="params.* must have shape"):
        head(torch.randn(4, 8), torch.randn(2, 4, 8), torch.randn(2, 4, 6))


def test_replayed_parameter_values_are_checked_only_with_validation() -> None:
    aug = augment.byol(8, view=2, variant="cifar")
    x = torch.rand(2, 3, 8, 8)
    bad = aug.identity_params(2)
    bad[:, aug.layout.fields["flip"]] = 0.5
    with pytest.raises(ValueError, match="flip.applied"):
        aug(x, params=bad)
    with validation(False):
        views, _ = aug(x, params=bad)
    assert views.shape == x.shape


def run_in_threads(*targets: Callable[[], None]) -> None:
    """Run each target in its own thread; re-raise the first failure in the calling thread."""
    errors: list[Exception] = []

    def guarded(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except Exception as error:  # handed to the test thread
                errors.append(error)

        return run

    threads = [threading.Thread(target=guarded(t)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def wait(event: threading.Event) -> None:
    """Wait for a step of the other thread; the timeout only turns a deadlock into a failure."""
    assert event.wait(timeout=60), "the other thread never reached its step"


def test_overlapping_blocks_in_two_threads_leave_the_checks_on() -> None:
    """B3: enter A, enter B, leave A, leave B; a process-wide flag was left False after that."""
    a_inside, b_inside, a_left, observed = (threading.Event() for _ in range(4))
    seen: dict[str, bool] = {}

    def first() -> None:
        with validation(False):
            a_inside.set()
            wait(b_inside)
            seen["first, while the second is inside"] = validation_enabled()
        a_left.set()
        seen["first, after its block"] = validation_enabled()

    def second() -> None:
        wait(a_inside)
        with validation(False):
            b_inside.set()
            wait(a_left)
            seen["second, after the first left"] = validation_enabled()
        seen["second, after its block"] = validation_enabled()

    def observer() -> None:  # a third thread never enters a block
        wait(a_inside)
        seen["observer, while the first is inside"] = validation_enabled()
        observed.set()

    run_in_threads(first, second, observer)
    assert observed.is_set()
    assert seen == {
        "first, while the second is inside": False,
        "second, after the first left": False,
        "observer, while the first is inside": True,
        "first, after its block": True,
        "second, after its block": True,
    }
    assert validation_enabled()
    nan = torch.full((1, 2, 4), math.nan)
    with pytest.raises(ValueError, match="y_views.* must be finite"):
        EquiModCosineLoss()(nan, nan)


def test_a_block_in_one_asyncio_task_does_not_reach_another() -> None:
    async def unchecked(inside: asyncio.Event, done: asyncio.Event) -> bool:
        with validation(False):
            inside.set()
            await done.wait()
            return validation_enabled()

    async def checked(inside: asyncio.Event, done: asyncio.Event) -> bool:
        await inside.wait()
        enabled = validation_enabled()
        done.set()
        return enabled

    async def main() -> list[bool]:
        inside, done = asyncio.Event(), asyncio.Event()
        return list(await asyncio.gather(unchecked(inside, done), checked(inside, done)))

    assert asyncio.run(main()) == [False, True]
    assert validation_enabled()
