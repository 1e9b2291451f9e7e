import json
import re

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
    assert df.attrs["torn"] == {str(results): [6]}  # the line a killed run cut short
    t = summary_table(df).set_index(["device_name", "variant"])
    assert t.loc[("CPU X", "onnx-o2-int8"), "speedup_vs_baseline"] == pytest.approx(1.75)
    assert bool(t.loc[("CPU X", "onnx-o2-int8"), "within_budget"]) is True  # 99.49% of baseline
    assert bool(t.loc[("CPU X", "baseline"), "within_budget"]) is True
    assert bool(t.loc[("CPU X", "too-lossy"), "within_budget"]) is False
    assert t.loc[("GPU Y", "baseline"), "speedup_vs_baseline"] == pytest.approx(1.0)


def test_write_report_markdown_and_csv(results, tmp_path):
    md = write_report([results], tmp_path / "out")
    text = md.read_text()
    assert "## text-classification on CPU X, 2 threads" in text
    assert (
        f"(left out, not whole records, as a run killed while writing leaves them: {results} line(s) 6)"
        in text
    )
    assert "## text-classification on GPU Y, 2 threads" in text
    assert "| onnx-o2-int8 |" in text and "1.75x" in text
    # too-lossy is faster but outside the budget
    assert "**onnx-o2-int8**: 400.00 ms p50, 1.75x baseline" in text
    csv = pd.read_csv(tmp_path / "out" / "report.csv")
    assert {"variant", "latency_ms_p50", "speedup_vs_baseline", "within_budget"} <= set(csv.columns)
    assert len(csv) == 4


def test_no_results_is_an_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(SlimbenchError, match="no results"):
        load_results([tmp_path / "empty.jsonl"])
    with pytest.raises(SlimbenchError, match="does not exist"):
        load_results([tmp_path / "missing.jsonl"])


# ------------------------------------------------------------------ across hardware configurations


@pytest.fixture
def two_configs(tmp_path):
    """A CPU at 1 and 2 threads and a GPU: a rerun of a cell, an unstable record, a variant below
    budget, a not-run cell and a cell never measured."""

    def rec(variant, threads, bs, p50, metric, device="cpu", name="AMD EPYC", **kw):
        fields = {"schema_version": 2, "status": "ok", "reason": None, "latency_ms_std": p50 * 0.02,
                  "latency_cv": 0.02, "unstable": False, **kw}  # fmt: skip
        return record(variant, bs, p50, metric, metric / 0.98, device_name=name, device=device, num_threads=threads,
                      **fields)  # fmt: skip

    rows = [
        rec("baseline", 1, 1, 40.0, 0.98), rec("baseline", 2, 1, 25.0, 0.98),
        rec("onnx-o2-int8", 1, 1, 20.0, 0.975), rec("onnx-o2-int8", 2, 1, 12.5, 0.975),
        rec("onnx-o2-int8", 2, 1, 99.0, 0.975, timestamp="2025-01-01T00:00:00"),  # older rerun of a cell
        rec("too-lossy", 1, 1, 5.0, 0.90), rec("too-lossy", 2, 1, 4.0, 0.90),
        rec("torch-int8", 1, 1, 30.0, 0.98, latency_cv=0.25, unstable=True),  # not measured at 2 threads
        rec("baseline", 1, 1, 3.0, 0.98, device="cuda", name="NVIDIA H100", cuda_graphs=3, cuda_graph_skips=1),
        {**rec("torch-int8", 1, 1, 1.0, 0.98, device="cuda", name="NVIDIA H100"), "status": "not run",
         "reason": "PyTorch dynamic int8 runs on the CPU only", "metric_ratio_to_baseline": None, "metric": None,
         **dict.fromkeys(["latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "latency_ms_mean", "reps",
                          "throughput_items_per_s", "peak_rss_bytes"])},
    ]  # fmt: skip
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_recommendation_per_configuration(two_configs):
    from slimbench.reports import recommendations

    rec = recommendations(summary_table(load_results([two_configs]))).set_index("config")
    assert rec.loc["AMD EPYC, 1 thread", "variant"] == "onnx-o2-int8"  # too-lossy is faster, outside budget
    assert rec.loc["AMD EPYC, 2 threads", "variant"] == "onnx-o2-int8"
    assert rec.loc["AMD EPYC, 2 threads", "speedup_vs_baseline"] == pytest.approx(2.0)  # the newest rerun
    assert rec.loc["NVIDIA H100 (cuda)", "variant"] == "baseline"


