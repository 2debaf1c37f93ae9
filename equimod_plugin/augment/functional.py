"""Batched image operations with one parameter set per sample.

Stateless functions on ``(B, 3, H, W)`` float images in [0, 1]; every parameter tensor has
one row per sample. The formulas follow torchvision's tensor transforms (the ones lightly's
transforms use), with the differences documented per function. Half-precision images
(``float16``, ``bfloat16``) are computed in float32 (:func:`compute_dtype`) and rounded back
once at the end, so they differ from float32 results only by that rounding. No function
writes into its input (but :func:`apply_to_samples` with ``inplace=True``, on a buffer its
caller owns).

Speed on CPU (``benchmarks/augment_throughput.py``): per-pixel work is plain arithmetic on
float tensors. A gated operation computes only the samples it applies to on CPU, and the
whole batch with an exact per-sample selection elsewhere (:func:`apply_to_samples`). Boolean
``torch.where`` and ``remainder`` over whole images are avoided: on CPU they run 10-30x slower
than a multiply.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

#: torchvision's ``rgb_to_grayscale`` weights (ITU-R 601-2 luma).
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)

#: Images of at least this many pixels are blurred in ``channels_last`` (:func:`gaussian_blur`).
CHANNELS_LAST_PIXELS = 64 * 64

#: Colour-jitter operation ids, in torchvision's ``ColorJitter`` numbering.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype images of ``dtype`` are computed in: float32 for half precision, else itself.

    Example:
        >>> compute_dtype(torch.bfloat16), compute_dtype(torch.float64)
        (torch.float32, torch.float64)
    """
    return torch.promote_types(dtype, torch.float32)


def selected_only(device: torch.device) -> bool:
    """Whether gated operations compute only their selected samples: on CPU, in eager mode.

    Under ``torch.compile`` they compute the whole batch, so the graph has no data-dependent
    shape (it compiles whole, ``fullgraph=True``).
    """
    return device.type == "cpu" and not torch.compiler.is_compiling()


def apply_to_samples(
    x: Tensor, apply: Tensor, fn: Callable[..., Tensor], *args: Tensor, inplace: bool = False
) -> Tensor:
    """``fn`` on the samples of ``x`` where ``apply`` is true; the others unchanged.

    On CPU only the selected samples are computed (an index costs no device synchronisation
    there; :func:`selected_only`). On other devices, and under ``torch.compile``, ``fn`` runs
    on the whole batch and each sample is taken from its result or from ``x`` by a 0 / 1
    ``lerp``, which is exact: no host synchronisation and no data-dependent shape (CUDA
    graphs, ``torch.compile``). Both give the same values.

    Args:
        x: images ``(B, C, H, W)``.
        apply: ``(B,)`` bool.
        fn: maps images ``(n, C, H, W)`` and the rows of ``args`` for them to ``(n, C, H, W)``,
            sample by sample.
        args: per-sample tensors ``(B, ...)`` passed to ``fn`` (their selected rows on CPU).
        inplace: the result may be written into ``x`` (which the caller owns): on CPU it is.

    Returns:
        ``(B, C, H, W)``: use the returned tensor. It is ``x`` itself on CPU when ``inplace``
        or when nothing is selected.

    Example:
        >>> x = torch.rand(4, 3, 8, 8)
        >>> apply = torch.tensor([True, False, True, False])
        >>> y = apply_to_samples(x, apply, lambda images: images.flip(-1))
        >>> torch.equal(y[0], x[0].flip(-1)), torch.equal(y[1], x[1])
        (True, True)
    """
    if not selected_only(x.device):
        weight = apply.to(x.dtype).view(-1, *(1,) * (x.ndim - 1))
        return torch.lerp(x, fn(x, *args), weight)
    idx = apply.nonzero().squeeze(1)
    if idx.numel() == 0:
        return x
    if idx.numel() == x.shape[0]:
        out = fn(x, *args)
        return x.copy_(out) if inplace else out
    selected = fn(x.index_select(0, idx), *(a.index_select(0, idx) for a in args))
    return x.index_copy_(0, idx, selected) if inplace else x.index_copy(0, idx, selected)


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
        out.clamp_(0, 1)
    out = out.to(x.dtype)
    if (h, w) == (out_h, out_w):
        whole = (boxes == boxes.new_tensor([0, 0, h, w])).all(dim=1)
        out = apply_to_samples(out, whole, lambda _, image: image, x, inplace=True)
    return out


