import json

import pandas as pd
import pytest

from slimbench import SlimbenchError
from slimbench.reports import load_results, summary_table, write_report


def record(variant, bs, p50, metric, ratio, device_name="CPU X", **kw):
    r = {
        "schema_version": 1, "run_id": "r", "variant": variant, "recipe": variant, "checkpoint": "c",
        "task": "text-classification", "device": "cpu", "device_name": device_name, "num_threads": 2,
        "dtype": "float32", "batch_size": bs, "seq_len": 128, "reps": 10, "latency_ms_p50": p50,
        "latency_ms_p90": p50 * 1.1, "latency_ms_p99": p50 * 1.2, "latency_ms_mean": p50,
        "throughput_items_per_s": bs / p50 * 1e3, "peak_rss_bytes": 500 * 2**20, "gpu_peak_allocated_bytes": None,
        "gpu_peak_reserved_bytes": None, "size_on_disk_bytes": 90 * 2**20, "metric_name": "accuracy",
        "metric": metric, "metric_ratio_to_baseline": ratio, "agreement_with_baseline": 1.0,
        "env": {"torch": "2.13.0"}, "timestamp": "2026-01-01T00:00:00",
    }  # fmt: skip
    r.update(kw)
    return r


@pytest.fixture
def results(tmp_path):
    rows = [
        record("baseline", 32, 700.0, 0.98, 1.0),
        record("onnx-o2-int8", 32, 400.0, 0.975, 0.975 / 0.98),
        record("too-lossy", 32, 100.0, 0.90, 0.90 / 0.98),
        record("baseline", 32, 50.0, 0.98, 1.0, device_name="GPU Y"),
        record("baseline", 32, 999.0, 0.98, 1.0, timestamp="2025-01-01T00:00:00"),  # older duplicate
    ]
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"cut')
    return path


def test_summary_table_speedup_and_budget(results):
    df = load_results([results])
    assert len(df) == 4  # the older duplicate measurement is dropped
    t = summary_table(df).set_index(["device_name", "variant"])
    assert t.loc[("CPU X", "onnx-o2-int8"), "speedup_vs_baseline"] == pytest.approx(1.75)
    assert bool(t.loc[("CPU X", "onnx-o2-int8"), "within_budget"]) is True  # 99.49% of baseline
    assert bool(t.loc[("CPU X", "baseline"), "within_budget"]) is True
    assert bool(t.loc[("CPU X", "too-lossy"), "within_budget"]) is False
    assert t.loc[("GPU Y", "baseline"), "speedup_vs_baseline"] == pytest.approx(1.0)


def test_write_report_markdown_and_csv(results, tmp_path):
    md = write_report([results], tmp_path / "out")
    text = md.read_text()
    assert "## text-classification on cpu: CPU X, 2 threads" in text
    assert "## text-classification on cpu: GPU Y, 2 threads" in text
    assert "| onnx-o2-int8 |" in text and "1.75x" in text
    # too-lossy is faster but outside the budget
    assert "fastest within budget is **onnx-o2-int8** (400.0 ms p50, 1.75x baseline" in text
    csv = pd.read_csv(tmp_path / "out" / "report.csv")
    assert {"variant", "latency_ms_p50", "speedup_vs_baseline", "within_budget"} <= set(csv.columns)
    assert len(csv) == 4


def test_no_results_is_an_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(SlimbenchError, match="no results"):
        load_results([tmp_path / "empty.jsonl"])
    with pytest.raises(SlimbenchError, match="does not exist"):
        load_results([tmp_path / "missing.jsonl"])
