"""Steerable representations (Bhardwaj et al., 2023): a linear map in embedding space per
augmentation, ``M(a) f(x) ~ f(a(x))``, and the loss that learns it.

How ``M(a)`` is produced from the parameters ``a`` is not public; three parameterisations are
offered, one class each over the base :class:`SteeringOperator` (which holds their costs):
:class:`LowRankSteering` (the default), :class:`ExponentialSteering` and :class:`FullSteering`.
``SteeringOperator(dim, param_dim, kind=...)`` builds the class of that ``kind``.

- [0] Bhardwaj et al., Steerable Equivariant Representation Learning, 2023,
  https://arxiv.org/abs/2302.11349
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from equimod_plugin import _distributed
from equimod_plugin._checks import check_flags, check_matrix, check_positive_int, check_same_device

__all__ = [
    "ExponentialSteering",
    "FullSteering",
    "LowRankSteering",
    "SteeringLoss",
    "SteeringOperator",
]

Kind = Literal["low_rank", "exponential", "full"]
KINDS: tuple[str, ...] = ("low_rank", "exponential", "full")

_SIZES = {
    "dim": "the width D of the embeddings",
    "param_dim": "the width P of the parameters, aug.layout.param_dim",
    "rank": "the rank r of low_rank",
    "hidden_dim": "the hidden width of the hypernetworks",
    "num_generators": "m of exponential, or None for P",
}


def _check_sizes(**sizes: int | None) -> None:
    """Raise naming the first size that is not a positive int (``num_generators`` may be None)."""
    for name, value in sizes.items():
        if name == "num_generators" and value is None:
            continue
        check_positive_int(value, name, _SIZES[name])


class _Hypernetwork(nn.Sequential):
    """MLP ``P -> hidden -> out_dim`` whose outputs start with standard deviation ~``std``."""

    def __init__(self, param_dim: int, hidden_dim: int, out_dim: int, std: float) -> None:
        super().__init__(
            nn.Linear(param_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim, bias=False)
        )
        nn.init.normal_(self[2].weight, std=2 * std / hidden_dim**0.5)

    def delta(self, d: Tensor) -> Tensor:
        """``H(d) - H(0)``, ``(N, P) -> (N, out_dim)``: exactly 0 where ``d`` is 0.

        The subtraction alone is not exact everywhere (matrix products may round rows
        differently), so rows with ``d = 0`` are set to 0 explicitly.
        """
        out = self(torch.cat([d, torch.zeros_like(d[:1])]))
        delta = out[:-1] - out[-1:]
        return torch.where((d == 0).all(dim=1, keepdim=True), 0.0, delta)


class _BuildByKind(type):
    """Metaclass of :class:`SteeringOperator`: calling the base builds the subclass of ``kind``.

    A ``__new__`` on the base could pick the subclass too, but Python would then call the
    subclass's ``__init__`` with the base's arguments (``kind``, and ``rank`` for an exponential
    map), so every subclass would have to accept them all. Subclasses are built as usual.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is SteeringOperator:
            return _from_kind(*args, **kwargs)
        return super().__call__(*args, **kwargs)


def _from_kind(
    dim: int,
    param_dim: int,
    kind: Kind = "low_rank",
    identity: Tensor | None = None,
    rank: int = 16,
    num_generators: int | None = None,
    hidden_dim: int = 128,
) -> SteeringOperator:
    """``SteeringOperator(...)``: the one place that reads ``kind``.

    Every size is checked, also those the chosen kind does not use (as before the classes).
    """
    _check_sizes(
        dim=dim,
        param_dim=param_dim,
        rank=rank,
        hidden_dim=hidden_dim,
        num_generators=num_generators,
    )
    if kind == "low_rank":
        return LowRankSteering(dim, param_dim, identity, rank=rank, hidden_dim=hidden_dim)
    if kind == "exponential":
        return ExponentialSteering(dim, param_dim, identity, num_generators=num_generators)
    if kind == "full":
        return FullSteering(dim, param_dim, identity, hidden_dim=hidden_dim)
    raise ValueError(
        f"kind must be one of {KINDS} (or build LowRankSteering, ExponentialSteering or "
        f"FullSteering directly), got {kind!r}"
    )


