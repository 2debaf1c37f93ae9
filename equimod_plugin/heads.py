"""Heads that map backbone features and augmentation parameters to embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from equimod_plugin._checks import check_like, check_matrix, check_positive_int, check_views

__all__ = ["EquivarianceHead", "EquivarianceOutput"]


def mlp(input_dim: int, hidden_dims: Sequence[int], output_dim: int) -> nn.Sequential:
    """Linear -> BatchNorm -> ReLU per hidden width, then Linear -> BatchNorm without affine."""
    layers: list[nn.Module] = []
    for width in hidden_dims:
        layers += [nn.Linear(input_dim, width, bias=False), nn.BatchNorm1d(width), nn.ReLU()]
        input_dim = width
    layers += [
        nn.Linear(input_dim, output_dim, bias=False),
        nn.BatchNorm1d(output_dim, affine=False),
    ]
    return nn.Sequential(*layers)


class EquivarianceOutput(NamedTuple):
    """Embeddings produced by :class:`EquivarianceHead`.

    Attributes:
        y_o: Embedding of the original images, shape ``(B, E)``.
        y_views: Embeddings of the augmented views, shape ``(V, B, E)``.
        y_pred: Embeddings of the views predicted from ``y_o`` and the augmentation
            parameters, shape ``(V, B, E)``.
    """

    y_o: Tensor
    y_views: Tensor
    y_pred: Tensor


class EquivarianceHead(nn.Module):
    """Equivariance branch of EquiMod: projector g', parameter projector and predictor u.

    "our module learns to predict the displacement in the embedding space caused by the
    augmentations" [0]. The head embeds the backbone features of the original images and of
    V augmented views with a projector g', embeds the augmentation parameters of each view
    with a linear parameter projector, and predicts each view's embedding from the original
    embedding and the projected parameters: ``y_pred[k] = u(cat[y_o, proj(params[k])])``.
    Train ``y_pred`` towards ``y_views`` with :class:`~equimod_plugin.losses.EquiModLoss`.

    The defaults are those of the official code (``--proj_head_eq_layers=2048-2048-``):

    - projector g': ``num_projector_layers`` linear layers ``input_dim -> hidden_dim -> ...
      -> output_dim``, each hidden one followed by BatchNorm and ReLU, the last one by
      BatchNorm without affine parameters. The default 3 layers (two hidden layers of 2048)
      is what the official code runs; lightly's SimCLR v1 head has 2.
    - parameter projector: ``Linear(param_dim, param_embed_dim, bias=False)`` then
      ``BatchNorm1d(param_embed_dim)``. With ``standardize_params=True`` a
      ``BatchNorm1d(param_dim, affine=False)`` standardises each parameter column first, the
      role the official code's hard-coded ``(p - mean) / std`` plays: the Linear's gradient
      for a column scales with that column's variance, so unstandardised columns (crop
      coordinates next to rare gates) train at learning rates that differ by orders of
      magnitude. The parameters' distribution does not drift during training, so the running
      statistics used in eval mode converge to the true moments.
    - predictor u: on ``cat[y_o, proj(params)]``, one ``Linear(output_dim +
      param_embed_dim, output_dim, bias=False)`` then BatchNorm without affine; each entry of
      ``predictor_hidden_dims`` inserts a Linear -> BatchNorm -> ReLU block before it.

    Linear layers have no bias, as in the official code: every one is followed by BatchNorm.

    ``forward`` projects the original images and all views in one projector call, so the
    BatchNorm statistics are shared across them as in the official code. In training mode
    BatchNorm needs at least 2 samples per batch; in eval mode any batch size works.

    - [0] EquiMod, Devillers & Lefort, ICLR 2023, https://arxiv.org/abs/2211.01244

    Args:
        input_dim: Width D of the backbone features.
        param_dim: Width P of the augmentation parameter vectors.
        hidden_dim: Width of the hidden layers of the projector g'.
        output_dim: Width E of the embeddings y.
        param_embed_dim: Width of the projected augmentation parameters.
        predictor_hidden_dims: Widths of the hidden layers of the predictor u; empty (the
            default) for the single linear layer of the official code.
        num_projector_layers: Number of linear layers of the projector g' (at least 1).
        standardize_params: Standardise the parameters with a non-affine BatchNorm before
            the parameter projector. Off by default, as in the official head, whose input the
            ``"official_standardized"`` encoding already standardises;
            :meth:`EquiModTerm.build <equimod_plugin.terms.EquiModTerm.build>` turns it on for
            the other encodings.

    Examples:
        >>> import torch
        >>> head = EquivarianceHead(input_dim=32, param_dim=17, hidden_dim=64, output_dim=16)
        >>> features_o = torch.randn(8, 32)  # backbone features of the originals (B, D)
        >>> features_views = torch.randn(2, 8, 32)  # features of V=2 views (V, B, D)
        >>> params = torch.randn(2, 8, 17)  # augmentation parameters of each view (V, B, P)
        >>> y_o, y_views, y_pred = head(features_o, features_views, params)
        >>> tuple(y_o.shape), tuple(y_views.shape), tuple(y_pred.shape)
        ((8, 16), (2, 8, 16), (2, 8, 16))
    """

    def __init__(
        self,
        input_dim: int,
        param_dim: int,
        hidden_dim: int = 2048,
        output_dim: int = 128,
        param_embed_dim: int = 128,
        predictor_hidden_dims: Sequence[int] = (),
        num_projector_layers: int = 3,
        standardize_params: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (
            ("input_dim", input_dim),
            ("param_dim", param_dim),
            ("hidden_dim", hidden_dim),
            ("output_dim", output_dim),
            ("param_embed_dim", param_embed_dim),
            ("num_projector_layers", num_projector_layers),
        ):
            check_positive_int(value, name)
        if isinstance(predictor_hidden_dims, str) or not isinstance(
            predictor_hidden_dims, Sequence
        ):
            raise TypeError(
                "predictor_hidden_dims must be a sequence of positive ints such as (512,), "
                f"got {predictor_hidden_dims!r}"
            )
        for i, value in enumerate(predictor_hidden_dims):
            check_positive_int(value, f"predictor_hidden_dims[{i}]")
        self.input_dim = input_dim
        self.param_dim = param_dim
        self.output_dim = output_dim

        self.projector = mlp(input_dim, [hidden_dim] * (num_projector_layers - 1), output_dim)
        if not isinstance(standardize_params, bool):
            raise TypeError(f"standardize_params must be a bool, got {standardize_params!r}")
        standardize: list[nn.Module] = (
            [nn.BatchNorm1d(param_dim, affine=False)] if standardize_params else []
        )
        self.param_projector = nn.Sequential(
            *standardize,
            nn.Linear(param_dim, param_embed_dim, bias=False),
            nn.BatchNorm1d(param_embed_dim),
        )
        self.predictor = mlp(output_dim + param_embed_dim, predictor_hidden_dims, output_dim)

    def _check_like_weights(self, **tensors: Tensor) -> None:
        """Inputs must share the head's device and, outside autocast, its dtype."""
        weight = self.param_projector[-2].weight
        check_like(weight, "head", **tensors)
        if torch.is_autocast_enabled(weight.device.type):
            return
        for name, t in tensors.items():
            if t.dtype != weight.dtype:
                raise ValueError(
                    f"{name} is {t.dtype} but the head's parameters are {weight.dtype}; cast "
                    f"the inputs with .to({weight.dtype}), the head with .to({t.dtype}), or "
                    "run under torch.autocast"
                )

    def _check_batch_size(self, t: Tensor, name: str) -> None:
        if self.training and t.shape[0] < 2:
            raise ValueError(
                f"{name} must hold at least 2 samples in training mode (BatchNorm needs more "
                f"than one), got shape {tuple(t.shape)}; call .eval() to embed a single sample"
            )

    def project(self, features: Tensor) -> Tensor:
        """Embeds backbone features with the projector g'.

        Args:
            features: Backbone features, shape ``(N, input_dim)``.

        Returns:
            Embeddings y, shape ``(N, output_dim)``.
        """
        check_matrix(features, "features", cols=self.input_dim, what="input_dim")
        self._check_like_weights(features=features)
        self._check_batch_size(features, "features")
        y: Tensor = self.projector(features)
        return y

    def predict(self, y_o: Tensor, params: Tensor) -> Tensor:
        """Predicts the embeddings of augmented views from the original embeddings.

        Args:
            y_o: Embeddings of the original images, shape ``(B, output_dim)``.
            params: Augmentation parameters of one view per image, shape ``(B, param_dim)``.

        Returns:
            Predicted embeddings of the views, shape ``(B, output_dim)``.
        """
        check_matrix(y_o, "y_o", cols=self.output_dim, what="output_dim")
        check_matrix(params, "params", rows=y_o.shape[0], cols=self.param_dim, what="param_dim")
        self._check_like_weights(y_o=y_o, params=params)
        self._check_batch_size(y_o, "y_o")
        return self._predict(y_o, params)

    def _predict(self, y_o: Tensor, params: Tensor) -> Tensor:
        y_pred: Tensor = self.predictor(torch.cat([y_o, self.param_projector(params)], dim=1))
        return y_pred

    def forward(
        self, features_o: Tensor, features_views: Tensor, params: Tensor
    ) -> EquivarianceOutput:
        """Embeds the originals and the views and predicts the views' embeddings.

        Args:
            features_o: Backbone features of the original images, shape ``(B, input_dim)``.
            features_views: Backbone features of V >= 1 augmented views of the same images,
                shape ``(V, B, input_dim)``.
            params: Augmentation parameters of each view, shape ``(V, B, param_dim)``.

        Returns:
            ``EquivarianceOutput(y_o (B, E), y_views (V, B, E), y_pred (V, B, E))`` with
            ``E = output_dim``.
        """
        check_matrix(features_o, "features_o", cols=self.input_dim, what="input_dim")
        batch_size = features_o.shape[0]
        check_views(
            features_views,
            "features_views",
            rows=batch_size,
            cols=self.input_dim,
            what="input_dim",
        )
        num_views = features_views.shape[0]
        check_views(
            params,
            "params",
            views=num_views,
            rows=batch_size,
            cols=self.param_dim,
            what="param_dim",
        )
        self._check_like_weights(
            features_o=features_o, features_views=features_views, params=params
        )
        self._check_batch_size(features_o, "features_o")

        features = torch.cat([features_o, features_views.flatten(0, 1)], dim=0)
        y = self.projector(features)
        y_o, y_views = y[:batch_size], y[batch_size:]
        y_pred = self._predict(y_o.repeat(num_views, 1), params.flatten(0, 1))
        return EquivarianceOutput(
            y_o=y_o,
            y_views=y_views.unflatten(0, (num_views, batch_size)),
            y_pred=y_pred.unflatten(0, (num_views, batch_size)),
        )
