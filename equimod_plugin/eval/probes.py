"""Frozen-feature evaluation: feature extraction, linear probe, kNN accuracy, eta squared and
the ROC AUC of a detection score.

Pure torch and deterministic: the linear probe is a convex problem solved by full-batch
L-BFGS from zero weights, so it needs no seed, and the kNN classifier breaks vote ties
towards the lowest class index. Everything runs on the device of the features given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from equimod_plugin._checks import check_matrix, check_same_device

__all__ = [
    "WEIGHT_DECAYS",
    "eta_squared",
    "extract_features",
    "knn_accuracy",
    "linear_probe",
    "roc_auc",
]

_KNN_CHUNK_ELEMENTS = 2**24  # similarity entries per chunk of test rows (64 MB in float32)


def extract_features(
    encoder: nn.Module,
    images: Tensor,
    batch_size: int = 256,
    transform: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Encode ``images (N, C, H, W)`` in eval mode without gradients into features ``(N, D)``.

    Batches are moved to the device of the encoder's parameters (or buffers), passed through
    ``transform`` (e.g. normalisation) if given, encoded and flattened; the features are
    returned on the device of ``images``. Every submodule's train/eval mode is restored.

    >>> encoder = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1))
    >>> extract_features(encoder, torch.rand(10, 1, 8, 8), batch_size=4).shape
    torch.Size([10, 4])
    >>> encoder.training
    True
    """
    if not isinstance(images, Tensor) or images.ndim < 2 or images.shape[0] == 0:
        raise ValueError(
            f"images must be a non-empty tensor with a leading batch dimension (N, ...), got "
            f"{getattr(images, 'shape', type(images))}"
        )
    _check_positive_int(batch_size, "batch_size")
    tensors = [*encoder.parameters(), *encoder.buffers()]
    device = tensors[0].device if tensors else images.device
    modes = [(module, module.training) for module in encoder.modules()]
    encoder.eval()
    try:
        with torch.no_grad():
            features = []
            for batch in images.split(batch_size):
                batch = batch.to(device)
                if transform is not None:
                    batch = transform(batch)
                features.append(encoder(batch).flatten(1).to(images.device))
    finally:
        for module, training in modes:
            module.training = training
    return torch.cat(features)