def hflip(x: Tensor, flip: Tensor) -> Tensor:
    """Mirror the samples whose ``flip`` ``(B,)`` is true, left to right."""
    return apply_to_samples(x, flip, lambda images: images.flip(-1))


def luma(x: Tensor) -> Tensor:
    """torchvision's grayscale value ``(B, 1, H, W)`` of images ``(B, 3, H, W)``, in ``x``'s dtype.

    Example:
        >>> luma(torch.ones(1, 3, 2, 2)).shape
        torch.Size([1, 1, 2, 2])
    """
    r, g, b = x.unbind(1)
    return (
        (r * GRAY_WEIGHTS[0]).add_(g, alpha=GRAY_WEIGHTS[1]).add_(b, alpha=GRAY_WEIGHTS[2])[:, None]
    )


def grayscale(x: Tensor) -> Tensor:
    """torchvision's grayscale ``(B, 3, H, W) -> (B, 3, H, W)``, the luma in every channel."""
    return luma(x.to(compute_dtype(x.dtype))).to(x.dtype).expand_as(x)


def random_grayscale(x: Tensor, apply: Tensor) -> Tensor:
    """Grayscale the samples whose ``apply`` ``(B,)`` is true."""
    return apply_to_samples(x, apply, grayscale)


def _solarize(x: Tensor, threshold: float) -> Tensor:
    inverted = torch.ge(x, threshold, out=torch.empty_like(x))  # 0 / 1, faster than a bool mask
    return torch.lerp(x, 1 - x, inverted)


def solarize(x: Tensor, apply: Tensor, threshold: float = 0.5) -> Tensor:
    """Invert the pixels ``>= threshold`` of the samples whose ``apply`` ``(B,)`` is true."""
    return apply_to_samples(x, apply, lambda images: _solarize(images, threshold))


def gaussian_kernels(sigma: Tensor, kernel_size: int) -> Tensor:
    """torchvision's 1-D Gaussian kernel of ``kernel_size`` taps for each ``sigma`` ``(B,)``:
    ``(B, kernel_size)``, each summing to 1.

    Example:
        >>> gaussian_kernels(torch.tensor([1.0]), 3).round(decimals=4)
        tensor([[0.2741, 0.4519, 0.2741]])
    """
    half = (kernel_size - 1) / 2
    taps = torch.linspace(-half, half, kernel_size, device=sigma.device, dtype=sigma.dtype)
    pdf = torch.exp(-0.5 * (taps / sigma[:, None]) ** 2)
    return pdf / pdf.sum(dim=1, keepdim=True)


