"""MkDocs hooks: the Results pages, links to repository files, pages still being written.

Run by ``mkdocs build`` (``hooks:`` in ``mkdocs.yml``); nothing here is written to the
source tree.

- **Results.** Every ``benchmarks/results/<name>.md`` becomes the page
  ``benchmarks/<name>.md``: the committed report verbatim, the machine recorded in
  ``<name>.json`` and plots drawn from that JSON with matplotlib. Every ``docs/results/**/*.md``
  is a page already. ``results.md`` lists them all, and the ``Results`` entry of the nav
  becomes a section holding them, so reports added later appear without editing the nav.
- **Links to repository files.** A relative link from a page to a file of the repository
  outside ``docs/`` (``../examples/quickstart.py``, ``../benchmarks/results/x.md``) is
  rewritten to the generated page of that file: a benchmark page, or a page showing the
  file's source. A link to a file that does not exist is a warning (an error under
  ``--strict``).
- **API overview.** ``api/index.md`` lists every name of ``equimod_plugin.__all__`` with its
  one-line summary and a link to the page that documents it; names defined in a private
  module are documented on the overview itself.
- **Pages being written.** Nav entries in ``PENDING`` whose file does not exist yet are
  generated as a one-line "not written yet" page instead of failing the build.
"""

from __future__ import annotations

import io
import json
import logging
import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.equimod")

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
BENCHMARKS = ROOT / "benchmarks" / "results"
RESULTS = DOCS / "results"
PENDING = {
    "paper-recipes.md": "Paper-scale recipes",
    "augmentation-report.md": "Per-augmentation equivariance report",
}
_LINK = re.compile(r"(\]\()([^)\s#]+)(#[^)\s]*)?(\))")
_SOURCE_LANG = {".py": "python", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".json": "json"}

_links: dict[str, str] = {}  # repository path -> generated docs path


def _title(markdown: str, default: str) -> str:
    m = re.search(r"^# (.+)$", markdown, flags=re.MULTILINE)
    return m.group(1).strip() if m else default


def _benchmark_names() -> list[str]:
    return sorted(p.stem for p in BENCHMARKS.glob("*.md"))


def _result_pages() -> list[str]:
    return sorted(p.relative_to(DOCS).as_posix() for p in RESULTS.rglob("*.md"))


def on_config(config: Any) -> Any:
    """Turn the nav's ``Results`` entry into a section of every result page."""
    entries: list[Any] = [{"Overview": "results.md"}]
    entries += [
        {_title((BENCHMARKS / f"{n}.md").read_text(), n): f"benchmarks/{n}.md"}
        for n in _benchmark_names()
    ]
    entries += [
        {_title((DOCS / p).read_text(), p): p}
        for p in _result_pages()
        if Path(p).name not in ("index.md", "README.md")
    ]
    for i, item in enumerate(config["nav"]):
        if isinstance(item, dict) and item.get("Results") == "results.md":
            config["nav"][i] = {"Results": entries}
    return config


def on_files(files: Files, config: Any) -> Files:
    """Add the generated pages, plots and source pages."""
    _links.clear()
    for src, title in PENDING.items():
        if files.get_file_from_path(src) is None:
            text = (
                f'# {title}\n\n!!! note "Not written yet"\n    This page is being written '
                "and will appear here.\n"
            )
            files.append(File.generated(config, src, content=text))
    overview = [
        "# Results",
        "",
        "Every number on these pages was produced by a script of this repository and "
        "committed with the machine it ran on and the scale of the run. None of them is a "
        "paper's number; where a paper's claim is quoted for comparison, the page says so.",
        "",
        "| report | made by | machine and scale (as recorded) | headline |",
        "|---|---|---|---|",
    ]
    for name in _benchmark_names():
        text = (BENCHMARKS / f"{name}.md").read_text()
        page = _benchmark_page(name, text, files, config)
        files.append(File.generated(config, f"benchmarks/{name}.md", content=page))
        _links[f"benchmarks/results/{name}.md"] = f"benchmarks/{name}.md"
        overview.append(
            f"| [{_title(text, name)}](benchmarks/{name}.md) | `benchmarks/{name}.py` | "
            f"{_first_paragraph(text)} | {_headline(text)} |"
        )
    for page in _result_pages():
        text = (DOCS / page).read_text()
        overview.append(
            f"| [{_title(text, page)}]({page}) | {_made_by(text)} | {_first_paragraph(text)} "
            f"| {_headline(text)} |"
        )
    files.append(File.generated(config, "results.md", content="\n".join(overview) + "\n"))
    files.append(File.generated(config, "api/index.md", content=api_overview()))

    for file in list(files):
        if file.is_documentation_page() and file.abs_src_path:
            for target in _outside_links(file.src_uri, Path(file.abs_src_path).read_text()):
                _add_source_page(target, files, config)
    return files


