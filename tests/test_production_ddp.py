"""DDP: the equivariance losses and terms on 2 gloo processes equal one process on the whole batch.

``tests/test_losses.py`` checks :class:`EquiModLoss` with ``gather_distributed=True`` on its own;
here the terms are wrapped in ``DistributedDataParallel`` and trained for a few SGD steps (with
equal per-rank batches, and with batches of 5 and 3 for the losses that gather), and the
Lightning ``strategy="ddp"`` runs of the lightly example and of the solo-learn mixin are smoke
tested (``tests/_lightning_ddp.py``).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from equimod_plugin import EquiModCosineLoss, EquiModLoss, EquiModTerm, SteeringLoss, SteeringTerm

WORLD, DIM, P, STEPS = 2, 6, 5, 3
# Per-rank batch sizes: equal, and unequal as the last batch of an epoch without drop_last.
SPLITS = {"equal": (3, 3), "unequal": (5, 3)}
REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed gloo"
)


def make_term(name: str) -> nn.Module:
    """The terms in eval mode: BatchNorm uses running statistics, so samples are independent.

    In training mode DDP normalises with each rank's own batch statistics (use SyncBatchNorm on
    GPUs for global ones), which a single process on the whole batch cannot reproduce.
    """
    torch.manual_seed(0)
    if name == "equimod":
        loss = EquiModLoss(gather_distributed=True)
        term = EquiModTerm(DIM, P, loss=loss, hidden_dim=8, output_dim=4, param_embed_dim=4)
    elif name == "equimod_sibling":
        loss = EquiModLoss(exclude_sibling=True, gather_distributed=True)
        term = EquiModTerm(DIM, P, loss=loss, hidden_dim=8, output_dim=4, param_embed_dim=4)
    elif name == "equimod_cosine":
        term = EquiModTerm(DIM, P, loss=EquiModCosineLoss(), hidden_dim=8, output_dim=4)
    elif name == "steering_cosine":
        term = SteeringTerm(DIM, P, rank=2, hidden_dim=8, objective="regression")
    elif name == "steering_contrastive":  # the default objective, negatives gathered
        loss = EquiModLoss(temperature=0.2, gather_distributed=True)
        term = SteeringTerm(DIM, P, loss=loss, objective="contrastive", rank=2, hidden_dim=8)
    elif name == "steering_cosine_gathered":
        loss = SteeringLoss("cosine", gather_distributed=True)
        term = SteeringTerm(DIM, P, loss=loss, rank=2, hidden_dim=8)
    else:  # steering_mse
        loss = SteeringLoss("mse", gather_distributed=True)
        term = SteeringTerm(DIM, P, loss=loss, rank=2, hidden_dim=8)
    return term.eval()


TERMS = [
    "equimod",
    "equimod_sibling",
    "equimod_cosine",
    "steering_cosine",
    "steering_contrastive",
    "steering_cosine_gathered",
    "steering_mse",
]
# The losses that gather also match one process when the ranks' batch sizes differ (the
# plain cosine losses are per-rank means: DDP's average of them weights the ranks equally).
GATHERED = (
    "equimod",
    "equimod_sibling",
    "steering_contrastive",
    "steering_cosine_gathered",
    "steering_mse",
)
RUNS = [(name, "equal") for name in TERMS] + [(name, "unequal") for name in GATHERED]


def rank_rows(split: str, rank: int) -> slice:
    sizes = SPLITS[split]
    return slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))


def batches(step: int, b: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The whole batch of a step: features_o (B, D), features_views (2, B, D), params (2, B, P)."""
    g = torch.Generator().manual_seed(100 + step)
    return (
        torch.randn(b, DIM, generator=g),
        torch.randn(2, b, DIM, generator=g),
        torch.randn(2, b, P, generator=g),
    )


def train(term: nn.Module, split: str, rows: slice) -> dict[str, Any]:
    """STEPS SGD steps on ``rows`` of each batch: losses, first-step gradients, final weights."""
    optimizer = torch.optim.SGD(term.parameters(), lr=0.5)
    losses, grads = [], None
    for step in range(STEPS):
        f_o, f_views, params = batches(step, sum(SPLITS[split]))
        loss = term(f_o[rows], f_views[:, rows], params[:, rows])
        optimizer.zero_grad()
        loss.backward()
        if grads is None:
            grads = {n: p.grad.clone() for n, p in term.named_parameters()}
        optimizer.step()
        losses.append(loss.detach())
    module = term.module if isinstance(term, nn.parallel.DistributedDataParallel) else term
    weights = {n: p.detach().clone() for n, p in module.named_parameters()}
    return {"losses": torch.stack(losses), "grads": grads, "weights": weights}


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        results = {}
        for name, split in RUNS:
            ddp = nn.parallel.DistributedDataParallel(make_term(name))
            result = train(ddp, split, rank_rows(split, rank))
            result["grads"] = {n.removeprefix("module."): g for n, g in result["grads"].items()}
            results[name, split] = result
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out_dir = tmp_path_factory.mktemp("ddp_terms")
    mp.spawn(_worker, args=(str(out_dir / "init"), str(out_dir)), nprocs=WORLD, join=True)
    return [torch.load(out_dir / f"rank{rank}.pt") for rank in range(WORLD)]