def gaussian_blur(x: Tensor, apply: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Blur the samples whose ``apply`` ``(B,)`` is true with their own ``sigma`` ``(B,)``.

    Isotropic Gaussian, ``kernel_size`` taps, reflect padding (torchvision's ``GaussianBlur``):
    two depthwise convolutions, one kernel per sample and channel. Images of at least
    :data:`CHANNELS_LAST_PIXELS` pixels are convolved in ``channels_last``: on CPU (oneDNN) it
    was 25-40 % faster at 224 px and 35 % slower at 32 px than the default layout
    (``benchmarks/augment_throughput.py``, AMD EPYC).
    """
    dtype = compute_dtype(x.dtype)
    pad = kernel_size // 2

    def blur(images: Tensor, s: Tensor) -> Tensor:
        b, c, h, w = images.shape
        kernels = gaussian_kernels(s.to(dtype), kernel_size).repeat_interleave(c, dim=0)
        padded = F.pad(images.to(dtype), (pad, pad, pad, pad), mode="reflect")
        padded = padded.view(1, b * c, h + 2 * pad, w + 2 * pad)
        if h * w >= CHANNELS_LAST_PIXELS:
            padded = padded.contiguous(memory_format=torch.channels_last)
        rows = F.conv2d(padded, kernels.view(b * c, 1, 1, kernel_size), groups=b * c)
        out = F.conv2d(rows, kernels.view(b * c, 1, kernel_size, 1), groups=b * c)
        out = out.reshape(b, c, h, w).contiguous()
        # a weighted mean of [0, 1] pixels, up to float round-off (1 ulp above 1 next to the
        # bicubic crop's clamped pixels): kept in [0, 1]
        return out.clamp_(0, 1).to(x.dtype)

    # sigma 0 (not applied) would divide by zero on the whole-batch path: any positive value
    return apply_to_samples(x, apply, blur, torch.where(apply, sigma, 1.0))


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """torchvision's ``adjust_hue``: shift the HSV hue of each sample by ``shift`` ``(B,)`` turns.

    Computed without the HSV round trip: with ``V`` the largest channel, ``C`` the chroma
    (largest minus smallest channel) and ``h`` the hue in sixths of a turn (ties broken like
    torchvision: red, then green), channel ``n`` of the result is
    ``V - C * clamp(min(k, 4 - k), 0, 1)`` with ``k = (h + shift + n) mod 6`` and
    ``n = 5, 3, 1`` for red, green, blue (the HSV to RGB formula). Grey pixels (``C = 0``)
    are unchanged. Equal to torchvision's up to float round-off (about ``1e-6``).

    Args:
        x: images ``(B, 3, H, W)`` in [0, 1].
        shift: ``(B,)`` hue shifts in turns (torchvision's ``hue_factor``).

    Returns:
        ``(B, 3, H, W)``, a new tensor in ``x``'s dtype.

    Example:
        >>> red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
        >>> adjust_hue(red, torch.tensor([1 / 3])).flatten().tolist()  # red -> green
        [0.0, 1.0, 0.0]
    """
    r, g, b = x.unbind(1)
    value, low = x.amax(dim=1), x.amin(dim=1)
    chroma = value - low
    # 0 / 1 masks of the channel holding the maximum (float: faster than a boolean where)
    red_max = torch.eq(r, value, out=torch.empty_like(value))
    green_max = torch.eq(g, value, out=torch.empty_like(value))
    hue = torch.lerp(
        torch.lerp((r - g).add_(chroma, alpha=4), (b - r).add_(chroma, alpha=2), green_max),
        g - b,
        red_max,
    )
    hue.div_(chroma.clamp(min=torch.finfo(x.dtype).tiny)).add_(
        (6 * shift).to(x.dtype).view(-1, 1, 1)
    )
    channels = []
    for n in (5.0, 3.0, 1.0):  # red, green, blue
        k = hue + n
        k.sub_(torch.floor(k.div(6)).mul_(6))  # k mod 6, in [0, 6)
        channels.append(value - torch.minimum(k, 4 - k).clamp_(0, 1).mul_(chroma))
    return torch.stack(channels, dim=1).clamp_(0, 1)  # round-off can leave a pixel 1 ulp out


def color_jitter(x: Tensor, apply: Tensor, order: Tensor, factors: Tensor) -> Tensor:
    """torchvision's ``ColorJitter`` with one order and one set of factors per sample.

    Brightness, contrast and saturation are affine colour maps: each step computes, for every
    sample, ``a * x + g * luma(x) + c`` (brightness ``a = factor``; contrast ``a = factor``,
    ``c = (1 - factor) * mean luma``; saturation ``a = factor``, ``g = 1 - factor``; ``a = 1``,
    ``g = c = 0`` for a sample whose step is another operation, which leaves it exactly
    unchanged), then clamps to [0, 1] as torchvision does after every operation. The hue shift
    (:func:`adjust_hue`) is computed for the samples whose step it is. Linear hue rotations
    (YIQ, or about the grey axis) are not offered: on saturated colours they differ from the
    HSV shift by about as much as the shift itself.

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
    out_dtype, dtype = x.dtype, compute_dtype(x.dtype)
    x = x.to(dtype, copy=True)  # this function's buffer: every step below writes into it
    bright, contrast, sat, hue = factors.to(dtype).unbind(-1)
    one, zero = x.new_ones(()), x.new_zeros(())
    for step in range(4):
        op = torch.where(apply, order[:, step], -1)
        is_contrast, is_saturation = op == CONTRAST, op == SATURATION
        scale = torch.where(op == BRIGHTNESS, bright, one)
        scale = torch.where(is_contrast, contrast, scale)
        scale = torch.where(is_saturation, sat, scale)
        gray = luma(x)
        gray_weight = torch.where(is_saturation, 1 - sat, zero)
        offset = torch.where(is_contrast, (1 - contrast) * gray.mean(dim=(1, 2, 3)), zero)
        x.mul_(scale.view(-1, 1, 1, 1)).addcmul_(gray, gray_weight.view(-1, 1, 1, 1))
        x.add_(offset.view(-1, 1, 1, 1)).clamp_(0, 1)
        x = apply_to_samples(x, op == HUE, adjust_hue, hue, inplace=True)  # stays in [0, 1]
    return x.to(out_dtype)