def _first_paragraph(text: str) -> str:
    """The report's first paragraph after its title: where the files record the machine."""
    body = re.sub(r"^# .+\n", "", text.strip(), count=1).strip()
    body = re.sub(r"^> ?", "", body, flags=re.MULTILINE)  # a leading note reads as text
    return " ".join(body.split("\n\n", 1)[0].split()).replace("|", "/")


def _headline(text: str) -> str:
    """The report's ``Headline:`` line (its main numbers), or "-" if it has none."""
    m = re.search(r"^\*\*Headline:\*\* (.+)$", text, flags=re.MULTILINE)
    return m.group(1).replace("|", "/") if m else "-"


def _made_by(text: str) -> str:
    m = re.search(r"`((?:examples|benchmarks|experiments)/[\w/]+\.py)`", text)
    return f"`{m.group(1)}`" if m else "-"


def _outside_links(src_uri: str, markdown: str) -> list[str]:
    """Repository paths of relative links that leave ``docs/``."""
    targets = []
    for m in _LINK.finditer(_strip_code(markdown)):
        url = m.group(2)
        if "://" in url or url.startswith(("/", "mailto:")):
            continue
        path = posixpath.normpath(posixpath.join("docs", posixpath.dirname(src_uri), url))
        if not path.startswith("docs/") and not path.startswith(".."):
            targets.append(path)
    return targets


def _strip_code(markdown: str) -> str:
    return re.sub(r"^```.*?^```", "", markdown, flags=re.MULTILINE | re.DOTALL)


def _add_source_page(target: str, files: Files, config: Any) -> None:
    if target in _links:
        return
    path = ROOT / target
    if not path.is_file():
        log.warning("link to %s, which does not exist in the repository", target)
        return
    lang = _SOURCE_LANG.get(path.suffix, "text")
    page = (
        f"# `{target}`\n\nThe file as committed in the repository.\n\n"
        f'```{lang} title="{target}"\n{path.read_text().rstrip()}\n```\n'
    )
    src = f"source/{target}.md"
    files.append(File.generated(config, src, content=page))
    _links[target] = src


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """Point links to repository files at their generated pages."""
    src_uri = page.file.src_uri

    def rewrite(m: re.Match[str]) -> str:
        url = m.group(2)
        if "://" in url or url.startswith("/"):
            return m.group(0)
        path = posixpath.normpath(posixpath.join("docs", posixpath.dirname(src_uri), url))
        if path not in _links:
            return m.group(0)
        new = posixpath.relpath(_links[path], posixpath.dirname(src_uri) or ".")
        return f"{m.group(1)}{new}{m.group(3) or ''}{m.group(4)}"

    parts = re.split(r"(^```.*?^```)", markdown, flags=re.MULTILINE | re.DOTALL)
    return "".join(p if p.startswith("```") else _LINK.sub(rewrite, p) for p in parts)


# --- API overview ----------------------------------------------------------------------------


def rendered_modules() -> dict[str, str]:
    """Module -> API page, from the ``::: module`` lines of ``docs/api/*.md``."""
    found = {}
    for page in sorted((DOCS / "api").glob("*.md")):
        for module in re.findall(r"^::: ([\w.]+)", page.read_text(), flags=re.MULTILINE):
            found[module] = page.name
    return found


def api_overview() -> str:
    """``api/index.md``: the names of ``equimod_plugin.__all__``, their summaries and pages."""
    import griffe

    extensions = griffe.load_extensions(f"{Path(__file__).parent / 'griffe_rst.py'}:RstToMarkdown")
    package = griffe.load(
        "equimod_plugin", search_paths=[str(ROOT)], resolve_aliases=True, extensions=extensions
    )
    titles = {
        p.name: _title(p.read_text(), p.stem).split(":")[0].replace("`", "")
        for p in (DOCS / "api").glob("*.md")
    }
    modules = rendered_modules()
    lines = [
        "# API reference",
        "",
        "Generated from the docstrings. `import equimod_plugin` needs only torch and kornia; "
        "the integrations need their extras (see [Install](../install.md)).",
        "",
        "## `equimod_plugin`",
        "",
        "| name | what it is | documented in |",
        "|---|---|---|",
    ]
    here = []
    for name in package.exports or []:
        obj = package[name]
        target = obj.final_target if obj.is_alias else obj
        summary = (
            (target.docstring.value.strip().splitlines() or [""])[0] if target.docstring else ""
        )
        summary = summary.replace("|", "\\|")
        if target.is_module:
            page = modules.get(target.path) or next(
                (p for m, p in modules.items() if m.startswith(target.path + ".")), None
            )
            lines.append(f"| [`{name}`]({page}) | {summary} | [{titles[page]}]({page}) |")
        elif target.module.path in modules:
            page = modules[target.module.path]
            lines.append(f"| [`{name}`][{target.path}] | {summary} | [{titles[page]}]({page}) |")
        else:  # defined in a private module: documented here
            here.append(name)
            lines.append(f"| [`{name}`][equimod_plugin.{name}] | {summary} | below |")
    lines += ["", "## Pages", ""]
    for page in sorted(set(modules.values())):
        mods = ", ".join(f"`{m}`" for m, p in modules.items() if p == page)
        lines.append(f"- [{titles[page]}]({page}): {mods}")
    if here:
        lines += ["", "## Defined in private modules", ""]
        lines += [f"::: equimod_plugin.{name}\n" for name in here]
    return "\n".join(lines) + "\n"


