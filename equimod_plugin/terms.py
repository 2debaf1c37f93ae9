"""Loss terms computed from backbone features and the views' augmentation parameters.

A term is what :class:`~equimod_plugin.branch.EquivarianceBranch` adds to the user's loss.
It receives the backbone features of the originals and of the views, and the views'
parameters, and returns a scalar loss; it also reports metrics of its last call for
logging. :class:`Term` is that contract; :class:`EquiModTerm` and :class:`SteeringTerm`
implement it, and :func:`build_term` is the one place where a term named in a config
(``"equimod"``, ``"steering"``, ``"monitor"``) is built for a backbone's feature width.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from equimod_plugin._checks import check_flags, check_like, check_matrix, check_views
from equimod_plugin.augment import ParamAugment
from equimod_plugin.augment.layout import STANDARDIZED
from equimod_plugin.heads import EquivarianceHead, EquivarianceOutput, mlp
from equimod_plugin.losses import EquiModLoss
from equimod_plugin.metrics import equivariance_metrics
from equimod_plugin.steering import Kind, SteeringLoss, SteeringOperator

__all__ = [
    "TERM_BUILDERS",
    "EquiModTerm",
    "Monitor",
    "SteeringTerm",
    "Term",
    "TermSpec",
    "build_term",
]


@runtime_checkable
class Term(Protocol):
    """What a branch needs of a term (an ``nn.Module`` in practice).

    Attributes:
        feature_dim: width D of the backbone features it takes.
        param_dim: width P of the augmentation parameters it takes.
    """

    feature_dim: int
    param_dim: int

    def __call__(self, features_o: Tensor, features_views: Tensor, params: Tensor) -> Tensor:
        """Scalar loss from ``(B, D)``, ``(V, B, D)`` features and ``(V, B, P)`` parameters."""
        ...

    def metrics(self) -> dict[str, Tensor]:
        """Metrics of the last call, for logging: detached 0-dim tensors."""
        ...


TermSpec = Term | str | Callable[..., Term]
Objective = Literal["regression", "contrastive"]
"""A term, its name (``"equimod"``, ``"steering"``), or a builder
``(feature_dim, augment, **kwargs) -> Term``."""


class EquiModTerm(nn.Module):
    """EquiMod's equivariance term: :class:`EquivarianceHead` followed by its loss.

    - [0] EquiMod, Devillers & Lefort, ICLR 2023, https://arxiv.org/abs/2211.01244

    Args:
        feature_dim: width D of the backbone features.
        param_dim: width P of the augmentation parameters (``aug.layout.param_dim``).
        loss: the loss on ``(y_views, y_pred)``; default :class:`EquiModLoss` with the
            official temperature 0.2.
        head_kwargs: the widths of :class:`EquivarianceHead` (``hidden_dim``,
            ``output_dim``, ``param_embed_dim``, ``predictor_hidden_dims``,
            ``num_projector_layers``), the official code's by default.

    Attributes:
        feature_dim: width D of the backbone features.
        param_dim: width P of the augmentation parameters.
        head: the :class:`EquivarianceHead`.

    Example:
        >>> import torch
        >>> term = EquiModTerm(feature_dim=32, param_dim=18, hidden_dim=64)
        >>> loss = term(torch.randn(8, 32), torch.randn(2, 8, 32), torch.randn(2, 8, 18))
        >>> loss.shape, sorted(term.metrics())
        (torch.Size([]), ['absolute', 'cos_original', 'cos_pred', 'loss', 'relative'])
    """

    def __init__(
        self,
        feature_dim: int,
        param_dim: int,
        loss: nn.Module | None = None,
        **head_kwargs: Any,
    ) -> None:
        super().__init__()
        self.head = EquivarianceHead(feature_dim, param_dim, **head_kwargs)
        self.feature_dim, self.param_dim = feature_dim, param_dim
        self.loss = EquiModLoss() if loss is None else loss
        self._last: tuple[EquivarianceOutput, Tensor] | None = None

    @classmethod
    def build(cls, feature_dim: int, augment: ParamAugment, **kwargs: Any) -> EquiModTerm:
        """The term for ``feature_dim`` features and ``augment``'s parameters.

        The head standardises the parameters (``standardize_params``) unless ``augment``
        uses the ``"official_standardized"`` encoding, which the official constants already
        standardise; pass ``standardize_params`` to choose.
        """
        kwargs.setdefault("standardize_params", augment.layout.encoding != STANDARDIZED)
        return cls(feature_dim, augment.layout.param_dim, **kwargs)

    def forward(self, features_o: Tensor, features_views: Tensor, params: Tensor) -> Tensor:
        """Loss of predicting the views' embeddings.

        Args:
            features_o: ``(B, D)`` backbone features of the originals.
            features_views: ``(V, B, D)`` backbone features of the views.
            params: ``(V, B, P)`` the views' augmentation parameters.

        Returns:
            the scalar loss (not weighted).
        """
        out = self.head(features_o, features_views, params)
        loss: Tensor = self.loss(out.y_views, out.y_pred)
        self._last = (EquivarianceOutput(*(t.detach() for t in out)), loss.detach())
        return loss

    def metrics(self) -> dict[str, Tensor]:
        """EquiMod's equivariance metrics and the loss of the last call, as detached 0-dim
        tensors (no host synchronisation; ``float(value)`` for a number)."""
        if self._last is None:
            raise RuntimeError("metrics() needs a forward call first")
        out, loss = self._last
        return {"loss": loss, **equivariance_metrics(*out)}


class SteeringTerm(nn.Module):
    """The steering term of Bhardwaj et al.: ``M(a) e(x_o)`` should match ``e(a(x_o))``.

    ``e`` is the embedding the operator acts on (``term.embed``):

    - by default the *standardised* backbone features ``e(x) = BN(f(x))``, a ``BatchNorm1d``
      without affine parameters (batch statistics in training, running statistics in eval
      mode): on raw features a cosine or MSE loss has a shortcut, since an encoder that adds
      one large component shared by all images brings every raw cosine near 1 without
      steering anything. ``standardize=False`` steers the raw features;
    - with ``projector=(hidden, ..., out)``, a separate steering projector ``e = g_s(f(x))``
      (Linear-BN-ReLU per hidden width, then Linear and a BatchNorm without affine), as
      EquiMod's term has its own projector: the steering loss then shapes a space of its own
      rather than the features the invariance loss shapes.

    Two objectives:

    - ``"contrastive"`` (default): EquiMod's NT-Xent
      (:class:`~equimod_plugin.losses.EquiModLoss`, temperature 0.2 unless ``loss`` is given)
      between the steered and the true view embeddings: the positive of ``M(a_k) e_o`` is
      ``e(x_k)``, and the other view of the same image is a negative, so a space where the
      views coincide cannot reach the minimum.
    - ``"regression"``: ``loss(M(a) e_o, e_a)``, ``SteeringLoss("cosine")`` unless ``loss`` is
      given (a :class:`~equimod_plugin.steering.SteeringLoss` as ``loss`` selects it). It has an
      invariant minimum (``M = I`` and an encoder that ignores ``a``); trained jointly with
      BYOL on tint24 it cut the object probe from 62 to 25 % (``docs/steering.md``), where the
      contrastive objective raised it to 70 %.

    At test time, steer in the same space: :meth:`SteeredTTA.from_term
    <equimod_plugin.tta.SteeredTTA.from_term>` appends ``term.embed`` to the encoder.

    - [0] Bhardwaj et al., Steerable Equivariant Representation Learning, 2023,
      https://arxiv.org/abs/2302.11349

    Args:
        feature_dim: width D of the backbone features.
        param_dim: width P of the augmentation parameters.
        identity: ``(P,)`` identity parameters of the augmentation's layout.
        kind: the operator's parameterisation (``"low_rank"``, ``"exponential"``, ``"full"``).
        loss: the objective's loss (see above for the defaults).
        standardize: steer standardised features (default) or raw features; without
            ``projector`` only.
        objective: ``"contrastive"`` or ``"regression"``; default: ``"regression"`` when
            ``loss`` is a ``SteeringLoss``, else ``"contrastive"``.
        projector: widths of a steering projector (hidden widths then the output width E),
            or ``None`` to steer the backbone features.
        operator_kwargs: ``rank``, ``num_generators``, ``hidden_dim`` of the operator.

    Attributes:
        feature_dim: width D of the backbone features.
        param_dim: width P of the augmentation parameters.
        embed: the module from backbone features ``(N, D)`` to the steered space ``(N, E)``.
        operator: the :class:`~equimod_plugin.steering.SteeringOperator` of ``kind`` on E.

    Example:
        >>> import torch
        >>> term = SteeringTerm(feature_dim=32, param_dim=18, rank=4)
        >>> loss = term(torch.randn(8, 32), torch.randn(2, 8, 32), torch.randn(2, 8, 18))
        >>> loss.shape, sorted(term.metrics())
        (torch.Size([]), ['cos_original', 'cos_steered', 'loss'])
        >>> term = SteeringTerm(32, 18, objective="contrastive", projector=(64, 16), rank=4)
        >>> loss = term(torch.randn(8, 32), torch.randn(2, 8, 32), torch.randn(2, 8, 18))
        >>> term.operator.dim, loss.shape
        (16, torch.Size([]))
    """

    def __init__(
        self,
        feature_dim: int,
        param_dim: int,
        identity: Tensor | None = None,
        kind: Kind = "low_rank",
        loss: nn.Module | None = None,
        standardize: bool = True,
        objective: Objective | None = None,
        projector: Sequence[int] | None = None,
        **operator_kwargs: int,
    ) -> None:
        super().__init__()
        if objective is None:
            objective = "regression" if isinstance(loss, SteeringLoss) else "contrastive"
        if objective not in ("regression", "contrastive"):
            raise ValueError(f"objective must be 'regression' or 'contrastive', got {objective!r}")
        check_flags(standardize=standardize)
        if projector is not None:
            widths = list(projector) if isinstance(projector, (list, tuple)) else []
            if not widths or not all(
                isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths
            ):
                raise ValueError(
                    f"projector must be a non-empty sequence of positive ints (hidden widths, "
                    f"then the output width), or None, got {projector!r}"
                )
            if not standardize:
                raise ValueError(
                    "standardize=False steers the raw backbone features; with a projector the "
                    "steered space is the projector's output: drop one of the two arguments"
                )
            self.embed: nn.Module = mlp(feature_dim, widths[:-1], widths[-1])
            dim = widths[-1]
        else:
            self.embed = nn.BatchNorm1d(feature_dim, affine=False) if standardize else nn.Identity()
            dim = feature_dim
        self.operator = SteeringOperator(
            dim, param_dim, kind=kind, identity=identity, **operator_kwargs
        )
        self.feature_dim, self.param_dim = feature_dim, param_dim
        self.objective = objective
        if loss is None:
            loss = SteeringLoss() if objective == "regression" else EquiModLoss(temperature=0.2)
        self.loss = loss
        self._last: tuple[Tensor, Tensor, Tensor, Tensor] | None = None

    @classmethod
    def build(cls, feature_dim: int, augment: ParamAugment, **kwargs: Any) -> SteeringTerm:
        """The term for ``feature_dim`` features; the operator's identity is ``augment``'s."""
        identity = augment.identity_params(1)[0]
        return cls(feature_dim, augment.layout.param_dim, identity, **kwargs)

    def forward(self, features_o: Tensor, features_views: Tensor, params: Tensor) -> Tensor:
        """Loss (not weighted) of steering the originals' embeddings to the views'.

        Shapes as :meth:`EquiModTerm.forward`; the originals and the views are embedded
        together, in one call.
        """
        dim = self.feature_dim
        check_matrix(features_o, "features_o", cols=dim, what="feature_dim")
        batch = features_o.shape[0]
        check_views(features_views, "features_views", rows=batch, cols=dim, what="feature_dim")
        views = features_views.shape[0]
        check_views(params, "params", views=views, rows=batch, cols=self.param_dim, what="P")
        check_like(
            self.operator.identity,
            "term",
            features_o=features_o,
            features_views=features_views,
            params=params,
        )
        embedded = self.embed(torch.cat([features_o, features_views.flatten(0, 1)]))
        original = embedded[:batch].repeat(views, 1)
        target = embedded[batch:]
        steered = self.operator(original, params.flatten(0, 1))
        if self.objective == "contrastive":
            shape = (views, batch)
            loss: Tensor = self.loss(target.unflatten(0, shape), steered.unflatten(0, shape))
        else:
            loss = self.loss(steered, target)
        self._last = (original.detach(), steered.detach(), target.detach(), loss.detach())
        return loss

    def metrics(self) -> dict[str, Tensor]:
        """Loss, mean ``cos(M e_o, e_a)`` and, for reference, mean ``cos(e_o, e_a)``, as
        detached 0-dim tensors.

        ``e`` are the embeddings the operator acts on (``term.embed`` of the features).
        """
        if self._last is None:
            raise RuntimeError("metrics() needs a forward call first")
        original, steered, target, loss = self._last
        with torch.no_grad():
            return {
                "loss": loss,
                "cos_steered": F.cosine_similarity(steered, target).mean(),
                "cos_original": F.cosine_similarity(original, target).mean(),
            }


class Monitor(nn.Module):
    """A term trained on detached features: it measures equivariance, the encoder never feels it.

    Wraps any term (EquiMod's by default): its head learns to predict the views from features
    whose gradients are cut, so an invariance-only baseline trained through the same branch
    gets EquiMod's equivariance metrics from a *trained* head (a ``weight=0`` branch would
    report an untrained one). Add its loss as usual: it trains the head only.

    Args:
        term: the term to train on detached features.

    Example:
        >>> import torch
        >>> monitor = Monitor(EquiModTerm(feature_dim=8, param_dim=3, hidden_dim=16))
        >>> f = torch.randn(4, 8, requires_grad=True)
        >>> monitor(f, torch.randn(2, 4, 8), torch.randn(2, 4, 3)).backward()
        >>> f.grad is None, sorted(monitor.metrics())[:2]
        (True, ['absolute', 'cos_original'])
    """

    def __init__(self, term: Term) -> None:
        super().__init__()
        if not isinstance(term, nn.Module) or not callable(getattr(term, "metrics", None)):
            raise TypeError(f"term must be a Term module (e.g. EquiModTerm), got {term!r:.80}")
        self.term = term
        self.feature_dim, self.param_dim = term.feature_dim, term.param_dim

    @classmethod
    def build(cls, feature_dim: int, augment: ParamAugment, **kwargs: Any) -> Monitor:
        """A monitor of EquiMod's term for ``feature_dim`` features and ``augment``."""
        return cls(EquiModTerm.build(feature_dim, augment, **kwargs))

    def forward(self, features_o: Tensor, features_views: Tensor, params: Tensor) -> Tensor:
        """The wrapped term's loss on detached features (shapes as the term's)."""
        return self.term(features_o.detach(), features_views.detach(), params)

    def metrics(self) -> dict[str, Tensor]:
        """The wrapped term's metrics of the last call."""
        return self.term.metrics()  # type: ignore[no-any-return]


