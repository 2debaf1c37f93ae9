"""Named layout of the augmentation parameter vector, and its encodings.

Every augmentation of :mod:`equimod_plugin.augment` returns, next to the views, a ``(B, P)``
float tensor that records what it did to each sample. :class:`ParamLayout` names the columns:
an ordered list of fields, each a contiguous slice with an identity value (the parameters of
"do nothing").

Operations draw *raw* values in natural units (a crop box in pixels, a flip flag, jitter
factors and order, a blur sigma: a :class:`Value` each). The layout's encoding writes them to
columns and reads them back (a :class:`Codec` per value and encoding), so operations never
look at the encoding. The encodings:

- ``"normalized"``: crop box as fractions of the input height and width, factors centred on
  their identity value, jitter order as ``(k - 1.5) / 1.5``;
- ``"official"``: the official EquiMod code's values before its per-dataset standardisation
  (crop box in pixels of the input, raw factors, integer order);
- ``"official_standardized"``: what the official code's parameter projector receives, the
  official values standardised per column, ``(x - mean) / std`` with the official code's
  per-dataset, per-method constants (:mod:`equimod_plugin.augment.standardize`). Its codec is
  derived from the official one (:meth:`Codec.standardized`), so a :class:`Value` declares
  codecs for :data:`BASE_ENCODINGS` only.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from equimod_plugin._checks import check_matrix

Encoding = Literal["normalized", "official", "official_standardized"]
#: The encodings every :class:`Value` declares a :class:`Codec` for.
BASE_ENCODINGS: tuple[str, ...] = ("normalized", "official")
#: The official values standardised per column with per-dataset constants.
STANDARDIZED = "official_standardized"
ENCODINGS: tuple[str, ...] = (*BASE_ENCODINGS, STANDARDIZED)

#: Per-column ``(mean, std)`` of a standardisation, keyed ``"field.column"``.
Standardization = Mapping[str, tuple[float, float]]

#: A per-column constant: a number, or ``"height"`` / ``"width"`` of the input image in pixels.
Size = float | Literal["height", "width"]

#: What a raw value is: ``"flag"`` (bool ``(B,)``), ``"index"`` (int64, decoded by rounding),
#: ``"pixels"`` (float32 whole pixels, decoded by rounding) or ``"real"`` (float32 as stored).
Kind = Literal["flag", "index", "pixels", "real"]


def resolve(sizes: Sequence[Size], image_size: tuple[int, int] | None) -> tuple[float, ...]:
    """``sizes`` with ``"height"`` / ``"width"`` replaced by those of ``image_size`` ``(H, W)``.

    Example:
        >>> resolve((0.0, "height", "width"), (16, 24))
        (0.0, 16.0, 24.0)
    """
    out = []
    for s in sizes:
        if isinstance(s, str):
            if image_size is None:
                raise ValueError(f"{s!r} needs the image size, which is not known here")
            s = image_size[0] if s == "height" else image_size[1]
        out.append(float(s))
    return tuple(out)


@dataclass(frozen=True)
class Codec:
    """How one encoding stores a raw value: ``encoded = (raw - shift) / scale`` per column.

    Decoding computes ``encoded * scale + shift`` and then reads it as the value's
    :data:`Kind` (``> 0.5`` for a flag, rounding for an index or pixels). An empty ``shift``
    is 0 and an empty ``scale`` is 1 (and skipped, so such columns hold the raw values
    themselves, bit for bit).

    Attributes:
        shift, scale: per-column constants (``scale`` may name the image ``"height"`` /
            ``"width"``: crop boxes as fractions of the input).
        whole: the stored values are whole numbers (replayed values are checked for it).
        description: what the columns hold in this encoding.

    Example:
        >>> import torch
        >>> codec = Codec(shift=(1.5,), scale=(1.5,))
        >>> codec.encode(torch.tensor([[0.0], [3.0]]), None).tolist()
        [[-1.0], [1.0]]
    """

    shift: tuple[float, ...] = ()
    scale: tuple[Size, ...] = ()
    whole: bool = False
    description: str = ""

    def encode(self, raw: Tensor, image_size: tuple[int, int] | None) -> Tensor:
        """Encoded columns ``(B, k)`` of the raw columns ``raw`` ``(B, k)`` (its dtype)."""
        if self.shift:
            raw = raw - raw.new_tensor(self.shift)
        if self.scale:
            raw = raw / raw.new_tensor(resolve(self.scale, image_size))
        return raw

    def decode(self, encoded: Tensor, image_size: tuple[int, int] | None) -> Tensor:
        """The raw columns ``(B, k)`` of ``encoded`` ``(B, k)``, before reading their kind."""
        if self.scale:
            encoded = encoded * encoded.new_tensor(resolve(self.scale, image_size))
        if self.shift:
            encoded = encoded + encoded.new_tensor(self.shift)
        return encoded

    def encode_values(
        self, values: Sequence[float], image_size: tuple[int, int] | None
    ) -> tuple[float, ...]:
        """:meth:`encode` of one row of Python floats (in double precision)."""
        shift = self.shift or (0.0,) * len(values)
        scale = resolve(self.scale, image_size) if self.scale else (1.0,) * len(values)
        return tuple(
            float(v) if not (self.shift or self.scale) else (v - s) / c
            for v, s, c in zip(values, shift, scale, strict=True)
        )

    @property
    def is_raw(self) -> bool:
        """The columns hold the raw values themselves (no shift, no scale)."""
        return not (self.shift or self.scale)

    def standardized(self, mean: Sequence[float], std: Sequence[float]) -> Codec:
        """This codec followed by ``(x - mean) / std`` per column, as one codec.

        ``shift = shift + mean * scale`` and ``scale = scale * std``; the scale must be
        numbers (not the image ``"height"`` / ``"width"``).

        Example:
            >>> import torch
            >>> codec = Codec().standardized((2.0,), (4.0,))
            >>> codec.encode(torch.tensor([[10.0]]), None).tolist()
            [[2.0]]
        """
        if any(isinstance(c, str) for c in self.scale):
            raise ValueError(f"cannot standardise a codec scaled by the image size: {self}")
        if not all(float(s) > 0 and math.isfinite(float(s)) for s in std):
            raise ValueError(f"std must be finite and positive, got {tuple(std)}")
        shift = self.shift or (0.0,) * len(mean)
        scale = self.scale or (1.0,) * len(mean)
        return Codec(
            shift=tuple(s + m * c for s, m, c in zip(shift, mean, scale, strict=True)),  # type: ignore[operator]
            scale=tuple(c * d for c, d in zip(scale, std, strict=True)),  # type: ignore[operator]
            whole=self.whole,
            description=self.description,
        )


@dataclass(frozen=True, eq=False)
class Value:
    """One named raw value an operation draws, in natural units, and its codec per encoding.

    Attributes:
        name: key in the operation's raw dict, e.g. ``"box"``.
        columns: names of its columns; one column: the raw value is ``(B,)``, else ``(B, k)``.
        kind: a :data:`Kind`.
        identity: its value when the operation does nothing (entries may be ``"height"`` /
            ``"width"``: the whole image).
        codecs: one :class:`Codec` per name of :data:`BASE_ENCODINGS` (the standardised
            encoding derives its codec from the official one).

    Example:
        >>> codecs = {e: Codec() for e in BASE_ENCODINGS}
        >>> flag = Value("applied", ("applied",), "flag", (0.0,), codecs)
        >>> flag.identity_tensor(None, "cpu").tolist()
        False
    """

    name: str
    columns: tuple[str, ...]
    kind: Kind
    identity: tuple[Size, ...]
    codecs: Mapping[str, Codec]

    def identity_tensor(
        self, image_size: tuple[int, int] | None, device: torch.device | str
    ) -> Tensor:
        """The identity raw value for one sample: ``()`` for one column, else ``(k,)``."""
        dtype = {"flag": torch.bool, "index": torch.int64}.get(self.kind, torch.float32)
        t = torch.tensor(resolve(self.identity, image_size), device=device).to(dtype)
        return t[0] if len(self.columns) == 1 else t

    def read(self, columns: Tensor) -> Tensor:
        """The raw value of decoded columns ``(B, k)``: its kind, ``(B,)`` for one column."""
        if self.kind == "flag":
            columns = columns > 0.5
        elif self.kind == "index":
            columns = columns.round().long()
        elif self.kind == "pixels":
            columns = columns.round()
        return columns[:, 0] if len(self.columns) == 1 else columns


@dataclass(frozen=True, eq=False)
class FieldSpec:
    """An operation's declaration of one field: its raw values, and a description per encoding.

    :meth:`field` gives the :class:`Field` of one encoding.

    Example:
        >>> spec = FieldSpec("flip", (Value("applied", ("applied",), "flag", (0.0,),
        ...     {e: Codec() for e in BASE_ENCODINGS}),), "1 if mirrored left-right")
        >>> field = spec.field("official", None)
        >>> field.columns, field.identity, field.description
        (('applied',), (0.0,), '1 if mirrored left-right')
    """

    name: str
    values: tuple[Value, ...]
    description: str | Mapping[str, str]

    def field(
        self,
        encoding: str,
        image_size: tuple[int, int] | None,
        standardization: Standardization | None = None,
    ) -> Field:
        """The field in ``encoding``; its identity row is encoded for images of ``image_size``.

        The standardised encoding needs ``standardization``, the ``(mean, std)`` of each of
        the field's columns (keyed ``"field.column"``).
        """
        if encoding == STANDARDIZED:
            if standardization is None:
                raise ValueError(f"encoding {STANDARDIZED!r} needs per-column (mean, std)")
            parts = []
            for v in self.values:
                keys = [f"{self.name}.{c}" for c in v.columns]
                missing = [k for k in keys if k not in standardization]
                if missing:
                    raise ValueError(f"the standardisation has no (mean, std) for {missing}")
                mean, std = zip(*(standardization[k] for k in keys), strict=True)
                parts.append((v, v.codecs["official"].standardized(mean, std)))
            parts = tuple(parts)
        else:
            parts = tuple((v, v.codecs[encoding]) for v in self.values)
        identity = tuple(
            x
            for v, c in parts
            for x in c.encode_values(resolve(v.identity, image_size), image_size)
        )
        desc = self.description
        if not isinstance(desc, str):
            desc = desc[encoding] if encoding in desc else desc["official"]
        if encoding == STANDARDIZED:
            desc = f"{desc}; standardised, (x - mean) / std per column"
        return Field(
            self.name,
            tuple(col for v in self.values for col in v.columns),
            identity,
            desc,
            parts,
            encoding,
        )


@dataclass(frozen=True)
class Field:
    """One named group of columns of the parameter vector.

    Attributes:
        name: field name, e.g. ``"crop"``.
        columns: names of the single columns, e.g. ``("top", "left", "height", "width")``.
        identity: encoded value of each column when the operation does nothing.
        description: what the columns hold, in this encoding.
        parts: the raw values the columns store, in column order, each with the codec of this
            encoding (empty for a field built by hand: it cannot encode or decode).
        encoding: the encoding :attr:`parts` are in (``""`` for a field built by hand).

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
    parts: tuple[tuple[Value, Codec], ...] = dataclasses.field(
        default=(), compare=False, repr=False
    )
    encoding: str = dataclasses.field(default="", compare=False, repr=False)

    @property
    def width(self) -> int:
        """Number of columns of the field."""
        return len(self.columns)

    def encode(
        self,
        raw: Mapping[str, Tensor],
        image_size: tuple[int, int] | None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Columns ``(B, width)`` in ``dtype`` of ``raw`` (values named as :attr:`parts`)."""
        return torch.cat(
            [
                c.encode(raw[v.name].reshape(-1, len(v.columns)).to(dtype), image_size)
                for v, c in self.parts
            ],
            dim=1,
        )

    def decode(self, params: Tensor, image_size: tuple[int, int] | None) -> dict[str, Tensor]:
        """The raw values of the field's columns ``params`` ``(B, width)``, by name."""
        raw, start = {}, 0
        for v, c in self.parts:
            stop = start + len(v.columns)
            raw[v.name] = v.read(c.decode(params[:, start:stop], image_size))
            start = stop
        return raw


class ParamLayout:
    """Ordered, named fields of a ``(B, P)`` augmentation parameter tensor.

    Args:
        fields: the fields in column order.
        encoding: ``"normalized"`` (crop box as fractions of the image, factors centred on their
            identity value), ``"official"`` (the encoding of the official EquiMod code before
            its per-dataset standardisation: crop box in pixels, raw factors) or
            ``"official_standardized"`` (the official values standardised per column, as the
            official parameter projector receives them). Fields declared by operations must
            be in this encoding.

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
        wrong = [f.name for f in fields if f.parts and f.encoding != encoding]
        if encoding == STANDARDIZED and wrong:  # other encodings: ops declare flags in any
            raise ValueError(
                f"fields {wrong} are not standardised but the layout's encoding is "
                f"{STANDARDIZED!r}: call op.standardize(constants) on their operations"
            )
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
