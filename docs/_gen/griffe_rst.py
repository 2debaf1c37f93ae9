"""Griffe extension: render the package's reST-flavoured docstrings as Markdown.

The docstrings follow Google style with a few reStructuredText constructs that read well in
``help()`` and in editors: cross-reference roles (``:class:`~equimod_plugin.heads.X```),
``.. code-block:: lang`` directives and simple tables (``=====  =====`` rules). mkdocstrings
renders Markdown, so this extension rewrites them when the docs are built; the source files
are not changed:

- a role whose target resolves to an object rendered in the API reference (a module named
  by a ``::: module`` line of ``docs/api/*.md``, or a public member of one) becomes an
  autorefs link, any other target inline code;
- a code-block directive becomes a fenced block;
- a simple table becomes a Markdown table;
- doctest lines become a ``pycon`` code block;
- ``a, b: text`` in an Args section becomes one entry per name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import griffe

_API_DIR = Path(__file__).resolve().parents[1] / "api"
_ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|obj|exc):`(~?)([^`<>]+)`")
_RULE = re.compile(r"^(\s*)(=+)((?: +=+)+)\s*$")
_CODE_BLOCK = re.compile(r"^(\s*)\.\. code-block::\s*(\w*)\s*$")


def rendered_modules() -> set[str]:
    """Modules rendered by the API pages: the ``::: module`` lines of ``docs/api/*.md``."""
    modules = set()
    for page in _API_DIR.glob("*.md"):
        modules.update(re.findall(r"^::: ([\w.]+)", page.read_text(), flags=re.MULTILINE))
    return modules


class RstToMarkdown(griffe.Extension):
    """Rewrite roles, code-block directives and simple tables of every docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.modules = rendered_modules()

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **_: Any) -> None:
        self._visit(pkg)

    def _visit(self, obj: griffe.Object) -> None:
        if obj.docstring is not None:
            text = _doctests(_split_names(_tables(_code_blocks(obj.docstring.value))))
            obj.docstring.value = _ROLE.sub(lambda m: self._role(obj, m), text)
        for member in obj.members.values():
            if not member.is_alias:
                self._visit(member)  # type: ignore[arg-type]

    def _role(self, obj: griffe.Object, match: re.Match[str]) -> str:
        short, name = match.group(1) == "~", match.group(2).strip()
        shown = name.rsplit(".", 1)[-1] if short else name
        path = self._resolve(obj, name)
        if path is None:
            return f"`{shown}`"
        return f"[`{shown}`][{path}]"

    def _resolve(self, obj: griffe.Object, name: str) -> str | None:
        """Canonical path of ``name`` seen from ``obj``, if the API reference renders it."""
        head, _, rest = name.partition(".")
        scope: griffe.Object | None = obj
        path = None
        while scope is not None and path is None:
            try:
                path = scope.resolve(head)
            except griffe.NameResolutionError:
                scope = scope.parent
        if path is None:
            path = name if name.startswith("equimod_plugin") else None
        elif rest:
            path = f"{path}.{rest}"
        if path is None:
            return None
        try:
            target = obj.modules_collection.get_member(path)
        except (KeyError, ValueError):
            return None
        while target.is_alias:
            target = target.final_target
        canonical = target.path
        if not target.is_module and not target.has_docstring:
            return None  # not rendered: mkdocstrings hides members without a docstring
        module = target.module.path if not target.is_module else canonical
        if module not in self.modules:
            return None
        parts = canonical[len(module) :].split(".")
        if any(p.startswith("_") for p in parts if p):
            return None
        return canonical


_SECTION = re.compile(r"^(\s*)(Args|Arguments|Parameters|Attributes):\s*$")
_ENTRY = re.compile(r"^(\s+)(\w+(?:, \w+)+):(.*)$")


def _split_names(text: str) -> str:
    """``a, b: text`` in an Args/Attributes section -> one entry per name, same text."""
    lines, out, in_section, i = text.splitlines(), [], False, 0
    while i < len(lines):
        line = lines[i]
        if _SECTION.match(line):
            in_section = True
        elif line.strip() and not line.startswith((" ", "\t")):
            in_section = False
        m = _ENTRY.match(line) if in_section else None
        if not m:
            out.append(line)
            i += 1
            continue
        indent, names, first = m.group(1), m.group(2).split(", "), m.group(3)
        i += 1
        rest = []
        while i < len(lines) and lines[i].startswith(indent + " ") and lines[i].strip():
            rest.append(lines[i])
            i += 1
        for name in names:
            out += [f"{indent}{name}:{first}", *rest]
    return "\n".join(out)


def _doctests(text: str) -> str:
    """Doctest lines (``>>>``, ``...`` and their output, up to a blank line) -> a pycon block."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        stripped = lines[i].lstrip()
        if not stripped.startswith(">>>"):
            out.append(lines[i])
            i += 1
            continue
        indent = lines[i][: len(lines[i]) - len(stripped)]
        out.append(f"{indent}```pycon")
        while i < len(lines) and lines[i].strip():
            out.append(lines[i])
            i += 1
        out.append(f"{indent}```")
    return "\n".join(out)


def _code_blocks(text: str) -> str:
    """``.. code-block:: lang`` + indented block -> fenced block."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        m = _CODE_BLOCK.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent, lang = m.group(1), m.group(2)
        i += 1
        body = []
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith(indent + " ")):
            body.append(lines[i])
            i += 1
        while body and not body[-1].strip():
            body.pop()
        while body and not body[0].strip():
            body.pop(0)
        width = min(len(b) - len(b.lstrip()) for b in body if b.strip())
        out += [f"{indent}```{lang}", *(indent + b[width:] for b in body), f"{indent}```", ""]
    return "\n".join(out)


def _tables(text: str) -> str:
    """reST simple table (rule, header, rule, rows, rule) -> Markdown table."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        m = _RULE.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent, rule = m.group(1), lines[i].rstrip()
        spans = [(s.start(), s.end()) for s in re.finditer(r"=+", rule)]
        j = i + 1
        rows = []
        rules = 1
        while j < len(lines) and rules < 3:
            if lines[j].rstrip() == rule:
                rules += 1
            elif lines[j].strip():
                rows.append(lines[j])
            j += 1
        cells = [
            [
                row[a : (spans[k + 1][0] if k + 1 < len(spans) else len(row))].strip()
                for k, (a, _) in enumerate(spans)
            ]
            for row in rows
        ]
        out.append(indent + "| " + " | ".join(cells[0]) + " |")
        out.append(indent + "|" + "---|" * len(spans))
        out += [indent + "| " + " | ".join(c) + " |" for c in cells[1:]]
        i = j
    return "\n".join(out)