# --- benchmark pages -------------------------------------------------------------------------


def _benchmark_page(name: str, text: str, files: Files, config: Any) -> str:
    title, _, body = text.partition("\n")
    machine, _, rest = body.strip().partition("\n\n")
    lines = ["---", "hide:", "  - toc", "---", "", title, "", machine, ""]
    lines.append(
        f'!!! info "Source"\n    Made by `benchmarks/{name}.py`; the report below is '
        f"`benchmarks/results/{name}.md` as committed."
    )
    json_path = BENCHMARKS / f"{name}.json"
    if json_path.is_file():
        data = json.loads(json_path.read_text())
        files.append(
            File.generated(config, f"benchmarks/{name}.json", content=json_path.read_text())
        )
        lines[-1] += f" Raw data: [`{name}.json`]({name}.json)."
        hardware = data.get("hardware", {})
        if hardware:
            lines += ["", '??? note "Machine, as recorded in the JSON"', ""]
            lines += ["    | key | value |", "    |---|---|"]
            lines += [f"    | {k} | `{v}` |" for k, v in hardware.items()]
        plot = _PLOTS.get(name)
        if plot is not None:
            svg = _svg(plot, data)
            files.append(File.generated(config, f"benchmarks/{name}.svg", content=svg))
            lines += ["", f"![{name}: plot of the JSON's medians]({name}.svg)", ""]
    lines += ["", rest.strip(), ""]
    return "\n".join(lines)


def _svg(plot: Any, data: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "equimod-docs"
    fig = plot(plt, data)
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return buf.getvalue()


def _plot_augment_throughput(plt: Any, data: dict[str, Any]) -> Any:
    rows = data["timings"]
    fig, ax = plt.subplots(figsize=(6, 3))
    series = [
        ("lightly_img_per_s", "lightly BYOLTransform (1 thread)"),
        ("plugin_img_per_s", "plugin, 2 threads"),
        ("plugin_1thread_img_per_s", "plugin, 1 thread"),
    ]
    width = 0.8 / len(series)
    for j, (key, label) in enumerate(series):
        xs = [i + (j - 1) * width for i in range(len(rows))]
        ax.bar(xs, [r[key] for r in rows], width, label=label)
    ax.set_xticks(range(len(rows)), [f"{r['size']} px, B = {r['batch_size']}" for r in rows])
    ax.set_yscale("log")
    ax.set_ylabel("images / s (both views)")
    ax.set_title("BYOL two-view augmentation throughput (medians)")
    ax.legend(fontsize=8)
    return fig


def _plot_step_time(plt: Any, data: dict[str, Any]) -> Any:
    rows = data["timings"]
    fig, ax = plt.subplots(figsize=(6, 3))
    series = [
        ("plain_ms", "plain BYOL step"),
        ("net_ms", "wrapped - aug"),
        ("wrapped_ms", "wrapped"),
    ]
    width = 0.8 / len(series)
    for j, (key, label) in enumerate(series):
        xs = [i + (j - 1) * width for i in range(len(rows))]
        ax.bar(xs, [r["wall"][key] for r in rows], width, label=label)
    ax.set_xticks(range(len(rows)), [f"{r['backbone']}, B = {r['batch_size']}" for r in rows])
    ax.set_ylabel("wall-clock ms per step")
    ax.set_title("Training step with and without the EquiMod term (medians)")
    ax.legend(fontsize=8)
    return fig


def _plot_tta_speed(plt: Any, data: dict[str, Any]) -> Any:
    fig, ax = plt.subplots(figsize=(6, 3))
    ks = sorted({t["k"] for r in data["results"] for t in r["tta"]})
    for r in data["results"]:
        tta = r["tta"]
        label = f"{r['size']} px, B = {r['batch']}"
        ax.plot([t["k"] for t in tta], [t["speedup"] for t in tta], "o-", label=label)
    ax.plot(ks, ks, "k:", label="speedup = K")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("K augmentations")
    ax.set_ylabel("speedup of steering")
    ax.set_title("TTA: augment + re-encode vs encode once + steer (medians)")
    ax.legend(fontsize=8)
    return fig


_PLOTS = {
    "augment_throughput": _plot_augment_throughput,
    "step_time": _plot_step_time,
    "tta_speed": _plot_tta_speed,
}
