"""A sequence of parameter-recording operations: views and their ``(B, P)`` parameters."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch
from torch import Tensor, nn

from equimod_plugin._checks import check_images, check_same_device, validation_enabled
from equimod_plugin.augment.functional import compute_dtype
from equimod_plugin.augment.layout import ParamLayout
from equimod_plugin.augment.ops import (
    Batch,
    GaussianBlur,
    ParamOp,
    ParamSampler,
    RandomResizedCrop,
    check_int,
)

_CHUNK_ELEMENTS = 2**20  # pixel values applied at a time by default (4 MB in float32)


class ParamAugment(ParamSampler, nn.Module):
    """Apply operations in order and return the views with the parameters they used.

    Sampling and applying are separate: parameters are drawn first (all operations, the
    whole batch), encoded in :attr:`layout`, and the views are then computed from the encoded
    parameters. ``aug(x, params=params)`` on the same batch therefore reproduces the views
    bit for bit.

    Args:
        ops: the operations, applied in this order. The first is usually a
            :class:`~equimod_plugin.augment.ops.RandomResizedCrop`, which sets the output size;
            a :class:`~equimod_plugin.augment.ops.GaussianBlur` after it is checked to fit
            that size (``ValueError`` naming ``kernel_size`` otherwise).
        encoding: the layout's encoding; must match the operations' own.
        chunk_size: samples applied at a time; default: as many as fit in about 4 MB of
            pixels (the whole batch at 32 px, 6 images at 224 px), which keeps the many
            per-pixel passes cache-friendly on CPU. Every op works per sample, so the views
            depend on it only through floating-point rounding (vectorised kernels may group
            samples differently): equal within ``1e-6``, not bit for bit.

    Shapes:
        - ``x``: ``(B, 3, H, W)`` float in [0, 1], any device and float dtype. Half-precision
          images (``float16``, ``bfloat16``) are computed in float32 and rounded once at the
          end; autocast does not apply (views keep the dtype of ``x``).
        - returns ``(views (B, 3, h, w), params (B, P))``; ``params`` is float32 on ``x``'s
          device, ``P = layout.param_dim``.

    Example:
        >>> import torch
        >>> from equimod_plugin import augment
        >>> aug = augment.byol(32, view=2, variant="cifar")
        >>> x = torch.rand(8, 3, 32, 32)
        >>> views, params = aug(x)
        >>> views.shape, params.shape
        (torch.Size([8, 3, 32, 32]), torch.Size([8, 18]))
        >>> torch.equal(aug(x, params=params)[0], views)
        True
    """

    def __init__(
        self, ops: Sequence[ParamOp], encoding: str = "normalized", chunk_size: int | None = None
    ) -> None:
        super().__init__()
        self.chunk_size = None if chunk_size is None else check_int(chunk_size, "chunk_size")
        if len(ops) == 0:
            raise ValueError("ops must contain at least one operation")
        size = None  # size of the images each op sees, where a crop fixes it
        for op in ops:
            if not isinstance(op, ParamOp):
                raise TypeError(f"ops must be ParamOp instances, got {type(op).__name__}")
            if op.encoding not in (None, encoding):
                raise ValueError(
                    f"{type(op).__name__} uses encoding {op.encoding!r} but the pipeline "
                    f"uses {encoding!r}"
                )
            if isinstance(op, RandomResizedCrop):
                size = op.size
            elif isinstance(op, GaussianBlur) and size is not None:
                op.check_image_size(size, "views")
        self.ops = nn.ModuleList(ops)
        self.layout = ParamLayout(tuple(f for op in ops for f in op.fields), encoding)  # type: ignore[arg-type]
        self._slices = []
        start = 0
        for op in ops:
            self._slices.append(slice(start, start + op.param_dim))
            start += op.param_dim

    @property
    def output_size(self) -> tuple[int, int] | None:
        """``(h, w)`` of the views if a crop sets it, else ``None`` (same as the input)."""
        for op in self.ops:
            if isinstance(op, RandomResizedCrop):
                return op.size
        return None

    def sample(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw parameters ``(B, P)`` for the batch ``x`` without applying them."""
        check_images(x)
        return self._sample(x, generator)

    def _sample(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        b, _, height, width = x.shape
        return self._sample_batch(Batch(b, height, width, x.device), generator)

    def _sample_batch(self, batch: Batch, generator: torch.Generator | None) -> Tensor:
        if batch.size == 0:
            return self.layout.identity(0, device=batch.device)
        return torch.cat(
            [op.encode(op.draw(batch, generator), batch.image_size) for op in self.ops], dim=1
        )

    def forward(
        self,
        x: Tensor,
        params: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Augment ``x`` ``(B, 3, H, W)``; with ``params`` ``(B, P)``, replay those parameters.

        Args:
            x: images in [0, 1].
            params: parameters from an earlier call (or :meth:`identity_params`); drawn
                when ``None``.
            generator: optional ``torch.Generator`` for the draws (default: the global RNG
                of ``x``'s device).

        Returns:
            ``(views, params)``.
        """
        check_images(x)
        if params is not None:
            check_same_device(x=x, params=params)
            self.layout.check(params, batch_size=x.shape[0])
            if validation_enabled():  # value checks: skipped inside validation(False)
                size = (x.shape[2], x.shape[3])
                for op, s in zip(self.ops, self._slices, strict=True):
                    op.check_values(params[:, s], size)
        return self._augment(x, params, generator)

    def _augment(
        self, x: Tensor, params: Tensor | None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """:meth:`forward` for images and parameters the caller has validated already."""
        if params is None:
            params = self._sample(x, generator)
        if x.shape[0] == 0:
            size = self.output_size or tuple(x.shape[-2:])
            return x.new_empty(0, x.shape[1], *size), params
        chunk = self.chunk_size or max(1, _CHUNK_ELEMENTS // x[0].numel())
        device = x.device.type
        autocast = torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)
        with torch.autocast(device, enabled=False) if autocast else nullcontext():
            chunks = [
                self._apply_ops(x[i : i + chunk], params[i : i + chunk])
                for i in range(0, x.shape[0], chunk)
            ]
        return (chunks[0] if len(chunks) == 1 else torch.cat(chunks)), params

    def _apply_ops(self, x: Tensor, params: Tensor) -> Tensor:
        """All ops on one chunk, in :func:`compute_dtype` (one rounding for half precision)."""
        out_dtype, x = x.dtype, x.to(compute_dtype(x.dtype))
        for op, s in zip(self.ops, self._slices, strict=True):
            x = op.apply(x, params[:, s])
        return x.to(out_dtype)

    def identity_params(self, batch_size: int, device: torch.device | str | None = None) -> Tensor:
        """Parameters ``(batch_size, P)`` that map a batch to itself.

        Exact when the input already has the output size; the crop of the normalized
        encoding is the whole image at any input size (then the views are the inputs resized).
        ``batch_size`` is an int >= 0.
        """
        return self.layout.identity(batch_size, device=device)

    def extra_repr(self) -> str:
        return f"param_dim={self.layout.param_dim}, encoding={self.layout.encoding!r}"
