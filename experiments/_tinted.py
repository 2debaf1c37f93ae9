"""What the CPU experiments share: tinted Fashion-MNIST at 32 px, the branch's normalisation,
the quickstart's BYOL training loop with a branch, and the post-hoc fit of a steering operator.

Used by ``steering_eval.py``, ``augmentation_report.py`` and ``reproduce_cpu.py``, which import
it as a sibling module (``python experiments/<script>.py`` puts this folder on ``sys.path``).
The scripts take the model (``convnet``, ``BYOL``) from the installed quickstart,
``equimod_plugin.quickstart`` (the same file as ``examples/quickstart.py``).
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from lightly.loss import NegativeCosineSimilarity
from lightly.models.utils import update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import Tensor, nn

from equimod_plugin import SteeringLoss, SteeringOperator
from equimod_plugin.augment import Normalize
from equimod_plugin.branch import EquivarianceBranch
from equimod_plugin.eval.datasets import load_fashion_mnist, random_hue_labels, tint

#: What the branch feeds the backbone: ImageNet mean/std normalisation of [0, 1] images.
normalize = Normalize.imagenet()


def tinted_split(
    split: str, n: int, num_hues: int, seed: int, sample: bool | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` random images of a Fashion-MNIST split, tinted, and their class and hue labels.

    Images ``(n, 3, 32, 32)`` in [0, 1]; ``num_hues = 0`` keeps them grey (hue labels all 0).
    ``seed`` fixes the images and the hues; ``sample`` is passed to ``load_fashion_mnist``
    (``True``: the shipped 5000/1000 sample, ``None``: the full set where installed).
    """
    images, labels = load_fashion_mnist(split, sample=sample)
    g = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(labels), generator=g)[:n]
    hues = random_hue_labels(len(index), max(num_hues, 1), g)
    rgb = tint(images[index], hues, num_hues) if num_hues else images[index].expand(-1, 3, -1, -1)
    return F.interpolate(rgb, size=32, mode="bilinear").clamp(0, 1), labels[index], hues


#: The colour photos scikit-image ships (``skimage.data``), one content class each.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")


def photo_split(split: str, n: int, num_hues: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` random 32 px crops of scikit-image's colour photos, hue-rotated: a colour task on
    natural colours (Fashion-MNIST's tint colours grey objects instead).

    Content label: which of the :data:`PHOTOS` a crop comes from (training crops from the left
    70 % of each photo, test crops from the right 30 %). Hue label ``k``: the crop's hue is
    rotated by ``k / num_hues`` of a turn (``kornia.enhance.adjust_hue``). Crops cover 2-12 %
    of the photo's area (aspect ratio 1), resized with antialiasing. Images ``(n, 3, 32, 32)``
    in [0, 1]; ``seed`` fixes the crops and the hues.
    """
    import kornia
    import skimage.data

    g = torch.Generator().manual_seed(seed)
    photos = [torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1).float() / 255 for name in PHOTOS]
    labels = torch.randint(len(photos), (n,), generator=g)
    area = torch.empty(n).uniform_(0.02, 0.12, generator=g)
    corner = torch.rand(n, 2, generator=g)
    crops = []
    for i in range(n):
        photo = photos[int(labels[i])]
        h, w = photo.shape[1:]
        side = int(math.sqrt(float(area[i]) * h * w))
        left, width = (0, int(0.7 * w)) if split == "train" else (int(0.7 * w), w - int(0.7 * w))
        side = min(side, width, h)
        x0 = left + int(corner[i, 0] * (width - side))
        y0 = int(corner[i, 1] * (h - side))
        crop = photo[None, :, y0 : y0 + side, x0 : x0 + side]
        crops.append(F.interpolate(crop, size=32, mode="bilinear", antialias=True))
    images = torch.cat(crops).clamp(0, 1)
    hues = random_hue_labels(n, num_hues, g)
    angle = hues.float() / num_hues * 2 * math.pi
    angle = torch.where(angle > math.pi, angle - 2 * math.pi, angle)  # adjust_hue takes [-pi, pi]
    return kornia.enhance.adjust_hue(images, angle).clamp(0, 1), labels, hues


def fit_operator(
    e_o: Tensor, e_a: Tensor, params: Tensor, identity: Tensor, epochs: int, seed: int
) -> SteeringOperator:
    """Post-hoc low-rank operator on frozen embeddings ``e(x)``, ``e(a(x))`` ``(N, D)`` and the
    parameters ``(N, P)``: Adam (lr 3e-3, batches of 256) on the steering term's cosine loss."""
    torch.manual_seed(seed)
    operator = SteeringOperator(e_o.shape[1], params.shape[1], kind="low_rank", identity=identity)
    optimizer = torch.optim.Adam(operator.parameters(), lr=3e-3)
    criterion = SteeringLoss("cosine")
    for _ in range(epochs):
        for index in torch.randperm(len(e_o)).split(256):
            loss = criterion(operator(e_o[index], params[index]), e_a[index])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    return operator.eval()


def train_byol(
    model: nn.Module, branch: EquivarianceBranch, images: Tensor, epochs: int, batch_size: int, prefix: str
) -> list[dict[str, float]]:
    """The quickstart's BYOL loop plus ``branch.loss()`` (SGD lr 0.06, EMA 0.996 -> 1).

    ``model`` is the quickstart's ``BYOL``; the caller seeds the global RNG, which fixes the
    order and the views. Returns per epoch the mean loss, the minutes and the branch's metrics
    of the last batch (keys ``prefix + name``); exits if the loss is not finite.
    """
    loader = torch.utils.data.DataLoader(images, batch_size=batch_size, shuffle=True, drop_last=True)
    criterion = NegativeCosineSimilarity()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)
    log = []
    for epoch in range(epochs):
        start, total = time.perf_counter(), torch.zeros(())
        momentum = cosine_schedule(epoch, epochs, 0.996, 1)
        for batch in loader:
            x0, x1 = branch.views(batch)
            update_momentum(model.backbone, model.backbone_momentum, m=momentum)
            update_momentum(model.projection_head, model.projection_head_momentum, m=momentum)
            byol = 0.5 * (
                criterion(model(x0), model.forward_momentum(x1)) + criterion(model(x1), model.forward_momentum(x0))
            )
            loss = byol + branch.loss()
            total += loss.detach()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        metrics = {f"{prefix}{k}": float(v) for k, v in branch.metrics().items()}
        log.append({"epoch": epoch, "loss": float(total) / len(loader), "minutes": (time.perf_counter() - start) / 60})
        log[-1].update(metrics)
        shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items())
        print(f"  epoch {epoch:02d} loss {log[-1]['loss']:.4f}, last batch {shown} ({log[-1]['minutes']:.1f} min)")
        if not math.isfinite(log[-1]["loss"]):
            raise SystemExit("the loss is not finite")
    return log
