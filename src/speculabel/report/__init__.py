"""The bench report: JSON, Markdown, PNG plots and a self-contained HTML page, from the analysis
dict alone (no model is ever called, so a report can be redone from the vote store)."""

from speculabel.report.render import render_html, render_md, write_report
from speculabel.report.tables import headline_tables, tables

__all__ = ["headline_tables", "render_html", "render_md", "tables", "write_report"]