class SteeringOperator(nn.Module, metaclass=_BuildByKind):
    """Learned linear maps ``M(a)`` of embeddings, one per augmentation parameter vector.

    The base of the parameterisations of ``M``; each is exactly the identity at the identity
    parameters ``a_id`` (written ``d = a - a_id`` below):

    ===========  ===================  ================================  ========  ==============
    kind         class                M(a)                              apply     parameters
    ===========  ===================  ================================  ========  ==============
    low_rank     LowRankSteering      I + U(d) V(d)^T; U, V are (D, r)  O(B D r)  hidden * 2 D r
    exponential  ExponentialSteering  expm(sum_i c_i(d) A_i), c linear  O(B D^3)  m D^2 + m P
    full         FullSteering         I + H(d); H is (D, D)             O(B D^2)  hidden * D^2
    ===========  ===================  ================================  ========  ==============

    "apply" is the cost of steering B embeddings (``exponential``: B matrix exponentials).
    ``low_rank`` is the default: at D = 2048, r = 16, B = 256 it costs a few MFLOP per sample
    and 8.4 M parameters. ``exponential`` composes (``M(a) M(b) = M(a_id + d_a + d_b)`` when
    the generators commute) but its matrix exponential makes it a choice for D of a few
    hundred; ``full`` needs ``hidden * D^2`` parameters (2 G at D = 2048), also for small D only.

    Calling ``SteeringOperator(dim, param_dim, kind="low_rank", identity=None, rank=16,
    num_generators=None, hidden_dim=128)`` builds the class of ``kind`` from the arguments that
    class takes; the others are checked and ignored. Every class is a ``SteeringOperator``.

    Args:
        dim: width D of the embeddings (backbone features).
        param_dim: width P of the augmentation parameters (``aug.layout.param_dim``).
        identity: ``(P,)`` parameters of the identity augmentation (``aug.identity_params(1)[0]``),
            where ``M`` is exactly ``I``; zeros by default.

    Shapes:
        ``forward(features (B, D), params (B, P)) -> (B, D)``;
        ``maps(params (N, P)) -> (N, D, D)``;
        ``steer_many(features (B, D), params (K, P)) -> (B, K, D)``.

    A subclass implements ``_maps`` (the public methods check the inputs, then call it) and,
    when it can steer without forming the ``(D, D)`` maps, ``_forward`` and ``_steer_many``.

    Example:
        >>> import torch
        >>> op = SteeringOperator(dim=32, param_dim=18, kind="exponential")
        >>> type(op).__name__, isinstance(op, SteeringOperator)
        ('ExponentialSteering', True)
        >>> f, a = torch.randn(8, 32), torch.randn(8, 18)
        >>> op(f, a).shape, op.steer_many(f, torch.randn(5, 18)).shape
        (torch.Size([8, 32]), torch.Size([8, 5, 32]))
        >>> torch.equal(op(f, torch.zeros(8, 18)), f)  # identity parameters: identity map
        True
    """

    kind: ClassVar[str]

    def __init__(self, dim: int, param_dim: int, identity: Tensor | None = None) -> None:
        super().__init__()
        _check_sizes(dim=dim, param_dim=param_dim)
        if identity is not None and not isinstance(identity, Tensor):
            raise TypeError(
                f"identity must be a tensor ({param_dim},) such as aug.identity_params(1)[0], "
                f"or None for zeros, got {type(identity).__name__}"
            )
        identity = torch.zeros(param_dim) if identity is None else identity.detach().float()
        if identity.shape != (param_dim,):
            raise ValueError(
                f"identity must have shape ({param_dim},), got {tuple(identity.shape)}"
            )
        self.dim, self.param_dim = dim, param_dim
        self.register_buffer("identity", identity.clone())
        # steer_many's last K parameter sets and what was built from them (see _reusable)
        self._built: tuple[tuple[tuple[int, int], ...], Tensor, Any] | None = None

    def maps(self, params: Tensor) -> Tensor:
        """The maps ``M(a)`` themselves, ``(N, P) -> (N, D, D)``."""
        self._check(None, params, None)
        return self._maps(params)

    def forward(self, features: Tensor, params: Tensor) -> Tensor:
        """Steer each embedding with its own parameters: ``(B, D), (B, P) -> (B, D)``."""
        self._check(features, params, features.shape[0] if features.ndim == 2 else None)
        return self._forward(features, params)

    def steer_many(self, features: Tensor, params: Tensor) -> Tensor:
        """Apply K parameter sets to every embedding: ``(B, D), (K, P) -> (B, K, D)``.

        One batched product: the K maps are built once and shared by the B embeddings, and the
        ``(B, K, D)`` result is the only buffer of that size. Test-time augmentation calls it
        with the same K parameter sets batch after batch: when no autograd graph is recorded,
        what is built from them (the maps, or ``low_rank``'s factors) is kept and reused for
        as long as the parameter values and the operator's weights are unchanged (an optimiser
        step or ``load_state_dict`` bumps the weights' version counters).
        """
        self._check(features, params, None)
        return self._steer_many(features, params)

    def _reusable(self, params: Tensor, build: Callable[[Tensor], Any]) -> Any:
        """``build(params)``, reused from the previous call of :meth:`steer_many` when
        ``params`` has the same values and no weight or buffer of the operator has changed
        since (same storage, same version counter). Never while a graph is recorded or under
        ``torch.compile``."""
        recording = torch.is_grad_enabled() and (
            params.requires_grad or any(w.requires_grad for w in self.parameters())
        )
        if recording or torch.compiler.is_compiling():
            self._built = None
            return build(params)
        state = tuple((t.data_ptr(), t._version) for t in (*self.parameters(), *self.buffers()))
        built = self._built
        if (
            built is not None
            and built[0] == state
            and built[1].shape == params.shape
            and built[1].device == params.device
            and torch.equal(built[1], params)
        ):
            return built[2]
        out = build(params)
        self._built = (state, params.detach().clone(), out)
        return out

    def _check(self, features: Tensor | None, params: Tensor, rows: int | None) -> None:
        check_matrix(params, "params", rows=rows, cols=self.param_dim, what="P")
        check_same_device(params=params, identity=self.identity)
        if features is not None:
            check_matrix(features, "features", cols=self.dim, what="D")
            check_same_device(features=features, params=params)

    def _displacement(self, params: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """``d = a - a_id``, ``(N, P) -> (N, P)``, in ``dtype`` (default: the identity's)."""
        dtype = self.identity.dtype if dtype is None else dtype
        return params.to(dtype) - self.identity.to(dtype)

    def _maps(self, params: Tensor) -> Tensor:
        """``(N, P) -> (N, D, D)`` on checked inputs: what a subclass defines."""
        raise NotImplementedError(f"{type(self).__name__} must implement _maps")

    def _forward(self, features: Tensor, params: Tensor) -> Tensor:
        """``(B, D), (B, P) -> (B, D)`` on checked inputs, through the maps."""
        m = self._maps(params)
        return torch.einsum("bij,bj->bi", m, features.to(m.dtype)).to(features.dtype)

    def _steer_many(self, features: Tensor, params: Tensor) -> Tensor:
        """``(B, D), (K, P) -> (B, K, D)`` on checked inputs, through the maps."""
        m = self._reusable(params, self._maps)
        return torch.einsum("kij,bj->bki", m, features.to(m.dtype)).to(features.dtype)


class LowRankSteering(SteeringOperator):
    """``M(a) = I + U(d) V(d)^T``: a hypernetwork gives the ``(D, r)`` factors ``U``, ``V``.

    ``U`` and ``V`` are ``H(d) - H(0)`` of one MLP ``H``, exactly 0 at ``d = 0``. Steering
    never forms the ``(D, D)`` maps: ``O(B D r)`` for B embeddings (see
    :class:`SteeringOperator` for the other kinds). ``kind = "low_rank"``.

    Args:
        dim, param_dim, identity: as :class:`SteeringOperator` (``M`` is exactly ``I`` at
            ``identity``).
        rank: rank r of ``U V^T``.
        hidden_dim: hidden width of the hypernetwork.

    Shapes:
        as :class:`SteeringOperator`.

    Example:
        >>> import torch
        >>> op = LowRankSteering(dim=32, param_dim=18, rank=4)
        >>> f, a = torch.randn(8, 32), torch.randn(8, 18)
        >>> op(f, a).shape, op.maps(a).shape
        (torch.Size([8, 32]), torch.Size([8, 32, 32]))
        >>> int(torch.linalg.matrix_rank(op.maps(a)[0] - torch.eye(32)))
        4
    """

    kind = "low_rank"

    def __init__(
        self,
        dim: int,
        param_dim: int,
        identity: Tensor | None = None,
        rank: int = 16,
        hidden_dim: int = 128,
    ) -> None:
        super().__init__(dim, param_dim, identity)
        _check_sizes(rank=rank, hidden_dim=hidden_dim)
        self.rank = rank
        # initial maps move an embedding by about a tenth of its norm
        std = (0.1 / (dim * rank) ** 0.5) ** 0.5
        self.hyper = _Hypernetwork(param_dim, hidden_dim, 2 * dim * rank, std)

    def _low_rank(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """The factors ``U, V``, ``(N, P) -> (N, D, r), (N, D, r)``."""
        uv = self.hyper.delta(self._displacement(params)).unflatten(1, (2, self.dim, self.rank))
        return uv[:, 0], uv[:, 1]

    def _maps(self, params: Tensor) -> Tensor:
        eye = torch.eye(self.dim, device=params.device, dtype=self.identity.dtype)
        u, v = self._low_rank(params)
        return eye + u @ v.transpose(1, 2)

    def _forward(self, features: Tensor, params: Tensor) -> Tensor:
        u, v = self._low_rank(params)
        f = features.to(u.dtype)
        return (f + torch.einsum("bdr,br->bd", u, torch.einsum("bdr,bd->br", v, f))).to(
            features.dtype
        )

    def _steer_many(self, features: Tensor, params: Tensor) -> Tensor:
        # the features are added in place: the (B, K, D) product is the only buffer that size
        u, v = self._reusable(params, self._low_rank)
        f = features.to(u.dtype)
        coords = torch.einsum("kdr,bd->bkr", v, f)
        out = torch.einsum("kdr,bkr->bkd", u, coords).add_(f[:, None])
        return out.to(features.dtype)


class ExponentialSteering(SteeringOperator):
    """``M(a) = expm(sum_i c_i(d) A_i)``: learned generators ``A_i``, coefficients linear in ``d``.

    ``M(a_id) = expm(0) = I`` exactly, and ``M(a) M(b) = M(a_id + d_a + d_b)`` when the
    generators commute. Each map is a ``(D, D)`` matrix exponential, ``O(D^3)`` (see
    :class:`SteeringOperator`). The exponent and its exponential are computed in at least
    float32, also in a bfloat16 / float16 module and under autocast, then cast back to the
    module's dtype. ``kind = "exponential"``.

    Args:
        dim, param_dim, identity: as :class:`SteeringOperator` (``M`` is exactly ``I`` at
            ``identity``).
        num_generators: number m of generators ``A_i``; P by default.

    Shapes:
        as :class:`SteeringOperator`.

    Example:
        >>> import torch
        >>> op = ExponentialSteering(dim=8, param_dim=3, num_generators=5)
        >>> a = torch.randn(4, 3)
        >>> op.maps(a).shape, tuple(op.generators.shape)
        (torch.Size([4, 8, 8]), (5, 8, 8))
        >>> torch.equal(op.maps(torch.zeros(2, 3)), torch.eye(8).expand(2, 8, 8))
        True
    """

    kind = "exponential"

    def __init__(
        self,
        dim: int,
        param_dim: int,
        identity: Tensor | None = None,
        num_generators: int | None = None,
    ) -> None:
        super().__init__(dim, param_dim, identity)
        _check_sizes(num_generators=num_generators)
        m = param_dim if num_generators is None else num_generators
        self.coefficients = nn.Linear(param_dim, m, bias=False)
        # initial maps move an embedding by about a tenth of its norm
        self.generators = nn.Parameter(0.1 * torch.randn(m, dim, dim) / (dim * m) ** 0.5)

    def _maps(self, params: Tensor) -> Tensor:
        # the exponent and its exponential in at least float32, also in a bf16 / fp16 module and
        # under autocast: matrix_exp in bf16 overflows (values around 1e30 at the identity)
        dtype = torch.promote_types(self.identity.dtype, torch.float32)
        with torch.autocast(params.device.type, enabled=False):
            c = F.linear(self._displacement(params, dtype), self.coefficients.weight.to(dtype))
            exponent = torch.einsum("bm,mij->bij", c, self.generators.to(dtype))
            return torch.linalg.matrix_exp(exponent).to(self.identity.dtype)


class FullSteering(SteeringOperator):
    """``M(a) = I + H(d)``: a hypernetwork gives the whole ``(D, D)`` map.

    ``H(d)`` is ``H(d) - H(0)`` of one MLP, exactly 0 at ``d = 0``. Its last layer has
    ``hidden * D^2`` weights, so it is for small D (see :class:`SteeringOperator`).
    ``kind = "full"``.

    Args:
        dim, param_dim, identity: as :class:`SteeringOperator` (``M`` is exactly ``I`` at
            ``identity``).
        hidden_dim: hidden width of the hypernetwork.

    Example (shapes as :class:`SteeringOperator`):
        >>> import torch
        >>> op = FullSteering(dim=8, param_dim=3, hidden_dim=16)
        >>> f, a = torch.randn(4, 8), torch.randn(4, 3)
        >>> op(f, a).shape, tuple(op.hyper[2].weight.shape)
        (torch.Size([4, 8]), (64, 16))
    """

    kind = "full"

    def __init__(
        self, dim: int, param_dim: int, identity: Tensor | None = None, hidden_dim: int = 128
    ) -> None:
        super().__init__(dim, param_dim, identity)
        _check_sizes(hidden_dim=hidden_dim)
        # initial maps move an embedding by about a tenth of its norm
        self.hyper = _Hypernetwork(param_dim, hidden_dim, dim * dim, 0.1 / dim**0.5)

    def _maps(self, params: Tensor) -> Tensor:
        eye = torch.eye(self.dim, device=params.device, dtype=self.identity.dtype)
        return eye + self.hyper.delta(self._displacement(params)).unflatten(1, (self.dim, self.dim))


class SteeringLoss(nn.Module):
    """Distance between steered embeddings ``M(a) f(x)`` and embeddings ``f(a(x))``.

    The steering loss of Bhardwaj et al. (2023, https://arxiv.org/abs/2302.11349); its exact
    form is not published, so both usual distances are offered.

    Args:
        distance: ``"cosine"``: mean of ``1 - cos``; ``"mse"``: normalised mean squared
            error ``sum |s - t|^2 / sum |t|^2`` (0 for a perfect map, 1 for predicting zero).
        detach_target: stop gradients into ``f(a(x))``, so that the encoder is pulled only
            through the steered side.
        gather_distributed: under DDP, make DDP's average of the per-process losses and
            gradients equal the loss of the whole batch, also when the processes' batches
            differ in size: ``"mse"`` sums the denominator ``sum |t|^2`` over all processes
            (with gradients); ``"cosine"`` divides the local sum by the global row count.

    Example:
        >>> import torch
        >>> t = torch.randn(4, 8)
        >>> float(SteeringLoss("mse")(t, t)), float(SteeringLoss("mse")(torch.zeros(4, 8), t))
        (0.0, 1.0)
    """

    def __init__(
        self,
        distance: str = "cosine",
        detach_target: bool = False,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        if distance not in ("cosine", "mse"):
            raise ValueError(f"distance must be 'cosine' or 'mse', got {distance!r}")
        check_flags(detach_target=detach_target, gather_distributed=gather_distributed)
        self.distance = distance
        self.detach_target = detach_target
        self.gather_distributed = gather_distributed

    def forward(self, steered: Tensor, target: Tensor) -> Tensor:
        """The loss of N steered embeddings against their targets.

        Args:
            steered: ``(N, D)`` steered embeddings ``M(a) f(x)``.
            target: ``(N, D)`` embeddings of the augmented images ``f(a(x))``.

        Returns:
            the scalar loss.
        """
        check_matrix(steered, "steered", what="D")
        check_matrix(target, "target", rows=steered.shape[0], cols=steered.shape[1], what="D")
        check_same_device(steered=steered, target=target)
        if steered.shape[0] == 0:
            raise ValueError("steered and target must have at least one row, got shape (0, D)")
        if self.detach_target:
            target = target.detach()
        distributed = self.gather_distributed and _distributed.world_size() > 1
        if self.distance == "cosine":
            distance = 1 - F.cosine_similarity(steered, target, dim=1)
            if distributed:
                total_rows = sum(_distributed.rows(distance))
                return _distributed.world_size() * distance.sum() / total_rows
            return distance.mean()
        error = (steered - target).pow(2).sum()
        if distributed:
            total = _distributed.gather(target.pow(2).sum(dim=1)).sum()
            return _distributed.world_size() * error / total.clamp_min(1e-12)
        return error / target.pow(2).sum().clamp_min(1e-12)
