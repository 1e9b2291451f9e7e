"""The harness: timing, memory, accuracy, a fresh process per measurement, resumable JSONL results."""

from slimbench.bench.runner import RECORD_FIELDS, SCHEMA_VERSION, run_bench

__all__ = ["RECORD_FIELDS", "SCHEMA_VERSION", "run_bench"]
