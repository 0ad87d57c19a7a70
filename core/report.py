"""The audit report as files to keep: one self-contained HTML page, the JSON and the per-sample CSV.

The HTML page is the report's Markdown (``audit.report_markdown``) rendered by markdown-it-py with raw HTML off
(nothing in the report can inject markup), followed by the charts module's figures of the same report, with
plotly.js inlined once: it opens offline and loads no external script. Every figure is drawn from the report's
own JSON, so the page and the JSON cannot disagree. The Predictions page and ``python -m core audit`` both
call ``audit_files``.
"""

from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path

from core import charts
from core.eval import audit

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#111}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}
code{background:#f3f3f3;padding:0 .2em;word-break:break-all}h1{font-size:1.6em}h2{margin-top:1.6em}"""


def criteria_band_rows(criteria: list[dict]) -> list[dict]:
    """The verdict's criteria as ``charts.criteria_bands`` draws them."""
    return [{"label": c["label"], "unit": c["unit"], "value": c["value"], "original": c["original"],
             "oracle_values": c["oracle_values"], "lo": c["band"]["lo"], "hi": c["band"]["hi"],
             "log": bool(c["band"].get("log"))} for c in criteria]


def report_figures(report: dict) -> list[tuple[str, object]]:
    """(title, Plotly figure) for each chart the report has data for."""
    figures = []
    criteria = (report.get("verdict") or {}).get("criteria")
    if criteria:
        figures.append(("What the verdict rests on: the method against the oracles' band",
                        charts.criteria_bands(criteria_band_rows(criteria))))
    relearn = report.get("relearn")
    if relearn:
        figures.append(("Relearn time: fine-tuning on the forgotten samples",
                        charts.relearn_curves(relearn["curves"], relearn["target"], relearn["metric"])))
    residue = report.get("weights_residue")
    if residue and residue.get("cka"):
        figures.append(("The weights alone: 1 − CKA to the oracles, per layer", charts.cka_band(residue["cka"])))
    return figures


def report_html(report: dict, class_names: tuple[str, ...] | None = None) -> str:
    """One HTML page holding the whole report and its figures (plotly.js inlined once)."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(
        audit.report_markdown(report, class_names))
    parts = []
    for i, (title, fig) in enumerate(report_figures(report)):
        parts.append(f"<h3>{html.escape(title)}</h3>" + fig.to_html(full_html=False, include_plotlyjs=i == 0,
                                                                    config={"displaylogo": False}))
    figures = ("<h2>Figures</h2>" + "".join(parts)) if parts else ""
    title = html.escape(f"Unlearning audit: {report['request']['description']}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<style>{STYLE}</style></head><body>{body}{figures}</body></html>\n")


def membership_csv(rows: list[dict]) -> str:
    """The per-sample membership table as CSV text (header from the first row; empty without rows)."""
    if not rows:
        return ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def audit_files(report: dict, class_names: tuple[str, ...] | None = None) -> dict[str, str]:
    """File name → text: ``audit.html``, ``audit.json``, ``audit.md`` and, when it exists, ``membership.csv``."""
    files = {"audit.html": report_html(report, class_names), "audit.json": json.dumps(report, indent=1),
             "audit.md": audit.report_markdown(report, class_names)}
    table = membership_csv((report.get("membership") or {}).get("rows") or [])
    if table:
        files["membership.csv"] = table
    return files


def write_audit(report: dict, folder: str | Path, class_names: tuple[str, ...] | None = None) -> list[Path]:
    """Write ``audit_files`` into ``folder`` (made if missing); the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in audit_files(report, class_names).items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