def test_cross_hardware_cells_say_not_run_and_not_measured(two_configs):
    from slimbench.reports.report import cross_hardware

    df = load_results([two_configs])
    assert df.attrs["dropped"] == 1
    cells, speed = cross_hardware(summary_table(df), "text-classification")
    assert list(cells.columns) == ["AMD EPYC, 1 thread", "AMD EPYC, 2 threads", "NVIDIA H100 (cuda)"]
    assert cells.loc["onnx-o2-int8", "AMD EPYC, 2 threads"] == "12.50 ms (2.00x)"
    assert cells.loc["torch-int8", "AMD EPYC, 2 threads"] == "not measured"
    assert (
        cells.loc["torch-int8", "NVIDIA H100 (cuda)"] == "not run: PyTorch dynamic int8 runs on the CPU only"
    )
    assert cells.loc["onnx-o2-int8", "NVIDIA H100 (cuda)"] == "not measured"
    assert speed.loc["torch-int8", "AMD EPYC, 1 thread"] == pytest.approx(40 / 30)
    assert pd.isna(speed.loc["torch-int8", "NVIDIA H100 (cuda)"])


def test_report_files_markdown_csv_html_and_plots(two_configs, tmp_path):
    out = tmp_path / "report"
    text = write_report([two_configs], out).read_text()
    assert "(1 older measurement(s) of a cell dropped; the newest kept)" in text
    assert "not whole records" not in text
    assert "## Which variant to deploy: text-classification" in text
    assert "**onnx-o2-int8**: 12.50 ms p50, 2.00x baseline, 500 MiB peak" in text
    assert "## Across hardware: text-classification" in text and "not measured" in text
    assert "- **torch-int8** not run (b1 s128): PyTorch dynamic int8 runs on the CPU only" in text
    assert "25% unstable" in text  # the unstable record is shown and marked, not dropped
    assert "### Environment: AMD EPYC, 2 threads" in text and "- torch: 2.13.0" in text
    # torch.compile's CUDA graphs: a column in the GPU's table only, with a graph torch.compile declined
    assert len(re.findall(r"\| CUDA graphs +\|", text)) == 1 and re.search(r"\| 3, 1 skipped +\|", text)
    csv = pd.read_csv(out / "report.csv")
    assert len(csv) == 9 and set(csv["config"]) == {
        "AMD EPYC, 1 thread",
        "AMD EPYC, 2 threads",
        "NVIDIA H100 (cuda)",
    }
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "heatmap-text-classification.png" in pngs
    assert any(p.startswith("pareto-amd-epyc--2-threads") for p in pngs)
    for png in out.glob("*.png"):
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        assert f"![{png.name}]({png.name})" in text
    page = (out / "report.html").read_text()
    assert "<script>" in page and "http" not in page.replace("http-equiv", "")  # self-contained
    assert page.count("data:image/png;base64,") == len(pngs)
    assert "class='notrun'" in page and "class='notmeasured'" in page


def test_pytest_benchmark_json_is_read_and_newer_schemas_refused(two_configs, tmp_path):
    records = [json.loads(line) for line in two_configs.read_text().splitlines()]
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"benchmarks": [{"name": "t", "extra_info": r} for r in records[:2]]}))
    assert len(load_results([bench])) == 2
    future = tmp_path / "future.jsonl"
    future.write_text(json.dumps({**records[0], "schema_version": 99}) + "\n")
    with pytest.raises(SlimbenchError, match="schema_version 99; this slimbench reads up to 3"):
        load_results([future])


def test_report_html_renders_and_sorts_in_a_real_browser(two_configs, tmp_path):
    """Headless Chromium: the tables and plots render, and a click on a header sorts its table."""
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian's chromium package is not installed here (.ci/run installs it)")
    out = tmp_path / "report"
    write_report([two_configs], out)
    page = out / "report.html"
    probe = page.with_name("probe.html")
    # the report plus a script that clicks the first table's "variant" header, then writes what it sees
    probe.write_text(
        page.read_text().replace(
            "</body>",
            """<script>
      var table = document.querySelectorAll("table.sortable")[2], th = table.querySelector("th");
      var before = Array.from(table.tBodies[0].rows).map(r => r.cells[0].textContent);
      th.click(); var asc = Array.from(table.tBodies[0].rows).map(r => r.cells[0].textContent);
      th.click(); var desc = Array.from(table.tBodies[0].rows).map(r => r.cells[0].textContent);
      var imgs = Array.from(document.images).filter(i => i.complete && i.naturalWidth > 100).length;
      document.title = JSON.stringify({tables: document.querySelectorAll("table").length, imgs: imgs,
                                       before: before, asc: asc, desc: desc});
    </script></body>""",
        )
    )
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files"]
    dom = subprocess.run([*common, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    title = dom.stdout.split("<title>", 1)[1].split("</title>", 1)[0]
    seen = json.loads(title.replace("&quot;", '"'))
    assert seen["tables"] >= 4 and seen["imgs"] == len(list(out.glob("*.png")))
    assert seen["asc"] == sorted(seen["before"]) and seen["desc"] == sorted(seen["before"], reverse=True)
    shot = tmp_path / "shot.png"
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1400,2200", page.as_uri()],
                   capture_output=True, timeout=120)  # fmt: skip
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
