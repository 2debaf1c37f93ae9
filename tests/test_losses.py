import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st

from equimod_plugin.heads import EquivarianceHead
from equimod_plugin.losses import EquiModCosineLoss, EquiModLoss

FAST = settings(max_examples=25, deadline=None)


def embeddings(
    num_views: int, batch_size: int, dim: int, seed: int = 0, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    y_views = torch.randn(num_views, batch_size, dim, generator=generator, dtype=dtype)
    y_pred = torch.randn(num_views, batch_size, dim, generator=generator, dtype=dtype)
    return y_views, y_pred


def reference_loss(
    y_views: torch.Tensor, y_pred: torch.Tensor, temperature: float, exclude_sibling: bool
) -> float:
    """Slow NT-Xent: -log softmax of the positive, one anchor at a time."""
    num_views, batch_size, _ = y_views.shape
    keys, vectors = [], []
    for side, stack in enumerate((y_views, y_pred)):
        for k in range(num_views):
            for i in range(batch_size):
                keys.append((side, k, i))
                vectors.append((stack[k, i] / stack[k, i].norm()).tolist())

    def similarity(a: int, b: int) -> float:
        return sum(x * y for x, y in zip(vectors[a], vectors[b], strict=True)) / temperature

    total = 0.0
    for a, (side, k, i) in enumerate(keys):
        positive = keys.index((1 - side, k, i))
        candidates = [
            similarity(a, c)
            for c, (_, k2, i2) in enumerate(keys)
            if c != a and not (exclude_sibling and i2 == i and k2 != k)
        ]
        log_normaliser = math.log(sum(math.exp(s) for s in candidates))
        total += log_normaliser - similarity(a, positive)
    return total / len(keys)


@FAST
@given(
    num_views=st.integers(1, 3),
    batch_size=st.integers(1, 6),
    dim=st.integers(1, 8),
    temperature=st.sampled_from([0.1, 0.2, 0.5, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_official_loss_equals_lightly_ntxent(
    num_views: int, batch_size: int, dim: int, temperature: float, seed: int
) -> None:
    from lightly.loss import NTXentLoss

    y_views, y_pred = embeddings(num_views, batch_size, dim, seed)
    expected = NTXentLoss(temperature=temperature)(y_pred.flatten(0, 1), y_views.flatten(0, 1))
    torch.testing.assert_close(EquiModLoss(temperature)(y_views, y_pred), expected)


@FAST
@given(
    num_views=st.integers(1, 3),
    batch_size=st.integers(1, 5),
    dim=st.integers(1, 6),
    exclude_sibling=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_loss_equals_slow_reference(
    num_views: int, batch_size: int, dim: int, exclude_sibling: bool, seed: int
) -> None:
    y_views, y_pred = embeddings(num_views, batch_size, dim, seed)
    loss = EquiModLoss(0.2, exclude_sibling=exclude_sibling)(y_views, y_pred)
    assert loss.item() == pytest.approx(reference_loss(y_views, y_pred, 0.2, exclude_sibling))


def test_sibling_exclusion_changes_the_loss_only_with_several_views() -> None:
    y_views, y_pred = embeddings(2, 8, 16)
    official, paper = EquiModLoss(), EquiModLoss(exclude_sibling=True)
    assert official(y_views, y_pred).item() > paper(y_views, y_pred).item()
    torch.testing.assert_close(official(y_views[:1], y_pred[:1]), paper(y_views[:1], y_pred[:1]))


@pytest.mark.parametrize("exclude_sibling", [False, True])
def test_perfect_predictions_give_a_lower_loss(exclude_sibling: bool) -> None:
    y_views, y_pred = embeddings(2, 16, 32)
    loss_fn = EquiModLoss(exclude_sibling=exclude_sibling)
    assert loss_fn(y_views, y_views.clone()).item() < loss_fn(y_views, y_pred).item() - 1.0


def test_loss_keeps_gradients_of_both_inputs() -> None:
    y_views, y_pred = (t.requires_grad_() for t in embeddings(2, 4, 8))
    EquiModLoss()(y_views, y_pred).backward()
    assert y_views.grad.abs().sum() > 0 and y_pred.grad.abs().sum() > 0


def test_training_a_head_decreases_the_loss() -> None:
    torch.manual_seed(0)
    head = EquivarianceHead(16, 4, hidden_dim=32, output_dim=16, param_embed_dim=8)
    features_o = torch.randn(16, 16)
    params = torch.randn(2, 16, 4)
    features_views = features_o + 0.5 * torch.randn(2, 16, 16)
    loss_fn = EquiModLoss()
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    losses = []
    for _ in range(50):
        _, y_views, y_pred = head(features_o, features_views, params)
        loss = loss_fn(y_views, y_pred)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("exclude_sibling", [False, True])
def test_gather_distributed_without_process_group_is_local(exclude_sibling: bool) -> None:
    assert not dist.is_initialized()
    y_views, y_pred = embeddings(2, 6, 8)
    local = EquiModLoss(exclude_sibling=exclude_sibling)(y_views, y_pred)
    gathered = EquiModLoss(exclude_sibling=exclude_sibling, gather_distributed=True)
    torch.testing.assert_close(gathered(y_views, y_pred), local)


WORLD_SIZE = 2
# Per-rank batch sizes: equal, and unequal as the last batch of an epoch without drop_last.
SPLITS = {"equal": (3, 3), "unequal": (5, 3)}


def rank_rows(split: str, rank: int) -> slice:
    sizes = SPLITS[split]
    return slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))


def _distributed_worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        results = {}
        for split in SPLITS:
            for exclude_sibling in (False, True):
                y_views, y_pred = embeddings(2, sum(SPLITS[split]), 8)
                rows = rank_rows(split, rank)
                y_views = y_views[:, rows].requires_grad_()
                y_pred = y_pred[:, rows].requires_grad_()
                loss_fn = EquiModLoss(exclude_sibling=exclude_sibling, gather_distributed=True)
                loss = loss_fn(y_views, y_pred)
                loss.backward()
                results[split, exclude_sibling] = (loss.detach(), y_views.grad, y_pred.grad)
        # Different embedding sizes cannot be gathered: every rank raises, none hangs.
        y_views, y_pred = embeddings(2, 3, 8 + rank)
        try:
            EquiModLoss(gather_distributed=True)(y_views, y_pred)
        except ValueError as error:
            results["mismatch"] = str(error)
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    out_dir = tmp_path_factory.mktemp("distributed")
    mp.spawn(
        _distributed_worker,
        args=(str(out_dir / "init"), str(out_dir)),
        nprocs=WORLD_SIZE,
        join=True,
    )
    return [torch.load(out_dir / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]


@pytest.mark.parametrize("split", list(SPLITS))
@pytest.mark.parametrize("exclude_sibling", [False, True])
def test_gather_distributed_matches_one_process_with_the_whole_batch(
    split: str, exclude_sibling: bool, distributed_results: list[dict]
) -> None:
    """B11: with batches of 5 and 3 (gloo aborted before), as with equal batches."""
    y_views, y_pred = (t.requires_grad_() for t in embeddings(2, sum(SPLITS[split]), 8))
    loss = EquiModLoss(exclude_sibling=exclude_sibling)(y_views, y_pred)
    loss.backward()
    rank_losses = [results[split, exclude_sibling][0] for results in distributed_results]
    # DDP averages the ranks' losses and gradients: the averages are the whole batch's.
    torch.testing.assert_close(sum(rank_losses) / WORLD_SIZE, loss.detach())
    for rank, results in enumerate(distributed_results):
        _, grad_views, grad_pred = results[split, exclude_sibling]
        rows = rank_rows(split, rank)
        # Each rank gets the gradient of the sum of all ranks' losses; DDP then averages.
        torch.testing.assert_close(grad_views, WORLD_SIZE * y_views.grad[:, rows])
        torch.testing.assert_close(grad_pred, WORLD_SIZE * y_pred.grad[:, rows])


def test_gather_distributed_rejects_different_embedding_sizes_on_every_rank(
    distributed_results: list[dict],
) -> None:
    for results in distributed_results:
        assert "same shape apart from the batch dimension" in results["mismatch"]
        assert "rank 0: 8, rank 1: 9" in results["mismatch"]


def test_cosine_loss_on_known_angles() -> None:
    y_views = torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[1.0, 1.0], [3.0, 0.0]]])
    y_pred = torch.tensor([[[2.0, 0.0], [1.0, 0.0]], [[-1.0, -1.0], [1.0, 1.0]]])
    # 1 - cos per pair: 0 (same direction), 1 (orthogonal), 2 (opposite), 1 - 1/sqrt(2).
    expected = (0.0 + 1.0 + 2.0 + 1.0 - 1 / math.sqrt(2)) / 4
    assert EquiModCosineLoss()(y_views, y_pred).item() == pytest.approx(expected)


@pytest.mark.parametrize("loss_fn", [EquiModLoss(), EquiModCosineLoss()])
@pytest.mark.parametrize(
    ("y_views", "y_pred", "error", "match"),
    [
        (torch.randn(4, 8), torch.randn(4, 8), ValueError, r"y_views must have shape \(V, B, E\)"),
        (torch.randn(2, 4, 8), torch.randn(2, 4, 7), ValueError, r"y_pred\[0\] must have shape"),
        (torch.randn(2, 4, 8), torch.randn(2, 5, 8), ValueError, r"y_pred\[0\] must have shape"),
        (torch.randn(2, 4, 8), torch.randn(3, 4, 8), ValueError, r"y_pred must have shape \(2,"),
        (torch.randn(0, 4, 8), torch.randn(0, 4, 8), ValueError, "y_views must have at least"),
        (torch.randn(2, 0, 8), torch.randn(2, 0, 8), ValueError, "y_views must have at least"),
        (torch.ones(2, 4, 8, dtype=torch.int64), torch.randn(2, 4, 8), ValueError, "floating"),
        (torch.randn(2, 4, 8), torch.full((2, 4, 8), math.nan), ValueError, "y_pred.* finite"),
        ([[[0.0]]], torch.randn(1, 1, 1), TypeError, "y_views must be a torch.Tensor"),
    ],
)
def test_losses_reject_bad_inputs(
    loss_fn: torch.nn.Module,
    y_views: torch.Tensor,
    y_pred: torch.Tensor,
    error: type[Exception],
    match: str,
) -> None:
    with pytest.raises(error, match=match):
        loss_fn(y_views, y_pred)


@pytest.mark.parametrize("temperature", [0.0, -0.5, math.nan, math.inf, -math.inf])
def test_loss_rejects_bad_temperatures(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature must be a positive finite number"):
        EquiModLoss(temperature=temperature)


@pytest.mark.parametrize("temperature", [True, False, "0.2", None, torch.tensor(0.2)])
def test_loss_rejects_temperatures_that_are_not_numbers(temperature: object) -> None:
    """``EquiModLoss(temperature=True)`` used to train at temperature 1.0."""
    with pytest.raises(TypeError, match="temperature must be a positive finite number.* got"):
        EquiModLoss(temperature=temperature)  # type: ignore[arg-type]


@pytest.mark.parametrize("argument", ["exclude_sibling", "gather_distributed"])
@pytest.mark.parametrize("value", [1, "no", None])
def test_loss_rejects_flags_that_are_not_bools(argument: str, value: object) -> None:
    with pytest.raises(TypeError, match=f"{argument} must be a bool, got {value!r}"):
        EquiModLoss(**{argument: value})  # type: ignore[arg-type]


def test_loss_accepts_integer_and_numpy_temperatures() -> None:
    np = pytest.importorskip("numpy")
    y_views, y_pred = embeddings(2, 4, 8)
    expected = EquiModLoss(1.0)(y_views, y_pred)
    for temperature in (1, np.float32(1.0), np.int64(1)):
        loss_fn = EquiModLoss(temperature)
        assert type(loss_fn.temperature) is float
        torch.testing.assert_close(loss_fn(y_views, y_pred), expected)
