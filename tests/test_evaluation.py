import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from equimod_plugin.eval import probes as evaluation
from equimod_plugin.eval.probes import (
    eta_squared,
    extract_features,
    knn_accuracy,
    linear_probe,
    roc_auc,
)


def clusters(n: int, d: int, classes: int, spread: float, seed: int):
    """Gaussian blobs around random class centres: features (n, d), labels (n,)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(classes, (n,), generator=g)
    centres = torch.randn(classes, d, generator=g)
    return centres[labels] + spread * torch.randn(n, d, generator=g), labels


def split(features, labels, n_train):
    return features[:n_train], labels[:n_train], features[n_train:], labels[n_train:]


# extract_features


def make_encoder():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Dropout(0.5))


def test_extract_features_shape_eval_mode_and_restored_modes():
    encoder = make_encoder()
    encoder[1].running_mean.fill_(0.3)
    encoder[2].eval()
    images = torch.rand(10, 1, 5, 5)
    features = extract_features(encoder, images, batch_size=3)
    assert features.shape == (10, 2 * 3 * 3)
    assert not features.requires_grad
    assert encoder.training and encoder[0].training and not encoder[2].training
    encoder.eval()
    with torch.no_grad():
        expected = encoder(images).flatten(1)
    torch.testing.assert_close(features, expected)
    assert torch.equal(encoder[1].running_mean, torch.full((2,), 0.3))


def test_extract_features_transform_and_batch_size():
    encoder = make_encoder()
    images = torch.rand(7, 1, 5, 5)
    one = extract_features(encoder, images, batch_size=1, transform=lambda x: 2 * x - 1)
    all_at_once = extract_features(encoder, 2 * images - 1, batch_size=100)
    torch.testing.assert_close(one, all_at_once)
    with pytest.raises(ValueError, match="batch_size"):
        extract_features(encoder, images, batch_size=0)
    with pytest.raises(ValueError, match="images must be a non-empty"):
        extract_features(encoder, images[:0])


def test_extract_features_restores_modes_after_an_error():
    encoder = make_encoder()

    def failing(x):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        extract_features(encoder, torch.rand(2, 1, 5, 5), transform=failing)
    assert all(module.training for module in encoder.modules())


# linear_probe


def test_linear_probe_separable():
    features, labels = clusters(1200, 32, 10, spread=0.1, seed=0)
    assert linear_probe(*split(features, labels, 1000)) > 0.95


def test_linear_probe_random_labels_is_near_chance():
    g = torch.Generator().manual_seed(1)
    features = torch.randn(2000, 32, generator=g)
    labels = torch.randint(10, (2000,), generator=g)
    assert 0.03 < linear_probe(*split(features, labels, 1000)) < 0.17


@pytest.mark.exactness
def test_linear_probe_standardises_and_is_deterministic():
    features, labels = clusters(600, 16, 5, spread=1.0, seed=2)
    args = split(features, labels, 400)
    accuracy = linear_probe(*args)
    assert 0.3 < accuracy < 1.0
    assert linear_probe(*args) == accuracy
    scale = torch.logspace(-3, 3, 16)
    shifted = split(features * scale + 100, labels, 400)
    assert linear_probe(*shifted) == pytest.approx(accuracy, abs=0.01)


def test_linear_probe_needs_no_gradients_from_the_caller():
    features, labels = clusters(300, 8, 3, spread=0.1, seed=3)
    with torch.no_grad():
        assert linear_probe(*split(features, labels, 200)) > 0.95


@pytest.mark.parametrize("c", [0.05, 1.0, 20.0])
def test_linear_probe_matches_scikit_learn(c):
    """The same objective as LogisticRegression(C) on standardised features: weight decay is
    1 / (N * C), and both solvers reach the same optimum, so the test accuracies agree."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    features, labels = clusters(1500, 16, 6, spread=2.0, seed=5)
    train_x, train_y, test_x, test_y = split(features, labels, 1000)
    mean, std = train_x.mean(0), train_x.std(0, correction=0)
    reference = linear_model.LogisticRegression(C=c, max_iter=5000, tol=1e-10)
    reference.fit(((train_x - mean) / std).numpy(), train_y.numpy())
    expected = reference.score(((test_x - mean) / std).numpy(), test_y.numpy())
    assert 0.4 < expected < 0.95  # regularisation matters in this regime
    ours = linear_probe(train_x, train_y, test_x, test_y, weight_decay=1 / (1000 * c), max_iter=500)
    assert ours == pytest.approx(expected, abs=2 / len(test_y))


def test_linear_probe_chooses_the_weight_decay_by_validation():
    features, labels = clusters(1200, 16, 5, spread=1.0, seed=6)
    args = split(features, labels, 1000)
    one_each = {c: linear_probe(*args, weight_decay=c) for c in (1e-4, 30.0)}
    assert one_each[1e-4] > one_each[30.0] + 0.2  # 30 shrinks the classifier to near chance
    # the held-out rows pick 1e-4 whatever the order of the candidates
    assert linear_probe(*args, weight_decay=(30.0, 1e-4)) == one_each[1e-4]
    assert linear_probe(*args, weight_decay=[1e-4, 30.0]) == one_each[1e-4]
    # the default candidates pick one of them: the result is one of their single fits
    singles = {linear_probe(*args, weight_decay=c) for c in evaluation.WEIGHT_DECAYS}
    assert linear_probe(*args) in singles


