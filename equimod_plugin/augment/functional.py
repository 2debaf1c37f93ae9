"""Batched image operations with one parameter set per sample.

Stateless functions on ``(B, 3, H, W)`` float images in [0, 1]; every parameter tensor has
one row per sample. The formulas follow torchvision's tensor transforms (the ones lightly's
transforms use), with the differences documented per function. Half-precision images
(``float16``, ``bfloat16``) are computed in float32 (:func:`compute_dtype`) and rounded back
once at the end, so they differ from float32 results only by that rounding.
"""

from __future__ import annotations

import math

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor

#: torchvision's ``rgb_to_grayscale`` weights (ITU-R 601-2 luma).
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)

#: Colour-jitter operation ids, in torchvision's ``ColorJitter`` numbering.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype images of ``dtype`` are computed in: float32 for half precision, else itself.

    Example:
        >>> compute_dtype(torch.bfloat16), compute_dtype(torch.float64)
        (torch.float32, torch.float64)
    """
    return torch.promote_types(dtype, torch.float32)


def resized_crop(
    x: Tensor, boxes: Tensor, size: tuple[int, int], interpolation: str = "bilinear"
) -> Tensor:
    """Crop a box per sample and resize it to ``size``, in one ``grid_sample`` call.

    Args:
        x: images ``(B, C, H, W)``.
        boxes: integer-valued boxes ``(B, 4)`` as ``(top, left, height, width)`` in pixels.
        size: output ``(height, width)``.
        interpolation: ``"bilinear"`` or ``"bicubic"``.

    Returns:
        ``(B, C, size[0], size[1])``. Output pixel centres sample the box at the positions
        torchvision's ``resized_crop`` uses (half-pixel convention, clamped to the box's edge
        pixels). Unlike torchvision, a box larger than the output is not low-pass filtered
        first (no antialiasing), and bicubic taps next to the box edge may read the pixels just
        outside it. A box that is the whole image at the output size returns the input exactly.
        Coordinates and resampling are in :func:`compute_dtype` (float32 for half precision:
        a bf16 grid cannot address 224 columns, and CPU ``grid_sample`` gives NaN in bf16).
    """
    b, _, h, w = x.shape
    out_h, out_w = size
    dtype = compute_dtype(x.dtype)
    top, left, box_h, box_w = boxes.to(dtype).unbind(-1)
    u = (torch.arange(out_w, device=x.device, dtype=dtype) + 0.5) / out_w
    v = (torch.arange(out_h, device=x.device, dtype=dtype) + 0.5) / out_h
    # pixel-centre coordinates inside the box, clamped to its edge pixels like resizing the
    # cropped image would (torchvision crops, then resizes)
    px = left[:, None] + (u[None] * box_w[:, None] - 0.5).clamp(min=0)
    px = torch.minimum(px, (left + box_w - 1)[:, None])
    py = top[:, None] + (v[None] * box_h[:, None] - 0.5).clamp(min=0)
    py = torch.minimum(py, (top + box_h - 1)[:, None])
    gx = (2 * px + 1) / w - 1
    gy = (2 * py + 1) / h - 1
    grid = torch.stack(
        (gx[:, None, :].expand(b, out_h, out_w), gy[:, :, None].expand(b, out_h, out_w)), dim=-1
    )
    out = F.grid_sample(
        x.to(dtype), grid, mode=interpolation, padding_mode="border", align_corners=False
    )
    if interpolation == "bicubic":
        out = out.clamp(0, 1)
    out = out.to(x.dtype)
    if (h, w) == (out_h, out_w):
        whole = (boxes == boxes.new_tensor([0, 0, h, w])).all(dim=1)
        out = torch.where(whole[:, None, None, None], x, out)
    return out


def hflip(x: Tensor, flip: Tensor) -> Tensor:
    """Mirror the samples whose ``flip`` ``(B,)`` is true, left to right."""
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def grayscale(x: Tensor) -> Tensor:
    """torchvision's grayscale ``(B, 3, H, W) -> (B, 3, H, W)``, the luma in every channel."""
    dtype = compute_dtype(x.dtype)
    w = torch.tensor(GRAY_WEIGHTS, dtype=dtype, device=x.device)
    return torch.einsum("bchw,c->bhw", x.to(dtype), w).to(x.dtype)[:, None].expand_as(x)


