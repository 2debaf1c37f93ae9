"""Input validation shared by the public entry points.

Every check raises a ``ValueError`` (or ``TypeError`` for a wrong type) whose message names
the argument and says what was expected, so that bad input never broadcasts silently.

The checks of *values* (finite, in [0, 1]) read the tensor back to the host: a device sync on
GPU, and a graph break under ``torch.compile``. :func:`validation` turns them off for a block;
the checks of type, shape, dtype and device, which cost nothing, always run. The switch is a
:class:`contextvars.ContextVar`: it holds per thread and per asyncio task, so a block in one
thread never turns the checks off in another.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor

__all__ = [
    "check_flags",
    "check_images",
    "check_matrix",
    "check_positive_int",
    "check_same_device",
    "check_views",
    "validation",
    "validation_enabled",
]

_validate_values: ContextVar[bool] = ContextVar("equimod_plugin_validate_values", default=True)


def validation_enabled() -> bool:
    """Whether the value checks (finite, range) run; ``True`` unless :func:`validation` is off.

    The value is the current thread's (or asyncio task's): see :func:`validation`.
    """
    return _validate_values.get()


@contextmanager
def validation(enabled: bool) -> Iterator[None]:
    """Turn the value checks (NaN / Inf, images in [0, 1]) on or off inside the block.

    Type, shape, dtype and device checks still run. Off, no check reads a tensor back to the
    host (no device sync per call) and the heads, losses and steering operator compile with
    ``torch.compile(fullgraph=True)``; NaN and out-of-range values then pass unnoticed.

    The setting belongs to the current thread and asyncio task (a
    :class:`contextvars.ContextVar`): blocks in other threads, overlapping or not, neither see
    nor change it, and a thread started inside the block starts with the checks on (unless
    the interpreter copies the context into new threads). On exit the value from before the
    block is restored.

    Example:
        >>> import torch
        >>> from equimod_plugin import EquiModCosineLoss, validation
        >>> y = torch.full((1, 2, 4), float("nan"))
        >>> with validation(False):
        ...     bool(EquiModCosineLoss()(y, y).isnan())
        True
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {enabled!r}")
    token = _validate_values.set(enabled)
    try:
        yield
    finally:
        _validate_values.reset(token)


def _describe(t: Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"


def _has_values(t: Tensor) -> bool:
    """Whether the value checks apply: on, and ``t`` has elements with data (not "meta")."""
    return _validate_values.get() and t.numel() > 0 and t.device.type != "meta"


def check_images(x: Tensor, name: str = "x", channels: int | None = 3) -> None:
    """Check a batch of images: a float tensor ``(B, C, H, W)`` with values in [0, 1].

    NaN fails the range check, so it is rejected too.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(x)}")
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got {_describe(x)}")
    if not x.is_floating_point():
        raise ValueError(
            f"{name} must be a floating point image batch with values in [0, 1], got "
            f"{_describe(x)}; convert uint8 images with x.float() / 255"
        )
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"{name} must have {channels} channels (B, {channels}, H, W), got {_describe(x)}"
        )
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"{name} must have a positive height and width, got {_describe(x)}")
    if not _has_values(x):
        return
    low, high = (v.item() for v in torch.aminmax(x))  # one pass; NaN propagates to both
    if not (low >= 0 and high <= 1):
        raise ValueError(
            f"{name} must have values in [0, 1] (no NaN), got min {low:.4g}, max {high:.4g}; "
            "apply normalisation after the augmentation, not before"
        )


def check_matrix(
    t: Tensor,
    name: str,
    rows: int | None = None,
    cols: int | None = None,
    what: str = "D",
) -> None:
    """Check a finite float matrix ``(rows, cols)``; ``None`` leaves a size free."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, {what}), got {type(t)}")
    expected = f"({'B' if rows is None else rows}, {what if cols is None else cols})"
    if t.ndim != 2:
        raise ValueError(f"{name} must have shape {expected}, got {_describe(t)}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating point tensor {expected}, got {_describe(t)}")
    if (rows is not None and t.shape[0] != rows) or (cols is not None and t.shape[1] != cols):
        raise ValueError(f"{name} must have shape {expected}, got {_describe(t)}")
    if _has_values(t) and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got NaN or Inf in {_describe(t)}")


def check_same_device(**tensors: Tensor) -> None:
    """Check that all tensors live on one device."""
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listed = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"tensors must be on one device, got {listed}")


def check_like(reference: Tensor, reference_name: str, **tensors: Tensor) -> None:
    """Inputs share ``reference``'s device and one dtype (no silent promotion).

    Under autocast for the reference's device, mixed dtypes are autocast's to resolve (e.g.
    bf16 features next to float32 parameters), so only the device is checked.
    """
    check_same_device(**tensors, **{reference_name: reference})
    if torch.is_autocast_enabled(reference.device.type):
        return
    dtypes = {name: t.dtype for name, t in tensors.items()}
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"{n} {d}" for n, d in dtypes.items())
        raise ValueError(f"inputs must share one dtype, got {listed}")


def check_views(
    t: Tensor,
    name: str,
    views: int | None = None,
    rows: int | None = None,
    cols: int | None = None,
    what: str = "D",
) -> None:
    """Check a non-empty finite float stack ``(V, B, what)`` of per-view matrices.

    ``None`` leaves a size free; each view ``t[k]`` is checked with ``check_matrix``.
    """
    expected = f"({'V' if views is None else views}, {'B' if rows is None else rows}, {what})"
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {expected}, got {type(t)}")
    if t.ndim != 3 or (views is not None and t.shape[0] != views):
        raise ValueError(f"{name} must have shape {expected}, got shape {tuple(t.shape)}")
    if t.shape[0] < 1 or t.shape[1] < 1:
        raise ValueError(
            f"{name} must have at least one view and one sample {expected}, "
            f"got shape {tuple(t.shape)}"
        )
    for k, view in enumerate(t):
        check_matrix(view, f"{name}[{k}]", rows=rows, cols=cols, what=what)


def check_flags(**flags: object) -> None:
    """Each keyword must be a ``bool`` (``1``, ``"yes"`` and ``None`` are rejected by name)."""
    for name, flag in flags.items():
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {flag!r} (pass True or False)")


def check_positive_int(value: object, name: str, meaning: str = "") -> None:
    """``value`` must be an ``int`` >= 1 (not a bool); ``meaning`` says what it sizes."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        what = f" ({meaning})" if meaning else ""
        raise ValueError(f"{name} must be a positive int{what}, got {value!r}")