def _check_positive_int(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _compute_dtype(features: Tensor) -> torch.dtype:
    """float16 / bfloat16 features are evaluated in float32, float64 ones in float64."""
    return torch.promote_types(features.dtype, torch.float32)


def _check_labels(labels: Tensor, name: str, n: int, rows_of: str) -> None:
    if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or labels.ndim != 1:
        raise TypeError(
            f"{name} must be an int64 tensor (N,) of class indices, got "
            f"{getattr(labels, 'dtype', type(labels))} with shape {getattr(labels, 'shape', '')}"
        )
    if labels.shape[0] != n:
        raise ValueError(f"{name} has {labels.shape[0]} entries but {rows_of} has {n} rows")
    if n and labels.min() < 0:
        raise ValueError(f"{name} must be non-negative class indices, got min {labels.min()}")


def _check_split_features(
    train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor
) -> None:
    check_matrix(train_features, "train_features")
    check_matrix(test_features, "test_features", cols=train_features.shape[1])
    if train_features.shape[0] == 0 or test_features.shape[0] == 0:
        raise ValueError(
            f"train_features and test_features need at least one row each, got shapes "
            f"{tuple(train_features.shape)} and {tuple(test_features.shape)}"
        )
    if train_features.dtype != test_features.dtype:
        raise ValueError(
            f"train_features and test_features must share one dtype, got "
            f"{train_features.dtype} and {test_features.dtype}; cast one of them, e.g. "
            f"test_features.to({train_features.dtype})"
        )
    _check_labels(train_labels, "train_labels", train_features.shape[0], "train_features")
    _check_labels(test_labels, "test_labels", test_features.shape[0], "test_features")
    check_same_device(
        train_features=train_features,
        train_labels=train_labels,
        test_features=test_features,
        test_labels=test_labels,
    )


WEIGHT_DECAYS = (1e-5, 1e-4, 1e-3, 1e-2)
"""``linear_probe``'s default candidates: sklearn's ``C = 1 / (N * weight_decay)`` from 20 to
0.02 for 5000 training rows."""


def linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    weight_decay: float | Sequence[float] = WEIGHT_DECAYS,
    max_iter: int = 100,
    validation_fraction: float = 0.2,
) -> float:
    """Top-1 test accuracy in [0, 1] of a linear softmax classifier on frozen features ``(N, D)``.

    Features are standardised with the mean and standard deviation of ``train_features``;
    the classifier minimises the mean cross-entropy plus ``weight_decay / 2 * ||W||^2``
    (bias not penalised; scikit-learn's ``LogisticRegression(C=1 / (N * weight_decay))``)
    with full-batch L-BFGS (strong Wolfe line search, at most ``max_iter`` iterations) from
    zero weights. The problem is convex, so the result does not depend on a seed.

    The regularisation moves the accuracy (by several points on hue labels), so by default
    it is chosen by validation: each candidate of ``weight_decay`` is fit on all but a
    held-out ``validation_fraction`` of the training rows (a fixed random split), the one with
    the best held-out accuracy (the strongest among ties) is fit again on all training rows,
    and only that fit sees the test rows. A single number skips the validation.

    Labels are non-negative int64 ``(N,)`` of any size; the classes are the distinct labels of
    ``train_labels`` (a test label absent from them counts as an error). float16 and bfloat16
    features are evaluated in float32; both feature matrices must share one dtype. 5000 x 512
    features take a few seconds on two CPU cores.

    >>> g = torch.Generator().manual_seed(0)
    >>> labels = torch.randint(3, (300,), generator=g)
    >>> features = torch.randn(300, 8, generator=g) + 3 * F.one_hot(labels, 8)
    >>> linear_probe(features[:200], labels[:200], features[200:], labels[200:]) > 0.9
    True
    """
    _check_split_features(train_features, train_labels, test_features, test_labels)
    candidates = _check_weight_decay(weight_decay)
    _check_positive_int(max_iter, "max_iter")
    if not 0 < validation_fraction < 1:
        raise ValueError(
            f"validation_fraction must be a number in (0, 1), got {validation_fraction!r}"
        )
    dtype = _compute_dtype(train_features)
    train_features = train_features.detach().to(dtype)
    test_features = test_features.detach().to(dtype)
    if len(candidates) > 1:
        generator = torch.Generator().manual_seed(0)
        order = torch.randperm(len(train_labels), generator=generator).to(train_labels.device)
        held_out = round(validation_fraction * len(train_labels))
        if not 0 < held_out < len(train_labels):
            raise ValueError(
                f"validation_fraction={validation_fraction} of {len(train_labels)} training rows "
                f"leaves no row to fit or to validate on; pass one weight_decay instead"
            )
        fit_rows, validation_rows = order[held_out:], order[:held_out]
        scores = [
            _fit_and_score(
                train_features[fit_rows],
                train_labels[fit_rows],
                train_features[validation_rows],
                train_labels[validation_rows],
                candidate,
                max_iter,
            )
            for candidate in candidates
        ]
        best = max(scores)
        candidates = [max(c for c, s in zip(candidates, scores, strict=True) if s == best)]
    return _fit_and_score(
        train_features, train_labels, test_features, test_labels, candidates[0], max_iter
    )


def _check_weight_decay(weight_decay: float | Sequence[float]) -> list[float]:
    values = [weight_decay] if isinstance(weight_decay, (int, float)) else list(weight_decay)
    if not values or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < math.inf
        for v in values
    ):
        raise ValueError(
            f"weight_decay must be a finite number >= 0 or a non-empty sequence of them, "
            f"got {weight_decay!r}"
        )
    return [float(v) for v in values]


