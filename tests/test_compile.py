"""torch.compile with inductor (gcc on CPU) gives the eager results; few, tiny compiled functions.

``tests/test_standard.py`` checks that dynamo captures every public module (``fullgraph=True``
except the augmentations) with the ``aot_eager`` backend; here inductor generates the code for
an EquiMod term (head and loss, forward and backward) and for an augmentation pipeline.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

from equimod_plugin import EquiModCosineLoss, EquiModTerm, augment, validation

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def fresh_dynamo(monkeypatch: pytest.MonkeyPatch):
    """Reset dynamo; one inductor cache directory per ATEN_CPU_CAPABILITY.

    Inductor's on-disk graph cache does not key on the capability: the kernels generated under
    AVX2 are served again under ``ATEN_CPU_CAPABILITY=default`` (as CI re-runs the exactness
    tests) and fail to compile there ("'at::vec' has not been declared").
    """
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    capability = torch.backends.cpu.get_cpu_capability().lower()
    base = os.environ.get("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", os.path.join(base, f"capability-{capability}"))
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_term_forward_and_backward_compile_fullgraph_with_inductor() -> None:
    torch.manual_seed(0)
    term = EquiModTerm(6, 5, hidden_dim=8, output_dim=4, param_embed_dim=4)
    inputs = (torch.randn(4, 6), torch.randn(2, 4, 6), torch.randn(2, 4, 5))

    def step(module: torch.nn.Module) -> tuple[torch.Tensor, list[torch.Tensor]]:
        module.zero_grad()
        loss = module(*inputs)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in term.parameters()]

    expected_loss, expected_grads = step(term)
    compiled = torch.compile(term, fullgraph=True)
    with validation(False):  # the value checks read tensors back: a graph break
        loss, grads = step(compiled)
    torch.testing.assert_close(loss, expected_loss, atol=1e-5, rtol=1e-5)
    for g, e in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-4)


@pytest.mark.exactness
def test_augmentation_compiles_fullgraph_with_inductor_and_replays_the_eager_views() -> None:
    """Every operation compiles whole: under ``torch.compile`` the gated ones compute the whole
    batch and select per sample (no ``nonzero``, no data-dependent shape)."""
    ops = [
        augment.RandomResizedCrop(8),
        augment.HorizontalFlip(),
        augment.ColorJitter(0.4, 0.4, 0.4, 0.1),
        augment.RandomGrayscale(0.5),
        augment.GaussianBlur(0.5, kernel_size=3),
        augment.RandomSolarize(0.5),
    ]
    aug = augment.ParamAugment(ops)
    x = torch.rand(6, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    params = aug.sample(x, generator=torch.Generator().manual_seed(1))
    expected, _ = aug(x, params=params)
    compiled = torch.compile(aug, fullgraph=True)
    with validation(False):  # the range check of the images reads them back: a graph break
        views, replayed = compiled(x, params=params)
    assert torch.equal(replayed, params)
    torch.testing.assert_close(views, expected, atol=1e-5, rtol=1e-5)


def test_value_checks_still_run_in_a_compiled_module_with_graph_breaks() -> None:
    compiled = torch.compile(EquiModCosineLoss(), backend="aot_eager")
    y = torch.randn(2, 3, 4)
    assert math.isfinite(float(compiled(y, y + 0.1)))
    with pytest.raises(ValueError, match=r"y_pred\[0\] must be finite"):
        compiled(y, torch.full_like(y, math.nan))
