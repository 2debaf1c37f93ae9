"""Per-augmentation equivariance report: how far each augmentation moves the embedding, and
how much of that move an EquiMod head or a steering operator predicts.

The augmentation is varied one knob at a time around the identity parameters (a
:class:`Sweep`: crop scale, crop position, flip, each colour-jitter factor, grayscale, blur
sigma, solarise; every other column at its identity value), each parameter vector is applied
to a held-out batch by replay (``augment(images, params=p)``), and the original and the views
are encoded. For every sweep value the report gives, averaged over the images:

- the move of the embedding in the encoder's feature space ``f``;
- optionally, how well EquiMod's head predicts the view's embedding in its projection space
  (``y = g'(f)``, prediction ``u(y_o, a)``), and how well a steering operator predicts the
  view's (optionally standardised) features (``M(a) e(f(x))`` against ``e(f(a(x)))``).

Cosine distances are computed as ``0.5 * ||n(p) - n(q)||^2`` with ``n`` the L2 normalisation
(equal to ``1 - cos(p, q)``, without the cancellation of ``1 - cos`` for small moves), in
float64. The predictors' columns are EquiMod's absolute / relative equivariance measures [0]
restricted to one knob: ``explained = 1 - 1 / relative`` and ``cos_pred - cos_orig =
absolute``; the steering columns apply them to the maps ``M(a)`` of [1].

- [0] EquiMod, Devillers & Lefort, ICLR 2023, https://arxiv.org/abs/2211.01244
- [1] Bhardwaj et al., Steerable Equivariant Representation Learning, 2023,
  https://arxiv.org/abs/2302.11349
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from equimod_plugin._checks import check_images
from equimod_plugin.augment import ParamAugment
from equimod_plugin.eval.probes import extract_features
from equimod_plugin.heads import EquivarianceHead

__all__ = ["AugmentationReport", "ReportRow", "Sweep", "augmentation_report", "default_sweeps"]

#: Mean cosine distance below which a view did not move: ``explained`` is then ``None``.
MIN_MOVE = 1e-10


@dataclass(frozen=True, eq=False)
class Sweep:
    """One augmentation knob varied over a grid, every other column at its identity value.

    Attributes:
        name: e.g. ``"brightness"``.
        unit: what :attr:`values` measure, e.g. ``"factor (1 = identity)"``.
        values: the K grid values, in that unit (the report's x axis).
        params: ``(K, P)`` float parameter vectors in the augmentation's layout, one per value;
            a row equal to the layout's identity row is an identity value.

    Build custom sweeps from ``augment.identity_params(K)`` by setting the columns to vary.
    """

    name: str
    unit: str
    values: tuple[float, ...]
    params: Tensor

    def __post_init__(self) -> None:
        p = self.params
        if not isinstance(p, Tensor) or p.ndim != 2 or not p.is_floating_point():
            raise ValueError(
                f"Sweep {self.name!r}: params must be a float tensor (K, P), got "
                f"{getattr(p, 'shape', type(p))}"
            )
        if p.shape[0] != len(self.values) or p.shape[0] == 0:
            raise ValueError(
                f"Sweep {self.name!r}: params has {p.shape[0]} rows but values has "
                f"{len(self.values)} entries; give one non-empty row per value"
            )


@dataclass(frozen=True)
class ReportRow:
    """The report at one value of one sweep, averaged over the N images.

    Notation: ``x`` an image, ``a`` the sweep's parameters at this value, ``v = a(x)`` the
    replayed view, ``x_o = a_id(x)`` the identity replay (the image itself at the output
    size), ``f`` the encoder after ``normalize``, ``d(p, q) = 1 - cos(p, q)``, ``mean`` over
    the images.

    Attributes:
        sweep: the sweep's name; unit: its values' unit; value: the knob's value.
        identity: whether ``a`` is the identity (then ``v = x_o`` and every move is exactly 0).
        move_cos: ``mean d(f(x_o), f(v))``, in [0, 2].
        move_l2: ``sqrt(sum ||f(v) - f(x_o)||^2 / sum ||f(x_o)||^2)``, the root-mean-square
            move relative to the root-mean-square feature norm.
        head_cos_pred: ``1 - mean d(y_hat, y_v)`` with ``y = head.project(f)`` and ``y_hat =
            head.predict(y_o, a)``; ``None`` without a head.
        head_cos_orig: ``1 - mean d(y_o, y_v)``: the move in the head's space.
        head_explained: ``1 - mean d(y_hat, y_v) / mean d(y_o, y_v)``: the share of the
            move (cosine distance) the prediction closes. 1: perfect; 0: no better than
            predicting no move; negative: worse. ``None`` without a head or when the view did
            not move (``mean d(y_o, y_v) < MIN_MOVE``).
        steer_cos_pred, steer_cos_orig, steer_explained: the same for the steering operator,
            in the steering space ``e = embed(f)`` (``e = f`` without ``embed``): prediction
            ``steering(e(x_o), a)``, target ``e(v)``, original ``e(x_o)``.
    """

    sweep: str
    unit: str
    value: float
    identity: bool
    move_cos: float
    move_l2: float
    head_cos_pred: float | None = None
    head_cos_orig: float | None = None
    head_explained: float | None = None
    steer_cos_pred: float | None = None
    steer_cos_orig: float | None = None
    steer_explained: float | None = None


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pooled(rows: Sequence[ReportRow], prefix: str) -> float | None:
    """``1 - sum_k (1 - cos_pred) / sum_k (1 - cos_orig)`` over the rows that moved."""
    moved = [r for r in rows if getattr(r, f"{prefix}_explained") is not None]
    if not moved:
        return None
    pred = sum(1 - getattr(r, f"{prefix}_cos_pred") for r in moved)
    orig = sum(1 - getattr(r, f"{prefix}_cos_orig") for r in moved)
    return 1 - pred / orig


@dataclass(frozen=True)
class AugmentationReport:
    """The rows of :func:`augmentation_report`, sweep by sweep, values in grid order.

    Attributes:
        rows: one :class:`ReportRow` per sweep and value.
        num_images: N, the images averaged over.
        feature_dim: D, the width of the encoder's features.
    """

    rows: tuple[ReportRow, ...]
    num_images: int
    feature_dim: int

    def by_sweep(self) -> OrderedDict[str, list[ReportRow]]:
        """The rows grouped by sweep, in order."""
        groups: OrderedDict[str, list[ReportRow]] = OrderedDict()
        for row in self.rows:
            groups.setdefault(row.sweep, []).append(row)
        return groups

    def _has(self, prefix: str) -> bool:
        return any(getattr(r, f"{prefix}_cos_orig") is not None for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python data for JSON: ``num_images``, ``feature_dim`` and ``rows`` as dicts."""
        return {
            "num_images": self.num_images,
            "feature_dim": self.feature_dim,
            "rows": [asdict(r) for r in self.rows],
        }

    def to_markdown(self, summary: bool = False) -> str:
        """A markdown table: one line per sweep value, or with ``summary`` one per sweep.

        The summary gives the range of values, the largest moves, and per predictor the
        pooled explained share ``1 - sum_k d_pred / sum_k d_orig`` over the sweep's values
        that moved (larger moves weigh more). ``-``: not computed or undefined.
        """
        predictors = [(p, label) for p, label in (("head", "head"), ("steer", "steering"))]
        predictors = [(p, label) for p, label in predictors if self._has(p)]
        if summary:
            header = ["sweep", "unit", "values", "max 1 - cos", "max rel. L2"]
            header += [f"{label} explained" for _, label in predictors]
            lines = [_line(header), _line(["---"] * 2 + ["---:"] * (len(header) - 2))]
            for name, rows in self.by_sweep().items():
                values = f"{rows[0].value:.3g} .. {rows[-1].value:.3g} ({len(rows)})"
                cells = [name, rows[0].unit, values]
                cells += [_fmt(max(r.move_cos for r in rows)), _fmt(max(r.move_l2 for r in rows))]
                cells += [_fmt(_pooled(rows, p), 3) for p, _ in predictors]
                lines.append(_line(cells))
            return "\n".join(lines) + "\n"
        header = ["sweep", "value", "1 - cos(f_o, f_a)", "rel. L2"]
        for _, label in predictors:
            header += [f"{label} cos(pred, a)", f"{label} cos(o, a)", f"{label} explained"]
        lines = [_line(header), _line(["---"] + ["---:"] * (len(header) - 1))]
        for r in self.rows:
            cells = [r.sweep, f"{r.value:.3g}" + (" (id)" if r.identity else "")]
            cells += [_fmt(r.move_cos), _fmt(r.move_l2)]
            for p, _ in predictors:
                cells += [
                    _fmt(getattr(r, f"{p}_cos_pred")),
                    _fmt(getattr(r, f"{p}_cos_orig")),
                    _fmt(getattr(r, f"{p}_explained"), 3),
                ]
            lines.append(_line(cells))
        return "\n".join(lines) + "\n"


def _line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


# default sweeps


def default_sweeps(augment: ParamAugment, steps: int = 9) -> list[Sweep]:
    """One sweep per knob of ``augment``'s operations, over the range the operation samples.

    ================================  ==========================================================
    operation                         sweeps (values)
    ================================  ==========================================================
    RandomResizedCrop                 ``crop_scale``: centred box of area ``s`` (the image's
                                      aspect), ``s`` over [scale min, 1]; ``crop_x`` /
                                      ``crop_y``: a box of the mid-range area moved from one
                                      edge to the other (value: offset of its centre from the
                                      image centre, fraction of the width / height)
    HorizontalFlip                    ``flip``: 0, 1
    ColorJitter                       ``brightness``, ``contrast``, ``saturation``: factor over
                                      [max(0, 1 - s), 1 + s]; ``hue``: shift over [-h, h] turns;
                                      jitter applied with the identity order, one factor at a
                                      time (a factor of strength 0 has no sweep)
    RandomGrayscale                   ``grayscale``: 0, 1
    GaussianBlur                      ``blur_sigma``: 0 (no blur), then sigma over its range
    RandomSolarize                    ``solarize``: 0, 1
    ================================  ==========================================================

    Continuous sweeps have ``steps`` evenly spaced values plus the identity value when it is
    not among them; the identity value's row is exactly the layout's identity row (the
    operation gated off). The operations' probabilities play no part: replay applies any
    value. ``jitter_order`` is not swept (with one factor at a time, the order changes
    nothing).

    Args:
        augment: the augmentation, in either encoding.
        steps: grid points of the continuous sweeps (at least 2).

    Returns:
        the sweeps, in the order of the operations.

    Each operation declares its knobs (``op.sweeps(steps)``: raw values around its identity)
    and encodes them (``op.sweep_params(knob)``); every other column holds the layout's
    identity row (:class:`~equimod_plugin.augment.ParamOp`).

    Raises:
        TypeError: ``augment`` has an operation that declares no sweeps; build its
            :class:`Sweep` by hand.

    Example:
        >>> from equimod_plugin import augment
        >>> sweeps = default_sweeps(augment.byol(32, view=2), steps=3)
        >>> [s.name for s in sweeps]  # doctest: +NORMALIZE_WHITESPACE
        ['crop_scale', 'crop_x', 'crop_y', 'flip', 'brightness', 'contrast', 'saturation', 'hue',
         'grayscale', 'blur_sigma', 'solarize']
        >>> sweeps[4].values  # brightness
        (0.6, 1.0, 1.4)
    """
    if not isinstance(augment, ParamAugment):
        raise TypeError(f"augment must be a ParamAugment, got {type(augment).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an int >= 2, got {steps!r}")
    sweeps: list[Sweep] = []
    start = 0
    for op in augment.ops:
        columns = slice(start, start + op.param_dim)
        start = columns.stop
        for knob in op.sweeps(steps):
            params = augment.identity_params(len(knob.values))
            params[:, columns] = op.sweep_params(knob)
            sweeps.append(Sweep(knob.name, knob.unit, knob.values, params))
    return sweeps


# the report


@contextmanager
def _eval_mode(*callables: object) -> Iterator[None]:
    """Put the modules among ``callables`` in eval mode, without gradients; restore after."""
    modules = [m for c in callables if isinstance(c, nn.Module) for m in c.modules()]
    modes = [(m, m.training) for m in modules]
    try:
        for m in modules:
            m.training = False
        with torch.no_grad():
            yield
    finally:
        for m, mode in modes:
            m.training = mode


def _cos_dist(p: Tensor, q: Tensor) -> Tensor:
    """Per-row ``1 - cos(p, q) = 0.5 * ||n(p) - n(q)||^2``, float64 ``(N,)``."""
    return 0.5 * (F.normalize(p.double(), dim=1) - F.normalize(q.double(), dim=1)).square().sum(1)


def _prediction(orig: Tensor, pred: Tensor, target: Tensor) -> tuple[float, float, float | None]:
    """``(cos_pred, cos_orig, explained)`` of ``pred`` and ``orig`` against ``target``."""
    d_pred, d_orig = _cos_dist(pred, target).mean().item(), _cos_dist(orig, target).mean().item()
    explained = None if d_orig < MIN_MOVE else 1 - d_pred / d_orig
    return 1 - d_pred, 1 - d_orig, explained


def _checked(t: object, name: str, rows: int, cols: int | None = None) -> Tensor:
    """``t`` if it is a finite float ``(rows, cols)`` tensor; else a ``ValueError``."""
    shape = f"({rows}, {'D' if cols is None else cols})"
    if (
        not isinstance(t, Tensor)
        or t.ndim != 2
        or not t.is_floating_point()
        or t.shape[0] != rows
        or (cols is not None and t.shape[1] != cols)
    ):
        raise ValueError(f"{name} must return a float tensor {shape}, got {getattr(t, 'shape', t)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} returned NaN or Inf values")
    return t


def _check_widths(
    head: EquivarianceHead | None, steering: object, dim: int, steer_dim: int, param_dim: int
) -> None:
    if head is not None:
        if head.input_dim != dim:
            raise ValueError(
                f"head expects features of width head.input_dim = {head.input_dim} but the "
                f"encoder returns {dim}"
            )
        if head.param_dim != param_dim:
            raise ValueError(
                f"head expects parameters of width head.param_dim = {head.param_dim} but "
                f"augment's layout has param_dim {param_dim}"
            )
    for attr, expected, what in (
        ("dim", steer_dim, "features of width {} (embed's output, else the encoder's)"),
        ("param_dim", param_dim, "parameters of width {} (augment's layout)"),
    ):
        width = getattr(steering, attr, None)
        if isinstance(width, int) and width != expected:
            raise ValueError(f"steering.{attr} is {width} but it receives {what.format(expected)}")


def augmentation_report(
    encoder: nn.Module,
    augment: ParamAugment,
    images: Tensor,
    *,
    normalize: Callable[[Tensor], Tensor] | None = None,
    head: EquivarianceHead | None = None,
    steering: Callable[[Tensor, Tensor], Tensor] | None = None,
    embed: Callable[[Tensor], Tensor] | None = None,
    sweeps: Sequence[Sweep] | None = None,
    steps: int = 9,
    batch_size: int = 256,
) -> AugmentationReport:
    """Vary one augmentation knob at a time and measure the embedding's move and its prediction.

    For every :class:`Sweep` value ``a`` (default: :func:`default_sweeps`), the views
    ``augment(images, params=a)`` (replay) and the originals ``augment(images, params=a_id)``
    (the identity replay: ``images`` themselves when they have the output size) are encoded as
    ``f = encoder(normalize(.))``; the columns are defined in :class:`ReportRow`. Everything
    runs in eval mode without gradients (train/eval modes are restored); rows whose ``a`` is
    the identity reuse the originals' features, so their moves are exactly 0.

    The encoder receives what ``normalize`` makes of images in [0, 1]. Pass the normalisation
    of training: :class:`~equimod_plugin.wrap.EquivarianceBranch` normalises with ImageNet's
    mean and std by default (``IMAGENET_NORMALIZE``), so for a backbone trained through it
    pass e.g. ``normalize=lambda x: (x - mean) / std``; leave ``None`` only when the encoder
    normalises itself.

    Batches go to the encoder's device and its features come back to ``images``' device, where
    ``head``, ``steering`` and ``embed`` receive them.

    Args:
        encoder: the backbone, ``(N, 3, h, w) -> (N, D)`` (flattened), e.g. ``model.backbone``.
        augment: the augmentation whose knobs are swept (e.g. one of the training views').
        images: ``(N, 3, H, W)`` held-out float images in [0, 1], N >= 1.
        normalize: ``(N, 3, h, w) -> (N, 3, h, w)`` applied to originals and views.
        head: an :class:`~equimod_plugin.heads.EquivarianceHead` (``branch.term.head``)
            whose ``predict(y_o, a)`` is compared with ``project(f(v))``.
        steering: ``(e (N, D'), params (N, P)) -> (N, D')``, e.g. a
            :class:`~equimod_plugin.steering.SteeringOperator` (``branch.term.operator``).
        embed: ``(N, D) -> (N, D')`` maps features to the steering space (e.g. the steering
            term's standardisation); identity when ``None``. Used only with ``steering``.
        sweeps: the sweeps; default ``default_sweeps(augment, steps)``.
        steps: grid points per continuous default sweep.
        batch_size: images encoded at a time.

    Returns:
        an :class:`AugmentationReport`: one :class:`ReportRow` per sweep and value.

    Raises:
        ValueError: ``images`` is not a float ``(N, 3, H, W)`` batch in [0, 1] (uint8, NaN,
            wrong shape); a sweep's width differs from the layout's; the head's or steering
            operator's widths differ from the features' or parameters'; a callable returns the
            wrong shape or NaN.
        TypeError: ``augment`` is not a :class:`~equimod_plugin.augment.ParamAugment`, or
            ``default_sweeps`` does not know one of its operations.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from equimod_plugin import EquivarianceHead, SteeringOperator, augment
        >>> _ = torch.manual_seed(0)
        >>> aug = augment.simclr(16, variant="cifar")  # P = 15
        >>> encoder = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        >>> head = EquivarianceHead(8, 15, hidden_dim=16, output_dim=4, param_embed_dim=4)
        >>> report = augmentation_report(
        ...     encoder, aug, torch.rand(6, 3, 16, 16), head=head,
        ...     steering=SteeringOperator(8, 15, rank=2, identity=aug.identity_params(1)[0]),
        ...     steps=3)
        >>> [(r.sweep, r.value, r.move_cos) for r in report.rows[:3]]  # doctest: +ELLIPSIS
        [('crop_scale', 0.2, ...), ('crop_scale', 0.6, ...), ('crop_scale', 1.0, 0.0)]
        >>> report.rows[2].identity, report.rows[2].steer_explained is None
        (True, True)
        >>> print(report.to_markdown(summary=True).splitlines()[0])
        | sweep | unit | values | max 1 - cos | max rel. L2 | head explained | steering explained |
    """
    if not isinstance(augment, ParamAugment):
        raise TypeError(f"augment must be a ParamAugment, got {type(augment).__name__}")
    if not isinstance(encoder, nn.Module):
        raise TypeError(f"encoder must be an nn.Module, got {type(encoder).__name__}")
    check_images(images, "images")
    if images.shape[0] == 0:
        raise ValueError("images must hold at least one image, got shape (0, ...)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if embed is not None and steering is None:
        raise ValueError("embed maps features to the steering space; it needs steering")
    sweeps = default_sweeps(augment, steps) if sweeps is None else list(sweeps)
    layout, n = augment.layout, images.shape[0]
    identity = layout.identity(1, device=images.device)
    names = [s.name for s in sweeps]
    if len(set(names)) != len(names):
        raise ValueError(f"sweeps must have unique names, got {names}")
    for i, s in enumerate(sweeps):
        if not isinstance(s, Sweep) or s.params.shape[1] != layout.param_dim:
            raise ValueError(
                f"sweeps[{i}] must be a Sweep with params (K, {layout.param_dim}) for augment's "
                f"layout, got {getattr(getattr(s, 'params', None), 'shape', type(s))}"
            )

    def encode(params: Tensor) -> Tensor:
        views, _ = augment(images, params=params.expand(n, -1).contiguous())
        f = extract_features(encoder, views, batch_size, transform=normalize)
        return _checked(f, "encoder", n)

    rows = []
    with _eval_mode(head, steering, embed):
        f_o = encode(identity)
        dim = f_o.shape[1]
        e_o = f_o if embed is None else _checked(embed(f_o), "embed", n)
        _check_widths(head, steering, dim, e_o.shape[1], layout.param_dim)
        y_o = None if head is None else _checked(head.project(f_o), "head.project", n)
        for s in sweeps:
            for value, row in zip(s.values, s.params.to(images.device), strict=True):
                a = row[None]
                is_identity = torch.equal(a, identity)
                f_a = f_o if is_identity else encode(a)
                params = a.expand(n, -1)
                moves = _cos_dist(f_o, f_a).mean().item()
                l2 = (f_a.double() - f_o.double()).square().sum()
                columns: dict[str, Any] = {
                    "move_cos": moves,
                    "move_l2": math.sqrt(l2.item() / f_o.double().square().sum().clamp_min(1e-30)),
                }
                if head is not None and y_o is not None:
                    y_a = y_o if is_identity else _checked(head.project(f_a), "head.project", n)
                    y_hat = _checked(head.predict(y_o, params), "head.predict", n, y_o.shape[1])
                    columns.update(
                        zip(
                            ("head_cos_pred", "head_cos_orig", "head_explained"),
                            _prediction(y_o, y_hat, y_a),
                            strict=True,
                        )
                    )
                if steering is not None:
                    if is_identity:
                        e_a = e_o
                    else:
                        e_a = f_a if embed is None else _checked(embed(f_a), "embed", n)
                    steered = _checked(steering(e_o, params), "steering", n, e_o.shape[1])
                    columns.update(
                        zip(
                            ("steer_cos_pred", "steer_cos_orig", "steer_explained"),
                            _prediction(e_o, steered, e_a),
                            strict=True,
                        )
                    )
                rows.append(ReportRow(s.name, s.unit, float(value), is_identity, **columns))
    return AugmentationReport(tuple(rows), n, dim)
