"""One training step of an :class:`~equimod_plugin.branch.EquivarianceBranch`, start to end.

:meth:`EquivarianceBranch.views <equimod_plugin.branch.EquivarianceBranch.views>` opens a
:class:`Step`: it holds the views handed to the user's code, their parameters and the
backbone features of the originals and views. While it is open, a *backbone hook* connects
the user's own backbone calls on those views with the step; :meth:`EquivarianceBranch.loss
<equimod_plugin.branch.EquivarianceBranch.loss>` closes the step (the hook is removed) and
computes the term from :attr:`Step.features`. Nothing stays on the backbone outside a step.

Two hooks, one per pass mode:

- :class:`ServeViews` (``shared_pass=True``, the default, as the official EquiMod code): the
  branch has run the backbone once on ``cat[originals, views]`` (shared BatchNorm
  statistics); the user's call on a view returns that view's slice instead of computing it
  again. This needs the backbone's ``forward`` replaced for the step's duration (PyTorch hooks
  cannot skip a computation); a forward pre-hook hands the module actually called to it, so a
  ``DataParallel`` replica runs its own weights.
- :class:`CaptureViews` (``shared_pass=False``): nothing is intercepted. The branch runs the
  originals itself; a forward hook *records* the features the user's code computes for the
  views (per-pass BatchNorm statistics; same ``3B`` images in all).

A view is recognised only as the very tensor returned, unmodified: its identity, version
counter (bumped by every in-place edit) and data pointer must match. A view that was edited
in place, cast, copied or converted to ``channels_last`` is computed normally (and, in the
shared mode, counted as a miss so the branch can warn about the extra pass).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

__all__ = ["CaptureViews", "ServeViews", "Step"]

# keyword that ServeViews' pre-hook adds to the call, naming the module actually called
_MODULE_KEYWORD = "_equimod_called_module"


@dataclass
class Step:
    """The data one step hands from ``views()`` to ``loss()``.

    Attributes:
        views: the ``V`` views ``(B, 3, h, w)`` returned to the user's code, normalised.
        params: ``(V, B, P)`` the views' augmentation parameters (float32).
        features: ``1 + V`` entries, the backbone features of the originals then of each view,
            ``None`` until computed (by the shared pass, a captured call, or ``loss()``).
        hits: user calls on a view answered from :attr:`features` (shared mode).
        misses: user calls during the step on a tensor shaped like a view that is not one of
            the views as returned (a cast, copy, or in-place edit), computed again.
    """

    views: tuple[Tensor, ...]
    params: Tensor
    features: list[Tensor | None]
    versions: tuple[int, ...] = field(init=False)
    pointers: tuple[int, ...] = field(init=False)
    hits: int = 0
    misses: int = 0

    def __post_init__(self) -> None:
        self.versions = tuple(v._version for v in self.views)
        self.pointers = tuple(v.data_ptr() for v in self.views)

    def view_index(self, x: Any) -> int | None:
        """Index ``k`` if ``x`` is view ``k`` exactly as returned (not edited), else ``None``."""
        for k, view in enumerate(self.views):
            if x is view:
                unchanged = x._version == self.versions[k] and x.data_ptr() == self.pointers[k]
                return k if unchanged else None
        return None

    def looks_like_a_view(self, x: Any) -> bool:
        """Whether ``x`` has a view's shape (a copy or cast of one, most likely)."""
        return isinstance(x, Tensor) and x.shape == self.views[0].shape


class ServeViews:
    """Shared mode: the backbone answers a call on a view with its slice of the shared pass.

    Installed on ``backbone`` for one step; :meth:`remove` restores it exactly (the class's
    ``forward`` again, no hook left). Any other input, or the same view called on another
    module (a ``DataParallel`` replica), runs the called module's own ``forward``.
    """

    def __init__(self, backbone: nn.Module, step: Step) -> None:
        if "forward" in backbone.__dict__:
            raise ValueError(
                f"backbone ({type(backbone).__name__}) has a forward set on the instance; the "
                "shared pass replaces forward for a step and needs the class's forward: pass "
                "shared_pass=False to the branch"
            )
        self.backbone = backbone
        self.step = step
        self._handle: RemovableHandle | None = backbone.register_forward_pre_hook(
            self._name_module, with_kwargs=True
        )
        backbone.forward = self  # type: ignore[method-assign]

    @staticmethod
    def _name_module(
        module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return args, {**kwargs, _MODULE_KEYWORD: module}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        module = kwargs.pop(_MODULE_KEYWORD, self.backbone)
        if module is self.backbone and len(args) == 1 and not kwargs:
            k = self.step.view_index(args[0])
            if k is not None:
                self.step.hits += 1
                return self.step.features[1 + k]
            self.step.misses += self.step.looks_like_a_view(args[0])
        return type(module).forward(module, *args, **kwargs)

    def remove(self) -> None:
        """Give the backbone its class's ``forward`` back and drop the pre-hook."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
            if self.backbone.__dict__.get("forward") is self:
                del self.backbone.forward

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError(
            "a backbone cannot be pickled or deep-copied during an equivariance step (between "
            "views() and loss()); copy it before views() or after loss()"
        )


class CaptureViews:
    """Separate mode: records the features the user's backbone calls compute for the views.

    A forward hook on ``backbone`` for one step; it observes, never changes an output.
    """

    def __init__(self, backbone: nn.Module, step: Step) -> None:
        self.step = step
        self._handle: RemovableHandle | None = backbone.register_forward_hook(self._record)

    def _record(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if len(args) == 1 and isinstance(output, Tensor):
            k = self.step.view_index(args[0])
            if k is not None:
                self.step.features[1 + k] = output

    def remove(self) -> None:
        """Drop the forward hook."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
