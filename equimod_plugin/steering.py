"""Steerable representations (Bhardwaj et al., 2023): a linear map in embedding space per
augmentation, ``M(a) f(x) ~ f(a(x))``, and the loss that learns it.

How ``M(a)`` is produced from the parameters ``a`` is not public; three parameterisations
are offered (``kind``), each exactly the identity at the identity parameters ``a_id``
(written ``d = a - a_id`` below):

===========  ================================  ========================  ===============
kind         M(a)                              apply to B embeddings     parameters
===========  ================================  ========================  ===============
low_rank     I + U(d) V(d)^T; U, V are (D, r)  O(B D r)                  hidden * 2 D r
exponential  expm(sum_i c_i(d) A_i), c linear  O(B D^3): B matrix exps   m D^2 + m P
full         I + H(d); H is (D, D)             O(B D^2)                  hidden * D^2
===========  ================================  ========================  ===============

``low_rank`` is the default: at D = 2048, r = 16, B = 256 it costs a few MFLOP per sample and
8.4 M parameters. ``exponential`` composes (``M(a) M(b) = M(a_id + d_a + d_b)`` when the
generators commute) but its matrix exponential makes it a choice for D of a few hundred;
``full`` needs ``hidden * D^2`` parameters (2 G at D = 2048), also for small D only.

- [0] Bhardwaj et al., Steerable Equivariant Representation Learning, 2023,
  https://arxiv.org/abs/2302.11349
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from equimod_plugin import _distributed
from equimod_plugin._checks import check_matrix, check_same_device

__all__ = ["SteeringLoss", "SteeringOperator"]

Kind = Literal["low_rank", "exponential", "full"]
KINDS: tuple[str, ...] = ("low_rank", "exponential", "full")


def _hypernetwork(param_dim: int, hidden_dim: int, out_dim: int, std: float) -> nn.Sequential:
    """MLP ``P -> hidden -> out_dim`` whose outputs start with standard deviation ~``std``."""
    net = nn.Sequential(
        nn.Linear(param_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim, bias=False)
    )
    nn.init.normal_(net[2].weight, std=2 * std / hidden_dim**0.5)
    return net


class SteeringOperator(nn.Module):
    """Learned linear maps ``M(a)`` of embeddings, one per augmentation parameter vector.

    Args:
        dim: width D of the embeddings (backbone features).
        param_dim: width P of the augmentation parameters (``aug.layout.param_dim``).
        kind: ``"low_rank"`` (default), ``"exponential"`` or ``"full"``; see the module doc.
        identity: ``(P,)`` parameters of the identity augmentation (``aug.identity_params(1)[0]``),
            where ``M`` is exactly ``I``; zeros by default.
        rank: r of ``low_rank``.
        num_generators: m of ``exponential`` (default P).
        hidden_dim: hidden width of the hypernetworks of ``low_rank`` and ``full``.

    Shapes:
        ``forward(features (B, D), params (B, P)) -> (B, D)``;
        ``maps(params (B, P)) -> (B, D, D)``;
        ``steer_many(features (B, D), params (K, P)) -> (B, K, D)``.

    Example:
        >>> import torch
        >>> op = SteeringOperator(dim=32, param_dim=18, rank=4)
        >>> f, a = torch.randn(8, 32), torch.randn(8, 18)
        >>> op(f, a).shape, op.steer_many(f, torch.randn(5, 18)).shape
        (torch.Size([8, 32]), torch.Size([8, 5, 32]))
        >>> torch.equal(op(f, torch.zeros(8, 18)), f)  # identity parameters: identity map
        True
    """

    def __init__(
        self,
        dim: int,
        param_dim: int,
        kind: Kind = "low_rank",
        identity: Tensor | None = None,
        rank: int = 16,
        num_generators: int | None = None,
        hidden_dim: int = 128,
    ) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("param_dim", param_dim), ("rank", rank)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        identity = torch.zeros(param_dim) if identity is None else identity.detach().float()
        if identity.shape != (param_dim,):
            raise ValueError(
                f"identity must have shape ({param_dim},), got {tuple(identity.shape)}"
            )
        self.dim, self.param_dim, self.kind, self.rank = dim, param_dim, kind, rank
        self.register_buffer("identity", identity.clone())
        # initial maps move an embedding by about a tenth of its norm
        if kind == "low_rank":
            std = (0.1 / (dim * rank) ** 0.5) ** 0.5
            self.hyper = _hypernetwork(param_dim, hidden_dim, 2 * dim * rank, std)
        elif kind == "full":
            self.hyper = _hypernetwork(param_dim, hidden_dim, dim * dim, 0.1 / dim**0.5)
        else:
            m = param_dim if num_generators is None else num_generators
            self.coefficients = nn.Linear(param_dim, m, bias=False)
            self.generators = nn.Parameter(0.1 * torch.randn(m, dim, dim) / (dim * m) ** 0.5)

    def _check(self, features: Tensor | None, params: Tensor, rows: int | None) -> None:
        check_matrix(params, "params", rows=rows, cols=self.param_dim, what="P")
        check_same_device(params=params, identity=self.identity)
        if features is not None:
            check_matrix(features, "features", cols=self.dim, what="D")
            check_same_device(features=features, params=params)

    def _hyper(self, params: Tensor) -> Tensor:
        """``H(d) - H(0)`` with ``d = a - a_id``: exactly 0 where ``d`` is 0.

        The subtraction alone is not exact everywhere (matrix products may round rows
        differently), so rows with ``d = 0`` are set to 0 explicitly.
        """
        d = params.to(self.identity.dtype) - self.identity
        out = self.hyper(torch.cat([d, torch.zeros_like(d[:1])]))
        delta = out[:-1] - out[-1:]
        return torch.where((d == 0).all(dim=1, keepdim=True), 0.0, delta)

    def _low_rank(self, params: Tensor) -> tuple[Tensor, Tensor]:
        uv = self._hyper(params).unflatten(1, (2, self.dim, self.rank))
        return uv[:, 0], uv[:, 1]

    def maps(self, params: Tensor) -> Tensor:
        """The maps ``M(a)`` themselves, ``(B, P) -> (B, D, D)``."""
        self._check(None, params, None)
        eye = torch.eye(self.dim, device=params.device, dtype=self.identity.dtype)
        if self.kind == "low_rank":
            u, v = self._low_rank(params)
            return eye + u @ v.transpose(1, 2)
        if self.kind == "full":
            return eye + self._hyper(params).unflatten(1, (self.dim, self.dim))
        # the exponent and its exponential in float32 also under autocast: matrix_exp in bf16
        # overflows (values around 1e30)
        with torch.autocast(params.device.type, enabled=False):
            d = params.to(self.identity.dtype) - self.identity
            c = F.linear(d, self.coefficients.weight.to(d.dtype))
            exponent = torch.einsum("bm,mij->bij", c, self.generators.to(d.dtype))
            return torch.linalg.matrix_exp(exponent)

    def forward(self, features: Tensor, params: Tensor) -> Tensor:
        """Steer each embedding with its own parameters: ``(B, D), (B, P) -> (B, D)``."""
        self._check(features, params, features.shape[0] if features.ndim == 2 else None)
        if self.kind == "low_rank":
            u, v = self._low_rank(params)
            f = features.to(u.dtype)
            return (f + torch.einsum("bdr,br->bd", u, torch.einsum("bdr,bd->br", v, f))).to(
                features.dtype
            )
        m = self.maps(params)
        return torch.einsum("bij,bj->bi", m, features.to(m.dtype)).to(features.dtype)

    def steer_many(self, features: Tensor, params: Tensor) -> Tensor:
        """Apply K parameter sets to every embedding: ``(B, D), (K, P) -> (B, K, D)``.

        One batched product: the K maps are built once and shared by the B embeddings.
        """
        self._check(features, params, None)
        if self.kind == "low_rank":
            u, v = self._low_rank(params)
            f = features.to(u.dtype)
            coords = torch.einsum("kdr,bd->bkr", v, f)
            out = f[:, None] + torch.einsum("kdr,bkr->bkd", u, coords)
        else:
            m = self.maps(params)
            out = torch.einsum("kij,bj->bki", m, features.to(m.dtype))
        return out.to(features.dtype)


class SteeringLoss(nn.Module):
    """Distance between steered embeddings ``M(a) f(x)`` and embeddings ``f(a(x))``.

    The steering loss of Bhardwaj et al. (2023, https://arxiv.org/abs/2302.11349); its exact
    form is not published, so both usual distances are offered.

    Args:
        distance: ``"cosine"``: mean of ``1 - cos``; ``"mse"``: normalised mean squared
            error ``sum |s - t|^2 / sum |t|^2`` (0 for a perfect map, 1 for predicting zero).
        detach_target: stop gradients into ``f(a(x))``, so that the encoder is pulled only
            through the steered side.
        gather_distributed: for ``"mse"`` under DDP: sum the denominator ``sum |t|^2`` over all
            processes (with gradients), so that DDP's average of the per-process losses and
            gradients equals the loss of the whole batch. ``"cosine"`` is a mean over rows
            and needs nothing (for equal per-process batches).

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
        if self.distance == "cosine":
            return (1 - F.cosine_similarity(steered, target, dim=1)).mean()
        error = (steered - target).pow(2).sum()
        if self.gather_distributed and _distributed.world_size() > 1:
            total = _distributed.gather(target.pow(2).sum(dim=1)).sum()
            return _distributed.world_size() * error / total.clamp_min(1e-12)
        return error / target.pow(2).sum().clamp_min(1e-12)