def random_grayscale(x: Tensor, apply: Tensor) -> Tensor:
    """Grayscale the samples whose ``apply`` ``(B,)`` is true."""
    return torch.where(apply[:, None, None, None], grayscale(x), x)


def solarize(x: Tensor, apply: Tensor, threshold: float = 0.5) -> Tensor:
    """Invert the pixels ``>= threshold`` of the samples whose ``apply`` ``(B,)`` is true."""
    return torch.where(apply[:, None, None, None] & (x >= threshold), 1 - x, x)


def gaussian_blur(x: Tensor, apply: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Blur the samples whose ``apply`` ``(B,)`` is true with their own ``sigma`` ``(B,)``.

    Isotropic Gaussian, ``kernel_size`` taps, reflect padding (torchvision's ``GaussianBlur``).
    Only the selected samples are computed.
    """
    idx = apply.nonzero().squeeze(1)
    if idx.numel() == 0:
        return x
    dtype = compute_dtype(x.dtype)
    s = sigma[idx, None].expand(-1, 2).to(dtype)
    blurred = kornia.filters.gaussian_blur2d(x[idx].to(dtype), (kernel_size, kernel_size), s)
    return x.index_copy(0, idx, blurred.to(x.dtype))


def color_jitter(x: Tensor, apply: Tensor, order: Tensor, factors: Tensor) -> Tensor:
    """torchvision's ``ColorJitter`` with one order and one set of factors per sample.

    Brightness, contrast and saturation are affine colour maps; each step applies one
    ``(3, 3)`` matrix and offset per sample in a single batched product, then clamps to
    [0, 1] as torchvision does after every operation. The hue shift is torchvision's HSV
    shift (kornia's ``adjust_hue``), computed only for the samples whose step it is.
    Linear hue rotations (YIQ, or about the grey axis) are not offered: on saturated
    colours they differ from the HSV shift by about as much as the shift itself.

    Args:
        x: images ``(B, 3, H, W)`` in [0, 1].
        apply: ``(B,)`` bool; samples where it is false are returned unchanged.
        order: ``(B, 4)`` integer permutation of ``BRIGHTNESS, CONTRAST, SATURATION, HUE``:
            ``order[b, k]`` is the operation applied at step ``k``.
        factors: ``(B, 4)`` brightness, contrast and saturation factors (1 = identity) and the
            hue shift in turns (0 = identity, torchvision's ``hue_factor``).

    Returns:
        ``(B, 3, H, W)`` jittered images, computed in :func:`compute_dtype`.
    """
    b, c, h, w = x.shape
    out_dtype, x = x.dtype, x.to(compute_dtype(x.dtype))
    gray = x.new_tensor(GRAY_WEIGHTS)
    eye = torch.eye(3, dtype=x.dtype, device=x.device).expand(b, 3, 3)
    bright, contrast, sat, hue = factors.to(x.dtype).unbind(-1)
    sat_map = sat[:, None, None] * eye + (1 - sat)[:, None, None] * gray.expand(b, 3, 3)
    zero = torch.zeros(b, 3, dtype=x.dtype, device=x.device)
    for step in range(4):
        op = torch.where(apply, order[:, step], -1)[:, None, None]
        matrix = torch.where(op == BRIGHTNESS, bright[:, None, None] * eye, eye)
        matrix = torch.where(op == CONTRAST, contrast[:, None, None] * eye, matrix)
        matrix = torch.where(op == SATURATION, sat_map, matrix)
        mean = (x.mean(dim=(2, 3)) @ gray)[:, None].expand(b, 3)
        offset = torch.where(op[:, :, 0] == CONTRAST, (1 - contrast)[:, None] * mean, zero)
        flat = torch.baddbmm(offset[:, :, None], matrix, x.reshape(b, c, h * w))
        x = flat.clamp_(0, 1).reshape(b, c, h, w)
        idx = (op[:, 0, 0] == HUE).nonzero().squeeze(1)
        if idx.numel():
            shifted = kornia.enhance.adjust_hue(x[idx], hue[idx] * (2 * math.pi))
            x = x.index_copy(0, idx, shifted.clamp(0, 1).to(x.dtype))
    return x.to(out_dtype)
