import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from equimod_plugin.eval.batchnorm import recalibrate_batchnorm


def net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4))


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 6), seed=st.integers(0, 2**16), shift=st.floats(-5, 5))
def test_running_statistics_are_the_exact_average_of_the_batch_statistics(n, seed, shift):
    model = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5, momentum=0.3))
    g = torch.Generator().manual_seed(seed)
    batches = [torch.randn(8, 3, generator=g) + shift for _ in range(n)]
    assert recalibrate_batchnorm(model, batches) == n
    with torch.no_grad():
        hidden = [model[0](b) for b in batches]
    means = torch.stack([h.mean(0) for h in hidden]).mean(0)
    variances = torch.stack([h.var(0, correction=1) for h in hidden]).mean(0)
    torch.testing.assert_close(model[1].running_mean, means, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model[1].running_var, variances, rtol=1e-4, atol=1e-5)
    assert model[1].momentum == 0.3 and int(model[1].num_batches_tracked) == n


def test_modes_and_momenta_are_restored_and_no_gradient_is_made():
    model = net()
    model.eval()
    model[3].train()
    recalibrate_batchnorm(model, [torch.randn(4, 3, 6, 6) for _ in range(3)])
    assert [m.training for m in model] == [False, False, False, True]
    assert all(m.momentum == 0.1 for m in (model[1], model[3]))
    assert all(p.grad is None for p in model.parameters())


def test_eval_mode_then_matches_batch_statistics_on_the_same_distribution():
    model = net()
    g = torch.Generator().manual_seed(1)
    data = torch.rand(512, 3, 8, 8, generator=g) * 3 + 1
    # stale statistics, as after training: eval mode is far from batch statistics
    model.eval()
    stale = model(data)
    model.train()
    with torch.no_grad():
        reference = model(data)
    assert (stale - reference).abs().max() > 0.5
    recalibrate_batchnorm(model, data.split(128))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(data), reference, atol=0.05, rtol=0.05)


def test_forward_runs_what_a_training_step_runs():
    model = net()
    seen = []

    def forward(batch):
        seen.append(batch.shape[0])
        model(torch.cat([batch, batch.flip(-1)]))

    assert recalibrate_batchnorm(model, [torch.randn(2, 3, 5, 5)] * 3, forward) == 3
    assert seen == [2, 2, 2]


@pytest.mark.parametrize("batches", [[], iter(())])
def test_no_batch_is_an_error_that_leaves_the_statistics_unchanged(batches):
    model = net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="batches yielded no batch"):
        recalibrate_batchnorm(model, batches)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model[1].momentum == 0.1 and model.training


def test_a_failing_forward_leaves_the_statistics_unchanged():
    model = net()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def forward(batch):
        model(batch)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        recalibrate_batchnorm(model, [torch.randn(2, 3, 5, 5)], forward)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="module must be a torch.nn.Module"):
        recalibrate_batchnorm(lambda x: x, [torch.zeros(1)])
    with pytest.raises(TypeError, match="forward must be callable"):
        recalibrate_batchnorm(net(), [torch.zeros(1)], forward=3)
