"""Named layout of the augmentation parameter vector.

Every augmentation of :mod:`equimod_plugin.augment` returns, next to the views, a ``(B, P)``
float tensor that records what it did to each sample. :class:`ParamLayout` names the columns:
an ordered list of fields, each a contiguous slice with an identity value (the parameters of
"do nothing").
"""

from __future__ import annotations

import numbers
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from equimod_plugin._checks import check_matrix

Encoding = Literal["normalized", "official"]
ENCODINGS: tuple[str, ...] = ("normalized", "official")


@dataclass(frozen=True)
class Field:
    """One named group of columns of the parameter vector.

    Attributes:
        name: field name, e.g. ``"crop"``.
        columns: names of the single columns, e.g. ``("top", "left", "height", "width")``.
        identity: encoded value of each column when the operation does nothing.
        description: what the columns hold, in this encoding.

    Example:
        >>> from equimod_plugin import augment
        >>> field = augment.byol(32).layout.field("blur")
        >>> field.columns, field.identity, field.width
        (('applied', 'sigma'), (0.0, 0.0), 2)
    """

    name: str
    columns: tuple[str, ...]
    identity: tuple[float, ...]
    description: str

    @property
    def width(self) -> int:
        """Number of columns of the field."""
        return len(self.columns)


class ParamLayout:
    """Ordered, named fields of a ``(B, P)`` augmentation parameter tensor.

    Args:
        fields: the fields in column order.
        encoding: ``"normalized"`` (crop box as fractions of the image, factors centred on their
            identity value) or ``"official"`` (the encoding of the official EquiMod code before
            its per-dataset standardisation: crop box in pixels, raw factors).

    Example:
        >>> from equimod_plugin import augment
        >>> layout = augment.simclr(32, variant="cifar").layout
        >>> layout.param_dim
        15
        >>> layout.fields["crop"]
        slice(0, 4, None)
    """

    def __init__(self, fields: tuple[Field, ...], encoding: Encoding) -> None:
        names = [f.name for f in fields]
        if len(set(names)) != len(names):
            raise ValueError(f"fields must have unique names, got {names}")
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
        self.encoding: Encoding = encoding
        self._fields = fields
        slices: OrderedDict[str, slice] = OrderedDict()
        start = 0
        for f in fields:
            slices[f.name] = slice(start, start + f.width)
            start += f.width
        self._slices = slices
        self.param_dim: int = start

    @property
    def fields(self) -> OrderedDict[str, slice]:
        """Field names in column order, each with its slice of the ``P`` columns."""
        return OrderedDict(self._slices)

    @property
    def columns(self) -> list[str]:
        """One name per column, ``"field.column"``, length ``param_dim``."""
        return [f"{f.name}.{c}" for f in self._fields for c in f.columns]

    def field(self, name: str) -> Field:
        """The :class:`Field` called ``name``."""
        for f in self._fields:
            if f.name == name:
                return f
        raise KeyError(f"no field {name!r} in this layout; fields are {list(self._slices)}")

    def identity(
        self,
        batch_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Parameters of the identity augmentation, ``(batch_size, P)``; ``batch_size`` >= 0."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
            raise TypeError(f"batch_size must be an int >= 0, got {batch_size!r}")
        if batch_size < 0:
            raise ValueError(f"batch_size must be an int >= 0, got {batch_size}")
        row = torch.tensor(
            [v for f in self._fields for v in f.identity], dtype=dtype, device=device
        )
        return row.expand(int(batch_size), -1).clone()

    def split(self, params: Tensor) -> OrderedDict[str, Tensor]:
        """Views of ``params`` ``(B, P)`` per field, each ``(B, width)``."""
        self.check(params)
        return OrderedDict((name, params[:, s]) for name, s in self._slices.items())

    def check(self, params: Tensor, batch_size: int | None = None, name: str = "params") -> None:
        """Raise a ``ValueError`` unless ``params`` is a finite float ``(B, P)`` tensor."""
        check_matrix(params, name, rows=batch_size, cols=self.param_dim, what="P")

    def describe(self) -> str:
        """A markdown table of the fields: columns, slice, identity value, meaning."""
        rows = ["| field | columns | slice | identity | meaning |", "|---|---|---|---|---|"]
        for f in self._fields:
            s = self._slices[f.name]
            ident = ", ".join(f"{v:g}" for v in f.identity)
            rows.append(
                f"| {f.name} | {', '.join(f.columns)} | {s.start}:{s.stop} | {ident} | "
                f"{f.description} |"
            )
        return "\n".join(rows)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ParamLayout):
            return NotImplemented
        return self._fields == other._fields and self.encoding == other.encoding

    def __hash__(self) -> int:
        return hash((self._fields, self.encoding))

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={s.start}:{s.stop}" for n, s in self._slices.items())
        return f"ParamLayout({inner}; P={self.param_dim}, encoding={self.encoding!r})"