def check_matches_one_process(
    name: str, ddp_results: list[dict[str, Any]], split: str = "equal"
) -> None:
    single = train(make_term(name), split, slice(None))
    ranks = [results[name, split] for results in ddp_results]
    # loss: the mean over ranks of each rank's loss is the loss of the whole batch
    torch.testing.assert_close(sum(r["losses"] for r in ranks) / WORLD, single["losses"])
    for n, grad in single["grads"].items():
        for r in ranks:  # DDP's averaged gradients are the whole batch's
            torch.testing.assert_close(r["grads"][n], grad, msg=f"gradient of {n}")
    for n, weight in single["weights"].items():
        # DDP applies one all-reduced gradient on every rank: the same arithmetic, bit for bit
        assert torch.equal(ranks[0]["weights"][n], ranks[1]["weights"][n]), n
        torch.testing.assert_close(ranks[0]["weights"][n], weight, msg=f"weight {n}")
    assert not torch.equal(single["weights"][n], make_term(name).state_dict()[n])  # it trained


@pytest.mark.slow
@pytest.mark.exactness
@pytest.mark.parametrize("name", TERMS[:4])
def test_ddp_term_training_equals_one_process_on_the_whole_batch(
    name: str, ddp_results: list[dict[str, Any]]
) -> None:
    check_matches_one_process(name, ddp_results)


@pytest.mark.slow
@pytest.mark.exactness
def test_ddp_steering_mse_equals_one_process_on_the_whole_batch(
    ddp_results: list[dict[str, Any]],
) -> None:
    check_matches_one_process("steering_mse", ddp_results)


@pytest.mark.slow
@pytest.mark.exactness
@pytest.mark.parametrize("name", GATHERED)
def test_ddp_with_unequal_rank_batches_equals_one_process_on_the_whole_batch(
    name: str, ddp_results: list[dict[str, Any]]
) -> None:
    """B11: ranks with 5 and 3 samples (gloo aborted in EquiModLoss's gather before)."""
    check_matches_one_process(name, ddp_results, "unequal")


@pytest.fixture(scope="module")
def lightning_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both Lightning fits in one 2-process DDP launch (process start-up dominates)."""
    out_dir = tmp_path_factory.mktemp("lightning_ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "_lightning_ddp.py"), "lightly,solo", str(out_dir)],
        cwd=out_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"DDP run failed:\n{result.stderr[-3000:]}"
    return out_dir


def is_statistic(key: str) -> bool:
    """BatchNorm running statistics: per rank under DDP (no SyncBatchNorm on CPU)."""
    return key.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")


@pytest.mark.slow
@pytest.mark.exactness
@pytest.mark.parametrize("kind", ["lightly", "solo"])
def test_lightning_ddp_strategy_trains_in_sync(kind: str, lightning_runs: Path) -> None:
    ranks = [torch.load(lightning_runs / f"{kind}_rank{rank}.pt") for rank in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    for r in ranks:
        assert len(r["losses"]) == 3 and all(math.isfinite(v) for v in r["losses"])
    # each rank trained on its own shard of the data ...
    assert not torch.equal(ranks[0]["first_batch"][0], ranks[1]["first_batch"][0])
    assert ranks[0]["losses"] != ranks[1]["losses"]
    # ... and DDP kept every parameter identical, the equivariance head's included
    names = ranks[0]["parameters"]
    assert any(n.startswith("equivariance.") for n in names)
    for key, value in ranks[0]["after"].items():
        if not is_statistic(key):
            assert torch.equal(value, ranks[1]["after"][key]), key
    trained = [n for n in names if not torch.equal(ranks[0]["after"][n], ranks[0]["before"][n])]
    assert any(n.startswith("equivariance.") for n in trained)
    assert any(n.startswith(("backbone.", "model.backbone.")) for n in trained)
