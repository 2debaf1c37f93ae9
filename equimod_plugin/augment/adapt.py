"""What the recipe adapters (:func:`~equimod_plugin.augment.from_kornia`,
:func:`~equimod_plugin.augment.from_torchvision`, :func:`~equimod_plugin.augment.from_lightly`)
share: the encoding check, the one-operation-per-field check, the assembly and the reading
of a ``(min, max)`` range."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from equimod_plugin.augment.layout import ENCODINGS, STANDARDIZED, Encoding, Standardization
from equimod_plugin.augment.ops import ParamOp
from equimod_plugin.augment.pipeline import ParamAugment

__all__ = ["as_range", "assemble", "check_encoding", "check_fields"]


def check_encoding(encoding: str, standardization: Standardization | None) -> Encoding:
    """The operations' encoding for the pipeline's ``encoding`` (checked with its constants).

    ``"official_standardized"`` needs ``standardization`` (and only it takes one); its
    operations are built in ``"official"`` and standardised afterwards (:func:`assemble`).
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    if (encoding == STANDARDIZED) != (standardization is not None):
        raise ValueError(
            f"standardization (per-column (mean, std)) goes with encoding={STANDARDIZED!r} "
            f"and only with it; got encoding={encoding!r}"
            + (" without standardization" if standardization is None else "")
        )
    return "official" if encoding == STANDARDIZED else encoding  # type: ignore[return-value]


def check_fields(ops: Sequence[tuple[str, ParamOp]], adapter: str) -> None:
    """Raise a ``ValueError`` when two operations of ``ops`` set the same field."""
    owner: dict[str, str] = {}  # field name -> position of the operation that declares it
    for label, op in ops:
        for f in op.fields:
            if f.name in owner:
                raise ValueError(
                    f"{label} and {owner[f.name]} both set the {f.name!r} field; {adapter} "
                    "encodes each operation once (and one crop: the crop sets the views' size)"
                )
            owner[f.name] = label


def assemble(
    ops: Sequence[ParamOp], encoding: str, standardization: Standardization | None
) -> ParamAugment:
    """``ParamAugment(ops)`` in ``encoding``, the operations standardised when it says so."""
    if standardization is not None:
        ops = [op.standardize(standardization) for op in ops]
    return ParamAugment(ops, encoding)


def as_range(value: Any) -> tuple[float, float]:
    """A ``(min, max)`` given as a tuple, list or tensor, as two floats."""
    low, high = torch.as_tensor(value, dtype=torch.float64).flatten().tolist()
    return low, high
