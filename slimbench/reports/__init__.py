"""Reports: results (JSONL) -> pandas -> Markdown and CSV tables, per device."""

from slimbench.reports.report import load_results, summary_table, write_report

__all__ = ["load_results", "summary_table", "write_report"]
