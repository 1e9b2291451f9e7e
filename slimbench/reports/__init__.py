"""Reports: results (JSONL, or pytest-benchmark JSON) -> pandas -> one comparison across hardware
configurations: Markdown, CSV, a self-contained HTML page and PNG plots."""

from slimbench.reports.load import load_results
from slimbench.reports.report import recommendations, summary_table, write_report

__all__ = ["load_results", "recommendations", "summary_table", "write_report"]
