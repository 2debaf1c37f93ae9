"""Loss terms computed from backbone features and the views' augmentation parameters.

A term is what :class:`~equimod_plugin.wrap.EquivarianceBranch` adds to the user's loss. It
receives the backbone features of the originals and of the views, and the views'
parameters, all from one batched backbone pass, and returns a scalar loss. It also reports
metrics of its last call for logging.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from equimod_plugin.heads import EquivarianceHead, EquivarianceOutput
from equimod_plugin.losses import EquiModLoss
from equimod_plugin.metrics import equivariance_metrics

__all__ = ["EquiModTerm"]


class EquiModTerm(nn.Module):
    """EquiMod's equivariance term: :class:`EquivarianceHead` followed by its loss.

    - [0] EquiMod, Devillers & Lefort, ICLR 2023, https://arxiv.org/abs/2211.01244

    Args:
        feature_dim: width D of the backbone features.
        param_dim: width P of the augmentation parameters (``aug.layout.param_dim``).
        loss: the loss on ``(y_views, y_pred)``; default :class:`EquiModLoss` with the
            official temperature 0.2.
        hidden_dim, output_dim, param_embed_dim, predictor_hidden_dims, num_projector_layers:
            passed to :class:`EquivarianceHead` (defaults: the official code's).

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
        hidden_dim: int = 2048,
        output_dim: int = 128,
        param_embed_dim: int = 128,
        predictor_hidden_dims: Sequence[int] = (),
        num_projector_layers: int = 3,
    ) -> None:
        super().__init__()
        self.head = EquivarianceHead(
            feature_dim,
            param_dim,
            hidden_dim=hidden_dim,
            output_dim=output_dim,
            param_embed_dim=param_embed_dim,
            predictor_hidden_dims=predictor_hidden_dims,
            num_projector_layers=num_projector_layers,
        )
        self.loss = EquiModLoss() if loss is None else loss
        self._last: tuple[EquivarianceOutput, Tensor] | None = None

    @property
    def feature_dim(self) -> int:
        return self.head.input_dim

    @property
    def param_dim(self) -> int:
        return self.head.param_dim

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

    def metrics(self) -> dict[str, float]:
        """EquiMod's equivariance metrics and the loss of the last call, as floats."""
        if self._last is None:
            raise RuntimeError("metrics() needs a forward call first")
        out, loss = self._last
        return {"loss": float(loss), **equivariance_metrics(*out)}