TERM_BUILDERS: dict[str, Callable[..., Term]] = {
    "equimod": EquiModTerm.build,
    "steering": SteeringTerm.build,
    "monitor": Monitor.build,
}
"""The terms a config can name, and their builders ``(feature_dim, augment, **kwargs)``."""


def build_term(spec: TermSpec, feature_dim: int, augment: ParamAugment, **kwargs: Any) -> Term:
    """The term ``spec`` names, for ``feature_dim`` features and ``augment``'s parameters.

    Args:
        spec: a :class:`Term` (returned as is; it must not get ``kwargs``), a name
            (``"equimod"`` or ``"steering"``), or a builder
            ``(feature_dim, augment, **kwargs) -> Term`` such as ``EquiModTerm.build``.
        feature_dim: width D of the backbone's flattened features.
        augment: the views' augmentation (its layout's width, identity parameters).
        kwargs: the builder's keyword arguments (head widths, ``loss``, operator ``kind``...);
            ``None`` values are left out.

    Example:
        >>> from equimod_plugin import augment
        >>> term = build_term("steering", 32, augment.byol(16), rank=2)
        >>> type(term).__name__, term.feature_dim, term.param_dim
        ('SteeringTerm', 32, 18)
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if isinstance(spec, nn.Module):
        if kwargs:
            raise ValueError(
                f"term is a built {type(spec).__name__}, so it takes no more arguments; got "
                f"{sorted(kwargs)}: pass them to its constructor instead"
            )
        if spec.feature_dim != feature_dim:
            raise ValueError(
                f"term takes features of width {spec.feature_dim} but the backbone returns "
                f"{feature_dim}"
            )
        return spec  # type: ignore[return-value]
    if isinstance(spec, str):
        if spec not in TERM_BUILDERS:
            raise ValueError(f"term must be one of {sorted(TERM_BUILDERS)}, got {spec!r}")
        spec = TERM_BUILDERS[spec]
    if not callable(spec):
        raise TypeError(
            f"term must be a Term module, one of {sorted(TERM_BUILDERS)} or a builder "
            f"(feature_dim, augment, **kwargs) -> Term, got {spec!r}"
        )
    return spec(feature_dim, augment, **kwargs)
