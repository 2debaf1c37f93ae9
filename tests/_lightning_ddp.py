"""Train with Lightning's ``strategy="ddp"`` on 2 CPU processes (gloo); run by test_production_ddp.

``python tests/_lightning_ddp.py lightly,solo OUT_DIR``: Lightning launches the second rank by
running this command again; both fits run in these two processes, one after the other. Each
rank writes ``OUT_DIR/{kind}_rank{r}.pt`` with its losses per step, its parameters before and
after training and the first batch it trained on.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]

STEPS = 3


def lightly_model_and_loader() -> tuple[Any, Any, Any]:
    import pytorch_lightning as pl  # the example's Lightning package (lightly's)
    from lightly_byol_lightning import BYOL  # the lightly Lightning example's module

    from equimod_plugin.eval.datasets import FashionMNISTSample
    from equimod_plugin.integrations.lightly import OriginalTransform

    dataset = FashionMNISTSample(OriginalTransform(32), n=2 * STEPS * 4)
    return pl, BYOL(), torch.utils.data.DataLoader(dataset, batch_size=4, drop_last=True)


def solo_model_and_loader() -> tuple[Any, Any, Any]:
    import lightning.pytorch as pl  # the package solo-learn and the contract use
    from test_solo_contract import BATCH, ContractBYOL, Originals, make_cfg

    from equimod_plugin.integrations.solo import equivariant

    model = equivariant(ContractBYOL)(make_cfg())
    loader = torch.utils.data.DataLoader(Originals(2 * STEPS * BATCH), batch_size=BATCH)
    return pl, model, loader


def main() -> None:
    sys.path[:0] = [str(REPO), str(REPO / "examples"), str(REPO / "tests")]
    kinds, out_dir = sys.argv[1].split(","), Path(sys.argv[2])
    for kind in kinds:
        fit(kind, out_dir)


def fit(kind: str, out_dir: Path) -> None:
    torch.manual_seed(0)
    build = {"lightly": lightly_model_and_loader, "solo": solo_model_and_loader}[kind]
    pl, model, loader = build()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    record: dict[str, Any] = {"losses": [], "first_batch": None}

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, i: int):
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            record["losses"].append(float(loss.detach()))
            if record["first_batch"] is None:
                record["first_batch"] = [t.detach().clone() for t in batch if torch.is_tensor(t)]

    trainer = pl.Trainer(
        max_epochs=1,  # STEPS batches per rank: the lightly example needs max_epochs
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Record()],
    )
    trainer.fit(model, loader)
    after = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save(
        {
            **record,
            "before": before,
            "after": after,
            "parameters": [name for name, _ in model.named_parameters()],
            "world_size": trainer.world_size,
        },
        out_dir / f"{kind}_rank{trainer.global_rank}.pt",
    )


if __name__ == "__main__":
    main()