# knn_accuracy


def test_knn_clustered():
    features, labels = clusters(1500, 16, 10, spread=0.1, seed=4)
    assert knn_accuracy(*split(features, labels, 1000)) > 0.95


def test_knn_weights_votes_by_similarity():
    train = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8]])
    train_labels = torch.tensor([1, 0, 0])
    test = torch.tensor([[1.0, 0.0]])
    # Two class-0 neighbours at similarity 0.6 against one class-1 neighbour at similarity 1:
    # class 1 wins for 2 exp(0.6 / T) < exp(1 / T), i.e. T < 0.4 / ln 2.
    for temperature, expected in ((0.5, 1), (0.7, 0)):
        accuracy = knn_accuracy(train, train_labels, test, torch.tensor([expected]), 3, temperature)
        assert accuracy == 1.0, temperature


def test_knn_chunking_does_not_change_the_result(monkeypatch):
    features, labels = clusters(400, 8, 4, spread=1.0, seed=5)
    args = split(features, labels, 300)
    accuracy = knn_accuracy(*args, k=7)
    monkeypatch.setattr(evaluation, "_KNN_CHUNK_ELEMENTS", 1)
    # chunks of one row use another matrix product kernel: similarities may differ in the
    # last bit, which may flip a near tie, so one of the 100 test samples is tolerated
    assert knn_accuracy(*args, k=7) == pytest.approx(accuracy, abs=0.011)


def test_knn_validation():
    features, labels = clusters(30, 4, 3, spread=0.1, seed=6)
    args = split(features, labels, 20)
    assert knn_accuracy(*args, k=20) >= 0
    with pytest.raises(ValueError, match=r"k must be between 1 and the number of training"):
        knn_accuracy(*args, k=21)
    with pytest.raises(ValueError, match="k must be"):
        knn_accuracy(*args, k=0)
    with pytest.raises(ValueError, match="temperature"):
        knn_accuracy(*args, temperature=0.0)


@pytest.mark.parametrize("probe", [linear_probe, knn_accuracy])
def test_probe_input_validation(probe):
    features, labels = clusters(30, 4, 3, spread=0.1, seed=7)
    train, train_labels, test, test_labels = split(features, labels, 20)
    with pytest.raises(TypeError, match="train_labels must be an int64"):
        probe(train, train_labels.int(), test, test_labels)
    with pytest.raises(TypeError, match="test_labels must be an int64"):
        probe(train, train_labels, test, test_labels.float())
    with pytest.raises(ValueError, match="test_labels has 9 entries but test_features has 10"):
        probe(train, train_labels, test, test_labels[:9])
    with pytest.raises(ValueError, match="test_features must have shape"):
        probe(train, train_labels, test[:, :3], test_labels)
    with pytest.raises(ValueError, match="non-negative"):
        probe(train, train_labels - 5, test, test_labels)
    nan = train.clone()
    nan[0, 0] = float("nan")
    with pytest.raises(ValueError, match="train_features must be finite"):
        probe(nan, train_labels, test, test_labels)
    with pytest.raises(ValueError, match="at least one row"):
        probe(train, train_labels, test[:0], test_labels[:0])


# eta_squared


def test_eta_squared_of_class_means_is_one():
    features, labels = clusters(200, 6, 4, spread=0.0, seed=8)
    assert eta_squared(features, labels) == pytest.approx(1.0)


def test_eta_squared_of_independent_features_is_near_zero():
    g = torch.Generator().manual_seed(9)
    features = torch.randn(5000, 8, generator=g)
    labels = torch.randint(10, (5000,), generator=g)
    # Expected value under independence: (classes - 1) / (N - 1), about 0.002.
    assert eta_squared(features, labels) < 0.006


def test_eta_squared_by_hand():
    features = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0], [7.0, 10.0]])
    labels = torch.tensor([-4, -4, 7, 7])
    # Grand mean (4, 4); class means (2, 1) and (6, 7).
    total = (9 + 1 + 1 + 9) + (16 + 4 + 0 + 36)
    between = 2 * ((4 + 9) + (4 + 9))
    assert eta_squared(features, labels) == pytest.approx(between / total)


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(2, 60),
    d=st.integers(1, 5),
    classes=st.integers(1, 8),
    seed=st.integers(0, 2**31),
    scale=st.floats(1e-3, 1e3),
)
def test_eta_squared_is_a_share_and_ignores_label_names(n, d, classes, seed, scale):
    g = torch.Generator().manual_seed(seed)
    features = scale * torch.randn(n, d, generator=g)
    labels = torch.randint(classes, (n,), generator=g)
    eta = eta_squared(features, labels)
    assert 0.0 <= eta <= 1.0
    assert eta_squared(features, 1000 - 3 * labels) == pytest.approx(eta, abs=1e-9)
    if labels.unique().numel() == 1:
        assert eta == pytest.approx(0.0, abs=1e-12)


