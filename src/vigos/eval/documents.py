"""Documents rendered twice, to Markdown and to self-contained HTML, from one list of blocks.

A document is a title and a list of blocks, each ``(kind, content)``:
``("h2", text)``, ``("p", text)``, ``("ul", [text])``, ``("meta", [(label, value)])``,
``("table", Table)``, ``("figure", (src, alt, caption))``, ``("links", [(label, href)])``.
The reports of ``vigos eval`` are written through it.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = ["Block", "Table", "markdown_table", "to_html", "to_markdown", "write_documents"]


@dataclass
class Table:
    """Rows of text cells; the first ``label_columns`` hold labels, the rest numbers (right-aligned).

    ``bold`` holds ``(row, column)`` cells; a rule is drawn above each row in ``section_starts``.
    """

    header: list[str]
    rows: list[list[str]]
    label_columns: int = 1
    bold: set[tuple[int, int]] = field(default_factory=set)
    section_starts: set[int] = field(default_factory=set)


# One block of a document (see the module docstring for the kinds).
Block = tuple[str, Any]


def _md_text(text: str) -> str:
    text = " ".join(str(text).split())
    for char, escaped in (("\\", "\\\\"), ("|", "\\|"), ("*", "\\*"), ("`", "\\`"), ("<", "&lt;"), (">", "&gt;")):
        text = text.replace(char, escaped)
    return text


def _md_label(text: str) -> str:
    """Text for inside ``[...]`` of a Markdown link or image."""
    return _md_text(text).replace("[", "\\[").replace("]", "\\]")


def markdown_table(table: Table) -> str:
    """One table as Markdown."""
    align = ["---" if i < table.label_columns else "---:" for i in range(len(table.header))]
    lines = ["| " + " | ".join(_md_text(cell) for cell in table.header) + " |", "| " + " | ".join(align) + " |"]
    for r, row in enumerate(table.rows):
        cells = [f"**{_md_text(cell)}**" if (r, c) in table.bold else _md_text(cell) for c, cell in enumerate(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _html_table(table: Table) -> str:
    def cell(tag: str, c: int, text: str, bold: bool = False) -> str:
        kind = ' class="num"' if c >= table.label_columns else ""
        body = f"<strong>{html.escape(text)}</strong>" if bold else html.escape(text)
        return f"<{tag}{kind}>{body}</{tag}>"

    lines = [
        "<table>",
        "<thead><tr>" + "".join(cell("th", c, h) for c, h in enumerate(table.header)) + "</tr></thead>",
        "<tbody>",
    ]
    for r, row in enumerate(table.rows):
        opening = '<tr class="section">' if r in table.section_starts else "<tr>"
        cells = "".join(cell("td", c, text, (r, c) in table.bold) for c, text in enumerate(row))
        lines.append(f"{opening}{cells}</tr>")
    lines += ["</tbody>", "</table>"]
    return "\n".join(lines)


def to_markdown(title: str, blocks: Sequence[Block]) -> str:
    """The document as Markdown."""
    parts = [f"# {_md_text(title)}"]
    for kind, content in blocks:
        if kind == "h2":
            parts.append(f"## {_md_text(content)}")
        elif kind == "p":
            parts.append(_md_text(content))
        elif kind == "ul":
            parts.append("\n".join(f"- {_md_text(item)}" for item in content))
        elif kind == "meta":
            parts.append("\n".join(f"- **{_md_text(label)}:** {_md_text(value)}" for label, value in content))
        elif kind == "table":
            parts.append(markdown_table(content))
        elif kind == "figure":
            src, alt, caption = content
            parts.append(f"![{_md_label(alt)}]({quote(src)})\n\n*{_md_text(caption)}*")
        elif kind == "links":
            parts.append("\n".join(f"- [{_md_label(label)}]({quote(href)})" for label, href in content))
    return "\n\n".join(parts) + "\n"


_CSS = """
body { font-family: "DejaVu Sans", "Segoe UI", Helvetica, Arial, sans-serif; color: #1c1c1c;
       max-width: 1150px; margin: 1.5rem auto; padding: 0 1rem; line-height: 1.45; }
h1 { font-size: 1.55rem; margin: 0 0 .6rem; }
h2 { font-size: 1.15rem; margin: 1.8rem 0 .5rem; padding-bottom: .2rem; border-bottom: 1px solid #ddd; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: .1rem 1rem; margin: 0; font-size: .92rem; }
dl.meta dt { font-weight: bold; color: #555; }
dl.meta dd { margin: 0; }
table { border-collapse: collapse; margin: .5rem 0; font-size: .9rem; }
th, td { border: 1px solid #d4d4d4; padding: .28rem .6rem; text-align: left; vertical-align: top; }
th { background: #eef1f5; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:nth-child(even) td { background: #fafafa; }
tr.section td { border-top: 2px solid #888; }
figure { margin: 1rem 0; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption, p.note { color: #555; font-size: .88rem; }
ul { padding-left: 1.3rem; }
""".strip()


def to_html(title: str, blocks: Sequence[Block]) -> str:
    """The document as one HTML page with inline CSS."""
    esc = html.escape
    parts = []
    for kind, content in blocks:
        if kind == "h2":
            parts.append(f"<h2>{esc(content)}</h2>")
        elif kind == "p":
            parts.append(f'<p class="note">{esc(content)}</p>')
        elif kind == "ul":
            parts.append("<ul>\n" + "\n".join(f"<li>{esc(item)}</li>" for item in content) + "\n</ul>")
        elif kind == "meta":
            rows = "\n".join(f"<dt>{esc(label)}</dt><dd>{esc(value)}</dd>" for label, value in content)
            parts.append(f'<dl class="meta">\n{rows}\n</dl>')
        elif kind == "table":
            parts.append(_html_table(content))
        elif kind == "figure":
            src, alt, caption = content
            parts.append(
                f'<figure>\n<img src="{esc(quote(src))}" alt="{esc(alt)}">\n'
                f"<figcaption>{esc(caption)}</figcaption>\n</figure>"
            )
        elif kind == "links":
            items = "\n".join(f'<li><a href="{esc(quote(href))}">{esc(label)}</a></li>' for label, href in content)
            parts.append(f"<ul>\n{items}\n</ul>")
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{esc(title)}</title>\n'
        f"<style>\n{_CSS}\n</style>\n</head>\n<body>\n<h1>{esc(title)}</h1>\n{body}\n</body>\n</html>\n"
    )


def write_documents(out: Path, stem: str, title: str, blocks: Sequence[Block]) -> tuple[Path, Path]:
    """Writes ``out/stem.md`` and ``out/stem.html``; returns their paths."""
    md_path, html_path = out / f"{stem}.md", out / f"{stem}.html"
    md_path.write_text(to_markdown(title, blocks), encoding="utf-8")
    html_path.write_text(to_html(title, blocks), encoding="utf-8")
    return md_path, html_path