def _fit_and_score(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    weight_decay: float,
    max_iter: int,
) -> float:
    mean = train_features.mean(0)
    std = train_features.std(0, correction=0).clamp_min(1e-8)
    x_train = (train_features - mean) / std
    x_test = (test_features - mean) / std
    # classes are the distinct train labels: a label of 10**9 costs one class, not 10**9
    classes, train_targets = train_labels.unique(sorted=True, return_inverse=True)
    classifier = nn.Linear(x_train.shape[1], len(classes)).to(x_train)
    nn.init.zeros_(classifier.weight)
    nn.init.zeros_(classifier.bias)
    optimizer = torch.optim.LBFGS(
        classifier.parameters(), max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(classifier(x_train), train_targets)
        loss = loss + weight_decay / 2 * classifier.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        predictions = classes[classifier(x_test).argmax(1)]
    return (predictions == test_labels).float().mean().item()


def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Top-1 test accuracy in [0, 1] of a cosine-similarity weighted kNN classifier.

    Each test row of ``test_features (M, D)`` takes its ``k`` most cosine-similar rows of
    ``train_features (N, D)``, and every neighbour votes for its label with weight
    ``exp(similarity / temperature)`` (InstDisc, as in lightly and solo-learn); the class with
    the largest vote sum wins (a tie goes to the smallest label). Test rows are processed in
    chunks so memory stays bounded. Similarities and weights are computed in float32 for
    float16 and bfloat16 features (``exp(1 / 0.07)`` overflows float16), in float64 for
    float64 ones, and the weights are divided by the nearest neighbour's (same winner, no
    overflow at small temperatures); both feature matrices must share one dtype. Labels are
    non-negative int64 of any size: votes are counted per distinct train label.

    >>> g = torch.Generator().manual_seed(0)
    >>> labels = torch.randint(4, (200,), generator=g)
    >>> features = torch.randn(200, 8, generator=g) + 3 * F.one_hot(labels, 8)
    >>> knn_accuracy(features[:150], labels[:150], features[150:], labels[150:], k=10) > 0.9
    True
    """
    _check_split_features(train_features, train_labels, test_features, test_labels)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= train_features.shape[0]:
        raise ValueError(
            f"k must be between 1 and the number of training samples "
            f"({train_features.shape[0]}), an int, got {k!r}"
        )
    if not 0 < temperature < math.inf:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    dtype = _compute_dtype(train_features)
    train = F.normalize(train_features.detach().to(dtype), dim=1)
    classes, train_targets = train_labels.unique(sorted=True, return_inverse=True)
    chunk = max(1, _KNN_CHUNK_ELEMENTS // train.shape[0])
    correct = 0
    with torch.no_grad():
        for test, labels in zip(test_features.split(chunk), test_labels.split(chunk), strict=True):
            similarity = F.normalize(test.to(dtype), dim=1) @ train.T
            top_similarity, top_index = similarity.topk(k, dim=1)
            votes = torch.zeros(len(test), len(classes), dtype=dtype, device=train.device)
            # weights relative to the nearest neighbour's, in (0, 1]: the same winner as
            # exp(similarity / temperature), which overflows for a small temperature
            weights = ((top_similarity - top_similarity[:, :1]) / temperature).exp()
            votes.scatter_add_(1, train_targets[top_index], weights)
            correct += int((classes[votes.argmax(1)] == labels).sum())
    return correct / len(test_labels)


def eta_squared(features: Tensor, labels: Tensor) -> float:
    """Share in [0, 1] of the total variance of ``features (N, D)`` explained by ``labels (N,)``.

    Between-class sum of squares divided by total sum of squares, both summed over the ``D``
    dimensions (computed in float64): 1 when every row equals its class mean, about 0 when the
    features do not depend on the label (for ``N`` much larger than the number of classes).
    Labels are int64 and may be any integers. Raises ``ValueError`` for constant features.

    This is the *pooled* ratio: each dimension counts by its variance, as it does for the
    Euclidean and cosine geometry that kNN and the equivariance measures use, so a
    near-constant dimension cannot dominate. The average of the per-dimension ratios instead
    weighs every dimension alike; on real features the two differ by more than 0.1, so compare
    values of one kind only.

    >>> features = torch.tensor([[0.0], [2.0], [10.0], [12.0]])
    >>> eta_squared(features, torch.tensor([0, 0, 1, 1]))  # between 100, total 104
    0.9615384615384616
    """
    check_matrix(features, "features", what="D")
    if features.shape[0] == 0:
        raise ValueError("features must have at least one row, got 0")
    if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or labels.ndim != 1:
        raise TypeError(
            f"labels must be an int64 tensor (N,), got "
            f"{getattr(labels, 'dtype', type(labels))} with shape {getattr(labels, 'shape', '')}"
        )
    if labels.shape[0] != features.shape[0]:
        raise ValueError(
            f"labels has {labels.shape[0]} entries but features has {features.shape[0]} rows"
        )
    check_same_device(features=features, labels=labels)
    x = features.detach().to(torch.float64)
    centred = x - x.mean(0)
    total = centred.square().sum()
    if total == 0:
        raise ValueError("features are constant (zero total variance): eta squared is undefined")
    classes, inverse = labels.unique(return_inverse=True)
    sums = torch.zeros(len(classes), x.shape[1], dtype=x.dtype, device=x.device)
    sums.index_add_(0, inverse, centred)
    counts = torch.bincount(inverse, minlength=len(classes)).to(x.dtype)
    between = (sums.square().sum(1) / counts).sum()
    return min(max((between / total).item(), 0.0), 1.0)


def _check_scores(scores: Tensor, name: str) -> None:
    if not isinstance(scores, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (N,), got {type(scores)}")
    if scores.ndim != 1 or scores.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 1-D tensor (N,), got {tuple(scores.shape)}")
    if scores.dtype == torch.bool or scores.is_complex():
        raise TypeError(f"{name} must hold real numbers, got dtype {scores.dtype}")
    if scores.is_floating_point() and bool(scores.isnan().any()):
        raise ValueError(f"{name} must not contain NaN")


def roc_auc(scores_negative: Tensor, scores_positive: Tensor) -> float:
    """Area under the ROC curve of a score that should be higher for positives, in [0, 1].

    The Mann-Whitney U statistic divided by ``N_neg * N_pos``: the probability that a random
    positive scores higher than a random negative, a tie counting one half. Computed from
    the ranks of the pooled scores (tied scores share their average rank) in float64, so it
    costs a sort, not ``N_neg * N_pos`` comparisons. 1 for a perfect detector, 0.5 for one
    that ranks at chance (or gives everything the same score), 0 for a reversed one.

    Args:
        scores_negative: ``(N_neg,)`` scores of the negatives (e.g. in-distribution).
        scores_positive: ``(N_pos,)`` scores of the positives (e.g. out-of-distribution).

    Both must be non-empty 1-D real tensors on one device, without NaN (infinities rank as
    the largest or smallest scores).

    >>> roc_auc(torch.tensor([0.1, 0.4, 0.35]), torch.tensor([0.8, 0.4]))  # 5.5 of 6 pairs
    0.9166666666666666
    >>> roc_auc(torch.zeros(3), torch.zeros(2))
    0.5
    """
    _check_scores(scores_negative, "scores_negative")
    _check_scores(scores_positive, "scores_positive")
    check_same_device(scores_negative=scores_negative, scores_positive=scores_positive)
    n_neg, n_pos = scores_negative.shape[0], scores_positive.shape[0]
    pooled = torch.cat([scores_negative.detach(), scores_positive.detach()]).to(torch.float64)
    _, inverse, counts = pooled.unique(sorted=True, return_inverse=True, return_counts=True)
    counts = counts.to(torch.float64)
    average_rank = counts.cumsum(0) - (counts - 1) / 2  # 1-based ranks, ties averaged
    rank_sum = average_rank[inverse[n_neg:]].sum().item()
    u = rank_sum - n_pos * (n_pos + 1) / 2
    return min(max(u / (n_neg * n_pos), 0.0), 1.0)
