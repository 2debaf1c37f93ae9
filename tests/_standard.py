"""A standard test set for every public ``nn.Module`` (in the spirit of kornia's BaseTester).

A :class:`Case` describes one module: how to build it, its inputs at a batch size and dtype,
the shape of its outputs and the bad inputs it must reject. :class:`StandardTests` holds the
tests, written once; ``tests/test_standard.py`` applies them to every case:

- smoke: finite outputs, identical on a second call (eval mode);
- batch sizes: output shapes at several batch sizes;
- exceptions: each bad input raises the expected error, with a message naming the argument;
- gradcheck: ``torch.autograd.gradcheck`` in float64 at tiny sizes;
- module state: ``train()`` / ``eval()`` reach every submodule, ``.to(float64)`` converts every
  parameter and buffer and gives the float32 results in float64, ``state_dict`` survives
  ``torch.save`` / ``torch.load(weights_only=True)`` into a fresh module;
- compile: ``torch.compile`` (``fullgraph=True`` where possible, ``aot_eager`` backend) gives
  the eager results.

Bitwise assertions compare the same computation twice (a replay on the same inputs), which is
exact on any CPU; they are marked ``exactness``. Different computations (float64 against
float32, compiled against eager) are compared within a stated tolerance.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves

from equimod_plugin import validation

Inputs = tuple[Any, ...]


@dataclass
class Case:
    """One public module under the standard tests.

    Attributes:
        name: test id.
        make: builds the module (seeded inside, so two calls give the same weights).
        inputs: ``(batch_size, dtype) -> args`` of ``forward``; seeded, deterministic.
        shapes: ``batch_size -> `` expected shapes of the output tensors, in order.
        bad: ``(args factory, exception type, message regex)`` the module must raise.
        grad_args: indices of the args gradcheck differentiates.
        train_min_batch: smallest batch in training mode (BatchNorm needs 2).
        fullgraph: whether ``torch.compile(fullgraph=True)`` is expected to work (inside
            ``validation(False)``); otherwise compiled with graph breaks.
        xfail: test name -> reason, for known gaps (strict xfail).
    """

    name: str
    make: Callable[[], nn.Module]
    inputs: Callable[[int, torch.dtype], Inputs]
    shapes: Callable[[int], Sequence[tuple[int, ...]]]
    bad: Sequence[tuple[Callable[[], Inputs], type[Exception], str]] = ()
    grad_args: Sequence[int] = (0,)
    train_min_batch: int = 1
    fullgraph: bool = True
    batch_sizes: Sequence[int] = (1, 2, 5)
    xfail: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name


def outputs(result: Any) -> list[Tensor]:
    """The output tensors of a forward call, in order."""
    return [t for t in tree_leaves(result) if isinstance(t, Tensor)]


def run(module: nn.Module, args: Inputs) -> list[Tensor]:
    return outputs(module(*args))


class StandardTests:
    """The tests; a subclass is parametrised with the fixture ``case`` (a :class:`Case`)."""

    @pytest.mark.exactness
    def test_smoke(self, case: Case) -> None:
        """Finite outputs; a second call on the same inputs is bit-identical (a replay)."""
        module = case.make().eval()
        args = case.inputs(3, torch.float32)
        first, second = run(module, args), run(module, args)
        assert first, "forward returned no tensor"
        for a, b in zip(first, second, strict=True):
            assert torch.isfinite(a).all()
            assert torch.equal(a, b)

    def test_batch_sizes(self, case: Case) -> None:
        module = case.make()
        for batch in case.batch_sizes:
            module.train(batch >= case.train_min_batch)
            out = run(module, case.inputs(batch, torch.float32))
            assert [tuple(t.shape) for t in out] == [tuple(s) for s in case.shapes(batch)]
            assert all(torch.isfinite(t).all() for t in out)

    def test_exceptions(self, case: Case) -> None:
        assert case.bad, "every case lists bad inputs"
        module = case.make().eval()
        for make_args, error, match in case.bad:
            with pytest.raises(error, match=match):
                module(*make_args())

    def test_gradcheck(self, case: Case) -> None:
        module = case.make().double().train(2 >= case.train_min_batch)
        args = list(case.inputs(2, torch.float64))
        for i in case.grad_args:
            args[i] = args[i].detach().requires_grad_()

        def fn(*diff: Tensor) -> tuple[Tensor, ...]:
            full = list(args)
            for i, t in zip(case.grad_args, diff, strict=True):
                full[i] = t
            return tuple(t for t in run(module, tuple(full)) if t.is_floating_point())

        diff = tuple(args[i] for i in case.grad_args)
        assert torch.autograd.gradcheck(fn, diff, eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=True)

    def test_train_eval_modes(self, case: Case) -> None:
        module = case.make()
        assert all(m.training for m in module.modules())
        module.eval()
        assert not any(m.training for m in module.modules())
        run(module, case.inputs(1, torch.float32))  # eval mode takes any batch size
        module.train()
        assert all(m.training for m in module.modules())

    def test_to_float64(self, case: Case) -> None:
        module = case.make().eval()
        expected = run(module, case.inputs(3, torch.float32))
        converted = copy.deepcopy(module).to(torch.float64)
        tensors = [*converted.parameters(), *converted.buffers()]
        assert all(t.dtype == torch.float64 for t in tensors if t.is_floating_point())
        out = run(converted, case.inputs(3, torch.float64))
        assert out[0].dtype == torch.float64
        for a, b in zip(out, expected, strict=True):
            torch.testing.assert_close(a.float(), b, atol=1e-4, rtol=1e-4)

    @pytest.mark.exactness
    def test_state_dict_round_trip(self, case: Case) -> None:
        """Loaded state is bit-identical; the fresh module replays the outputs bit for bit."""
        module = case.make().train(3 >= case.train_min_batch)
        run(module, case.inputs(3, torch.float32))  # updates BatchNorm statistics
        with torch.no_grad():
            for p in module.parameters():
                p.add_(0.01 * torch.randn_like(p))  # weights that differ from a fresh module
        buffer = io.BytesIO()
        torch.save(module.state_dict(), buffer)
        buffer.seek(0)
        state = torch.load(buffer, weights_only=True)
        fresh = case.make()
        assert fresh.load_state_dict(state) is not None
        assert state.keys() == module.state_dict().keys()
        for key, value in module.state_dict().items():
            assert torch.equal(fresh.state_dict()[key], value), key
        module.eval(), fresh.eval()
        args = case.inputs(3, torch.float32)
        for a, b in zip(run(fresh, args), run(module, args), strict=True):
            assert torch.equal(a, b)

    @pytest.mark.slow
    def test_compile(self, case: Case) -> None:
        """Dynamo captures the module (whole, where ``fullgraph``) with AOT autograd.

        The ``aot_eager`` backend checks the capture without inductor's C++ code generation,
        which takes minutes for all modules; ``tests/test_compile.py`` runs inductor on a few.
        """
        module = case.make().eval()
        args = case.inputs(3, torch.float32)
        expected = run(module, args)
        torch._dynamo.reset()
        compiled = torch.compile(
            module, fullgraph=case.fullgraph, dynamic=False, backend="aot_eager"
        )
        with validation(not case.fullgraph):
            out = run(compiled, args)
        for a, b in zip(out, expected, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
