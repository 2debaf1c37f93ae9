"""Draw the figures of docs/concepts.md: ``python docs/figures/make_figures.py [--out DIR]``.

- ``param_layout.svg``: the columns of ``augment.byol(32, view=2, variant="cifar")``'s
  ``(B, P)`` parameters, coloured by field, above the parameters the library recorded for
  8 images (seed 0), in the default ``"normalized"`` encoding.
- ``equimod.svg`` and ``steering.svg``: schematics of what the EquiMod head and the steering
  operator learn (no data).

The SVGs are committed; re-run this script after changing the layout or the drawings.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from equimod_plugin import augment  # noqa: E402

plt.rcParams.update({"svg.hashsalt": "equimod-docs", "font.size": 9})


def save(fig: plt.Figure, path: Path) -> None:
    fig.savefig(path, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    print(f"wrote {path}")


def param_layout(out: Path) -> None:
    aug = augment.byol(32, view=2, variant="cifar")
    layout = aug.layout
    generator = torch.Generator().manual_seed(0)
    _, params = aug(torch.rand(8, 3, 32, 32, generator=generator), generator=generator)
    fig, (top, ax) = plt.subplots(
        2, 1, figsize=(9, 4.2), gridspec_kw={"height_ratios": [1, 3.2]}, sharex=True
    )
    colours = plt.get_cmap("tab10").colors
    for i, (name, s) in enumerate(layout.fields.items()):
        top.axvspan(s.start - 0.5, s.stop - 0.5, color=colours[i % 10], alpha=0.75)
        top.text(
            (s.start + s.stop - 1) / 2,
            0.5,
            name,
            ha="center",
            va="center",
            fontsize=8,
            rotation=0 if s.stop - s.start > 2 else 90,
        )
    top.set_yticks([])
    top.set_ylim(0, 1)
    top.set_title(
        f'augment.byol(32, view=2, variant="cifar").layout: P = {layout.param_dim} columns, '
        f"encoding {layout.encoding!r}"
    )
    im = ax.imshow(params.numpy(), aspect="auto", cmap="coolwarm", vmin=-1, vmax=1)
    for (r, c), v in zip(
        ((r, c) for r in range(params.shape[0]) for c in range(params.shape[1])),
        params.flatten().tolist(),
        strict=True,
    ):
        ax.text(c, r, f"{v:.2g}", ha="center", va="center", fontsize=6)
    ax.set_xticks(
        range(layout.param_dim),
        [c.split(".", 1)[1] for c in layout.columns],
        rotation=60,
        ha="right",
        fontsize=7,
    )
    ax.set_ylabel("image in the batch")
    ax.set_yticks(range(params.shape[0]))
    fig.colorbar(im, ax=[top, ax], fraction=0.02, pad=0.01, label="recorded value")
    save(fig, out / "param_layout.svg")


def _box(ax: plt.Axes, xy: tuple[float, float], text: str, colour: str = "#e8eaf6") -> plt.Text:
    return ax.text(
        *xy,
        text,
        ha="center",
        va="center",
        fontsize=10,
        bbox={"boxstyle": "round,pad=0.4", "fc": colour, "ec": "#3949ab"},
    )


def _arrow(
    ax: plt.Axes,
    a: plt.Text,
    b: plt.Text,
    label: str = "",
    style: str = "-|>",
    offset: tuple[float, float] = (0.0, 0.15),
) -> None:
    """An arrow from box ``a`` to box ``b``, clipped at their edges, labelled at its middle."""
    (xa, ya), (xb, yb) = a.get_position(), b.get_position()
    ax.annotate(
        "",
        xy=(xb, yb),
        xytext=(xa, ya),
        arrowprops={
            "arrowstyle": style,
            "color": "#333",
            "lw": 1.3,
            "patchA": a.get_bbox_patch(),
            "patchB": b.get_bbox_patch(),
        },
    )
    if label:
        ax.text(
            (xa + xb) / 2 + offset[0],
            (ya + yb) / 2 + offset[1],
            label,
            ha="center",
            va="center",
            fontsize=9,
            style="italic",
        )


def _canvas(title: str) -> tuple[plt.Figure, plt.Axes]:
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.set_xlim(0, 8)
    ax.set_ylim(0, 3.2)
    ax.axis("off")
    ax.set_title(title)
    return fig, ax


def equimod(out: Path) -> None:
    fig, ax = _canvas("EquiMod: predict the view's embedding from the original's and a")
    x = _box(ax, (1.0, 2.7), "image x")
    view = _box(ax, (6.8, 2.7), "view a(x)")
    a = _box(ax, (3.6, 2.7), "parameters a (P,)", "#f5f5f5")
    _arrow(ax, x, a, "sample")
    _arrow(ax, a, view, "apply")
    y_o = _box(ax, (1.0, 0.4), "y_o = g'(f(x))")
    y_a = _box(ax, (6.8, 0.4), "y_a = g'(f(a(x)))")
    _arrow(ax, x, y_o, "backbone f,\nprojector g'", offset=(0.6, 0))
    _arrow(ax, view, y_a, "backbone f,\nprojector g'", offset=(0.6, 0))
    u = _box(ax, (3.6, 1.45), "prediction u(y_o, proj(a))", "#fff3e0")
    _arrow(ax, y_o, u)
    _arrow(ax, a, u)
    _arrow(ax, u, y_a, "", style="<|-|>")
    ax.text(
        5.0, 1.2, "close to y_a\n(NT-Xent loss)", ha="left", va="center", fontsize=9, style="italic"
    )
    save(fig, out / "equimod.svg")


def steering(out: Path) -> None:
    fig, ax = _canvas("Steering: a linear map M(a) of the features, M(a) f(x) ~ f(a(x))")
    x = _box(ax, (1.0, 2.7), "image x")
    view = _box(ax, (4.6, 2.7), "view a(x)")
    _arrow(ax, x, view, "augment with parameters a")
    f_x = _box(ax, (1.0, 0.4), "f(x)")
    f_a = _box(ax, (4.6, 0.4), "f(a(x)) ~ M(a) f(x)", "#fff3e0")
    _arrow(ax, x, f_x, "encode", offset=(0.4, 0))
    _arrow(ax, view, f_a, "encode", offset=(0.4, 0))
    _arrow(ax, f_x, f_a, "M(a): no encoder pass")
    ax.text(
        7.0,
        1.55,
        "test time:\nencode once,\nsteer to K augmentations\n(mean embedding,\n"
        "dispersion = OOD score)",
        ha="center",
        va="center",
        fontsize=9,
    )
    save(fig, out / "steering.svg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    param_layout(out)
    equimod(out)
    steering(out)


if __name__ == "__main__":
    main()
