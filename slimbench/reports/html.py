"""report.html: one self-contained file (no network, no CDN, no external script): the report's
tables, sortable by clicking a header (a few lines of inline script), and its plots embedded as
base64 PNG."""

from __future__ import annotations

import base64
import html
import re

import pandas as pd

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 12.5px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #eef2f7; cursor: pointer; user-select: none; white-space: nowrap; }
th.sorted-asc::after { content: " \\25B2"; } th.sorted-desc::after { content: " \\25BC"; }
tr:nth-child(even) td { background: #fafafa; }
td.notrun { color: #a33; } td.notmeasured { color: #888; font-style: italic; }
img { max-width: 100%; margin: 0.5em 0; border: 1px solid #ddd; }
p.intro { color: #444; }
"""

# Click a header: sort that column (numbers by value, "12.3 ms (2.1x)" by its first number), again to reverse.
SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = !th.classList.contains("sorted-asc");
      table.querySelectorAll("th").forEach(function (h) { h.classList.remove("sorted-asc", "sorted-desc"); });
      th.classList.add(asc ? "sorted-asc" : "sorted-desc");
      var body = table.tBodies[0], rows = Array.from(body.rows);
      function key(row) {
        var text = row.cells[col].textContent.trim(), n = parseFloat(text.replace(/[^0-9.eE+-]/g, " ").trim());
        return isNaN(n) || !/^[-+]?[0-9.]/.test(text) ? text.toLowerCase() : n;
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (typeof x !== typeof y) { return typeof x === "number" ? -1 : 1; }
        return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def _inline(text: str) -> str:
    """Escape, then the two bits of Markdown the report's text uses: **bold** and *italics*."""
    out, parts = [], html.escape(str(text)).split("**")
    for i, part in enumerate(parts):
        out.append(f"<b>{part}</b>" if i % 2 else part)
    return re.sub(r"\*([^*\s][^*]*)\*", r"<i>\1</i>", "".join(out))


def table_html(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for _, row in frame.iterrows():
        cells = []
        for value in row:
            text = "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
            cls = " class='notrun'" if text.startswith("not run") else (
                " class='notmeasured'" if text == "not measured" else "")  # fmt: skip
            cells.append(f"<td{cls}>{_inline(text)}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table class='sortable'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def render(title: str, intro: list[str], sections, appendix, images: dict[str, bytes]) -> str:
    body = [f"<h1>{html.escape(title)}</h1>"] + [f"<p class='intro'>{_inline(p)}</p>" for p in intro]
    for heading, lines, tables, pictures in sections:
        body.append(f"<h2>{html.escape(heading)}</h2>")
        items = "".join(
            f"<li>{_inline(line.removeprefix('- '))}</li>" for line in lines if line.startswith("- ")
        )
        body += [f"<p>{_inline(line)}</p>" for line in lines if not line.startswith("- ")]
        body += [f"<ul>{items}</ul>"] if items else []
        body += [table_html(frame) for _, frame in tables]
        for name in pictures:
            data = base64.b64encode(images[name]).decode()
            body.append(f"<img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>")
    body.append("<h2>Appendix</h2>")
    for heading, lines in appendix:
        items = "".join(f"<li>{_inline(line.removeprefix('- '))}</li>" for line in lines)
        body.append(f"<h3>{html.escape(heading)}</h3><ul>{items}</ul>")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}<script>{SCRIPT}</script></body></html>\n")  # fmt: skip
