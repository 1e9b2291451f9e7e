"""The harness: record schema, timing statistics, resume after a kill."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from slimbench.bench import RECORD_FIELDS, run_bench
from slimbench.bench.runner import append_record, read_results
from slimbench.bench.timing import TimingPlan, summarize, time_calls
from slimbench.core.artifacts import read_manifest

FAST = TimingPlan(warmup=1, min_reps=3, min_seconds=0.0, max_reps=5)


def test_summarize_percentiles_and_throughput():
    s = summarize([float(x) for x in range(1, 101)], batch_size=4)
    assert s["reps"] == 100
    assert s["latency_ms_p50"] == pytest.approx(50.5)
    assert s["latency_ms_p90"] == pytest.approx(90.1)
    assert s["latency_ms_p99"] == pytest.approx(99.01)
    assert s["throughput_items_per_s"] == pytest.approx(4 / 0.0505)


def test_time_calls_warms_up_then_times_enough_reps():
    calls = []
    times = time_calls(calls.append, TimingPlan(warmup=2, min_reps=5, min_seconds=0.0))
    assert len(times) == 5 and calls == list(range(7))
    assert all(t >= 0 for t in times)


def test_append_record_survives_a_cut_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n{"a": 2, "b"')  # a run killed mid-write
    append_record(path, {"a": 3})
    assert read_results(path) == [{"a": 1}, {"a": 3}]


@pytest.fixture(scope="module")
def bench_run(tiny_variants, eval_jsonl, tmp_path_factory):
    results = tmp_path_factory.mktemp("bench") / "results.jsonl"
    dirs = [tiny_variants[n].path for n in ("baseline", "torch-int8", "onnx-o2-int8")]
    records, failures = run_bench(dirs, eval_jsonl, [1, 3], [16], results, num_threads=1, plan=FAST, progress=False,
                                  log=lambda *_: None)  # fmt: skip
    return dirs, results, records, failures


def test_records_have_the_schema_and_honest_values(bench_run):
    dirs, results, records, failures = bench_run
    assert failures == []
    assert len(records) == 6 and read_results(results) == records
    for r in records:
        assert tuple(r) == RECORD_FIELDS
        assert r["device"] == "cpu" and r["num_threads"] == 1
        assert r["gpu_peak_allocated_bytes"] is None and r["gpu_peak_reserved_bytes"] is None
        assert r["cuda_graphs"] is None and r["cuda_graph_skips"] is None  # counted on a GPU only
        assert 3 <= r["reps"] <= 5
        assert 0 < r["latency_ms_p50"] <= r["latency_ms_p99"]
        assert r["throughput_items_per_s"] == pytest.approx(r["batch_size"] / (r["latency_ms_mean"] / 1e3))
        assert r["peak_rss_bytes"] > 50 * 2**20
        assert r["ttft_ms_p50"] is None and r["tpot_ms_p50"] is None  # classification generates nothing
        assert r["metric_name"] == "accuracy" and 0 <= r["metric"] <= 1
        assert set(r["env"]) >= {"python", "torch", "transformers", "optimum", "onnxruntime", "bitsandbytes",
                                 "triton", "cpu_model", "gpu_driver", "cuda", "git_rev"}  # fmt: skip
    base = [r for r in records if r["variant"] == "baseline"]
    assert all(r["metric_ratio_to_baseline"] == 1.0 and r["agreement_with_baseline"] == 1.0 for r in base)
    assert {r["dtype"] for r in records if r["variant"] != "baseline"} == {"int8"}
    # the manifest carries the measured metrics too
    metrics = read_manifest(dirs[2])["metrics"]
    assert set(metrics["latency_ms_p50"]) == {"cpu:b1:s16", "cpu:b3:s16"}


def test_rerun_measures_nothing_twice(bench_run, eval_jsonl):
    dirs, results, _, _ = bench_run
    before = results.read_text()
    started = time.perf_counter()
    records, failures = run_bench(dirs, eval_jsonl, [1, 3], [16], results, num_threads=1, plan=FAST,
                                  progress=False, log=lambda *_: None)  # fmt: skip
    assert records == [] and failures == []
    assert results.read_text() == before
    assert time.perf_counter() - started < 5  # no worker process was started


def test_killed_run_keeps_finished_records_and_resumes(tiny_variants, eval_jsonl, tmp_path):
    results = tmp_path / "results.jsonl"
    dirs = [str(tiny_variants[n].path) for n in ("baseline", "onnx")]
    cmd = [sys.executable, "-m", "slimbench", "bench", *dirs, "--eval-data", str(eval_jsonl), "--results",
           str(results), "--batch-sizes", "1,2", "--seq-lens", "16", "--threads", "1", "--warmup", "1",
           "--min-reps", "3", "--min-seconds", "0"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not read_results(results) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = read_results(results)
    assert 1 <= len(kept) < 4, "the run should have been killed part-way"
    records, failures = run_bench([tiny_variants["baseline"].path, tiny_variants["onnx"].path], eval_jsonl, [1, 2],
                                  [16], results, num_threads=1, plan=FAST, progress=False, log=lambda *_: None)  # fmt: skip
    assert failures == []
    final = read_results(results)
    assert final[: len(kept)] == kept  # finished records kept as they were
    assert len(records) == 4 - len(kept)  # only the missing ones were measured
    keys = [(r["variant"], r["batch_size"], r["seq_len"]) for r in final]
    assert len(set(keys)) == len(keys) == 4


def test_bad_inputs_are_refused(tiny_variants, eval_jsonl, tmp_path):
    from slimbench import SlimbenchError

    path = tiny_variants["baseline"].path
    with pytest.raises(SlimbenchError, match="does not exist"):
        run_bench([path], tmp_path / "none.jsonl", [1], [8], tmp_path / "r.jsonl")
    with pytest.raises(SlimbenchError, match="not a slimbench variant"):
        run_bench([tmp_path], eval_jsonl, [1], [8], tmp_path / "r.jsonl")
    with pytest.raises(SlimbenchError, match="baseline 'x' is not among"):
        run_bench([path], eval_jsonl, [1], [8], tmp_path / "r.jsonl", baseline="x")


def test_worker_peak_rss_is_its_own_not_the_parents():
    # the parent holds 2 GiB resident, over twice what a child that imports torch holds (671 MiB
    # with torch 2.11+cu130 on a machine without a GPU)
    ballast = bytearray(2 * 2**30)
    ballast[::4096] = b"x" * len(ballast[::4096])
    code = "from slimbench.bench.worker import peak_rss_bytes; print(peak_rss_bytes())"
    child = int(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )
    assert 5 * 2**20 < child < 2**30
    del ballast


def test_the_measuring_process_runs_its_module_once():
    """`python -m slimbench.bench.worker` runs a module its package does not import first (else runpy
    warns on every measurement that the module was in sys.modules before it ran, and runs it twice)."""
    proc = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", "slimbench.bench.worker", "{}"],
                          capture_output=True, text=True)  # fmt: skip
    assert "found in sys.modules" not in proc.stderr
    assert "KeyError: 'device'" in proc.stderr  # it ran, and stopped at the empty job


def test_a_variant_that_cannot_run_on_the_device_is_a_not_run_record(
    tiny_bert, tiny_variants, eval_jsonl, tmp_path
):
    from conftest import TEXTS
    from slimbench.core.checkpoint import Checkpoint
    from slimbench.optimize.recipes import parse_recipe
    from slimbench.pipeline import optimize

    kernels = optimize(Checkpoint.open(tiny_bert), parse_recipe({"name": "kernels", "steps": [{"kernels": {}}]}),
                       tmp_path / "v", sample_texts=TEXTS, log=lambda *_: None).path  # fmt: skip
    results = tmp_path / "r.jsonl"
    dirs = [tiny_variants["baseline"].path, kernels]
    logged = []
    records, failures = run_bench(dirs, eval_jsonl, [1, 2], [16], results, num_threads=1, plan=FAST, progress=False,
                                  log=logged.append)  # fmt: skip
    assert failures == []
    not_run = [r for r in records if r["status"] == "not run"]
    assert [(r["variant"], r["batch_size"]) for r in not_run] == [("kernels", 1), ("kernels", 2)]
    assert all(
        r["reason"] == "Triton kernels are measured on a CUDA GPU only (--device cuda)" for r in not_run
    )
    assert all(tuple(r) == RECORD_FIELDS and r["latency_ms_p50"] is None for r in not_run)
    assert any("[kernels] not run on cpu: Triton kernels" in line for line in logged)
    # a rerun does not record the same reason again, and the report shows the cell as not run
    assert run_bench(dirs, eval_jsonl, [1, 2], [16], results, num_threads=1, plan=FAST, progress=False,
                     log=lambda *_: None)[0] == []  # fmt: skip
    from slimbench.reports import write_report

    report = write_report([results], tmp_path / "report").read_text()
    assert "- **kernels** not run (b1 s16, b2 s16): Triton kernels are measured on a CUDA GPU only" in report


def test_a_cell_counts_the_cuda_graphs_recorded_and_the_runs_without_one():
    """On a GPU the bench watches each cell: the CUDA graphs recorded, and those torch.compile declined to
    record, which torch only logs. On the CPU torch.compile can never record one, so a compiled call
    here is such a skip, with its reason, and the bench's log line says so."""
    from slimbench.backends.cudagraphs import GraphWatch, note_capture
    from slimbench.bench.runner import graph_skips_line

    torch._dynamo.reset()
    compiled = torch.compile(torch.nn.Linear(8, 4), backend="cudagraphs")
    watch = GraphWatch(0).start()
    with torch.inference_mode():
        for _ in range(3):
            compiled(torch.randn(2, 8))
    facts = watch.facts()
    assert facts["cuda_graphs"] == 0 and facts["cuda_graph_skips"] == 1  # compiled once, skipped once
    [reason] = facts["cuda_graph_skip_reasons"]
    assert reason.startswith("cpu device")
    assert graph_skips_line("kernels-bf16", {**facts, "workload": [2, 16]}) == (
        f"[kernels-bf16] b2 s16: torch.compile declined 1 CUDA graph(s) ({reason}), so part of the work ran "
        "without one; 0 graph(s) recorded. The record says so."
    )
    # counts are the cell's own: a later cell sees no old skip, and a compiled package's own capture counts
    watch = GraphWatch(0).start()
    with torch.inference_mode():
        compiled(torch.randn(2, 8))
    note_capture()
    assert watch.facts() == {"cuda_graphs": 1, "cuda_graph_skips": 0, "cuda_graph_skip_reasons": []}


def test_statistics_flag_unstable_records():
    steady = summarize([10.0, 10.1, 9.9, 10.0], batch_size=1)
    assert steady["latency_cv"] < 0.01 and steady["latency_ms_std"] == pytest.approx(0.0816, abs=1e-3)
    noisy = summarize([10.0, 20.0, 10.0, 20.0], batch_size=1)
    assert noisy["latency_cv"] == pytest.approx(5.7735 / 15, abs=1e-3)
    from slimbench.bench.runner import UNSTABLE_CV

    assert noisy["latency_cv"] > UNSTABLE_CV > steady["latency_cv"]
