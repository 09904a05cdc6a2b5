"""A self-contained HTML report: inline CSS, figures as ``data:image/png;base64`` URIs."""

from __future__ import annotations

import html as _html

import pandas as pd

__all__ = ["Report"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.78em;margin:.6em 0}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}th{background:#f3f3f3}
.warn{border:3px solid #c00;background:#fee;padding:.8em 1.2em;margin:1em 0;font-weight:bold}
.ok{border:2px solid #080;background:#efe;padding:.5em 1em}
.note{color:#555;font-size:.9em}figure{margin:1em 0}figcaption{font-size:.85em;color:#444}
img{max-width:100%}
"""


class Report:
    """Accumulates sections of HTML; :meth:`render` returns the whole page."""

    def __init__(self, title: str):
        self.title = title
        self.parts: list[str] = []
        self.n_figures = 0

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{_html.escape(text)}</h{level}>")

    def paragraph(self, text: str, cls: str = "") -> None:
        attr = f' class="{cls}"' if cls else ""
        self.parts.append(f"<p{attr}>{_html.escape(text)}</p>")

    def warning(self, lines) -> None:
        items = "".join(f"<li>{_html.escape(x)}</li>" for x in lines)
        self.parts.append(f'<div class="warn">WARNING<ul>{items}</ul></div>')

    def ok(self, text: str) -> None:
        self.parts.append(f'<div class="ok">{_html.escape(text)}</div>')

    def items(self, lines) -> None:
        self.parts.append("<ul>" + "".join(f"<li>{_html.escape(x)}</li>" for x in lines) + "</ul>")

    def table(self, frame: pd.DataFrame, caption: str = "", max_rows: int = 200) -> None:
        if frame is None or frame.empty:
            self.paragraph(f"{caption}: no rows.", "note")
            return
        shown = frame.head(max_rows)
        body = shown.to_html(
            index=False, float_format=lambda v: f"{v:.4g}", na_rep="", border=0, escape=True
        )
        cap = f"<p class='note'>{_html.escape(caption)}</p>" if caption else ""
        more = (
            f"<p class='note'>first {max_rows} of {len(frame)} rows; all in the CSV</p>"
            if len(frame) > max_rows
            else ""
        )
        self.parts.append(cap + body + more)

    def figure(self, b64: str, caption: str) -> None:
        self.n_figures += 1
        self.parts.append(
            f'<figure><img alt="{_html.escape(caption)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>Figure {self.n_figures}. {_html.escape(caption)}</figcaption></figure>"
        )

    def render(self) -> str:
        return (
            "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{_html.escape(self.title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{_html.escape(self.title)}</h1>" + "\n".join(self.parts) + "</body></html>\n"
        )