def test_eta_squared_validation():
    features = torch.randn(5, 2)
    labels = torch.tensor([0, 1, 0, 1, 0])
    with pytest.raises(TypeError, match="labels must be an int64"):
        eta_squared(features, labels.float())
    with pytest.raises(ValueError, match="labels has 4 entries but features has 5 rows"):
        eta_squared(features, labels[:4])
    with pytest.raises(ValueError, match="features must be finite"):
        eta_squared(features / 0, labels)
    with pytest.raises(ValueError, match="constant"):
        eta_squared(torch.ones(5, 2), labels)
    with pytest.raises(ValueError, match="features must have shape"):
        eta_squared(features[:, 0], labels)


def test_features_with_gradients_are_accepted():
    features, labels = clusters(120, 4, 3, spread=0.1, seed=10)
    features.requires_grad_(True)
    args = split(features, labels, 90)
    assert linear_probe(*args) > 0.9
    assert knn_accuracy(*args, k=5) > 0.9
    assert 0.9 < eta_squared(features, labels) <= 1.0


# roc_auc


def pairwise_auc(negative: torch.Tensor, positive: torch.Tensor) -> float:
    """The definition: share of (negative, positive) pairs ranked right, ties counting 1/2."""
    diff = positive[:, None].double() - negative[None, :].double()
    return ((diff > 0).double() + 0.5 * (diff == 0).double()).mean().item()


def test_roc_auc_separated_reversed_and_tied():
    low, high = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([3.0, 4.0])
    assert roc_auc(low, high) == 1.0
    assert roc_auc(high, low) == 0.0
    assert roc_auc(torch.ones(4), torch.ones(7)) == 0.5
    assert roc_auc(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0])) == 0.5


def test_roc_auc_ties_by_hand():
    # positives 2 and 5 against negatives 1, 2, 2, 6: 2 beats 1 and ties twice (2), 5 beats 3.
    negative = torch.tensor([1.0, 2.0, 2.0, 6.0])
    positive = torch.tensor([2.0, 5.0])
    assert roc_auc(negative, positive) == pytest.approx(5 / 8)


@settings(max_examples=100, deadline=None)
@given(
    n_neg=st.integers(1, 40),
    n_pos=st.integers(1, 40),
    levels=st.integers(1, 6),
    shift=st.sampled_from([0.0, 0.5, 1.0]),
    seed=st.integers(0, 2**31),
)
def test_roc_auc_matches_pairwise_counting(n_neg, n_pos, levels, shift, seed):
    g = torch.Generator().manual_seed(seed)
    negative = torch.randint(levels, (n_neg,), generator=g).float()  # few levels: many ties
    positive = torch.randint(levels, (n_pos,), generator=g).float() + shift
    assert roc_auc(negative, positive) == pytest.approx(pairwise_auc(negative, positive), abs=1e-12)


def test_roc_auc_is_rank_based():
    g = torch.Generator().manual_seed(11)
    negative, positive = torch.randn(300, generator=g), torch.randn(200, generator=g) + 0.7
    auc = roc_auc(negative, positive)
    assert 0.6 < auc < 0.85
    assert roc_auc(negative.exp() * 5 - 3, positive.exp() * 5 - 3) == auc
    assert roc_auc(positive, negative) == pytest.approx(1 - auc)
    assert roc_auc(negative.double(), positive.double()) == pytest.approx(auc)
    assert roc_auc(torch.tensor([1, 2]), torch.tensor([3])) == 1.0  # integer scores
    infinite = torch.tensor([float("inf")])
    assert roc_auc(negative, infinite) == 1.0 and roc_auc(infinite, positive) == 0.0


def test_roc_auc_accepts_scores_with_gradients():
    negative = torch.tensor([0.0, 1.0], requires_grad=True)
    assert roc_auc(negative, torch.tensor([2.0])) == 1.0


def test_roc_auc_validation():
    ok = torch.tensor([0.0, 1.0])
    with pytest.raises(TypeError, match="scores_negative must be a torch.Tensor"):
        roc_auc([0.0, 1.0], ok)
    with pytest.raises(ValueError, match="scores_positive must be a non-empty 1-D"):
        roc_auc(ok, torch.zeros(0))
    with pytest.raises(ValueError, match="scores_negative must be a non-empty 1-D"):
        roc_auc(torch.zeros(2, 2), ok)
    with pytest.raises(ValueError, match="scores_positive must not contain NaN"):
        roc_auc(ok, torch.tensor([float("nan")]))
    with pytest.raises(TypeError, match="real numbers"):
        roc_auc(ok > 0, ok)
    with pytest.raises(TypeError, match="real numbers"):
        roc_auc(ok, ok.to(torch.complex64))
