"""`slimbench bench --ray`: each variant as a Ray task on a local cluster of two CPU workers, records
streamed into one JSONL, and a worker killed mid-measurement retried without losing or doubling a record."""

import threading
import time

import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")

VARIANTS = ("baseline", "onnx", "torch-int8")


@pytest.fixture
def local_cluster(monkeypatch):
    """A one-node Ray cluster on the loopback address with two CPUs (two workers at a time)."""
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        yield
    finally:
        ray.shutdown()


def kill_once(marker: str, killed: list) -> threading.Thread:
    """Kill the Ray worker running the measuring process of the variant whose path has `marker`, once."""
    import psutil

    def watch():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for proc in psutil.process_iter(["cmdline"]):
                cmd = " ".join(proc.info["cmdline"] or [])
                if "slimbench.bench.worker" in cmd and marker in cmd:
                    parent = proc.parent()
                    if parent is not None:
                        killed.append(parent.pid)
                        parent.kill()  # the Ray worker; its measuring process dies with it
                        return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def variant_dirs(tiny_bert, tmp_path_factory):
    from conftest import TEXTS
    from slimbench.core.checkpoint import Checkpoint
    from slimbench.optimize.recipes import load_recipe
    from slimbench.pipeline import optimize

    out = tmp_path_factory.mktemp("cluster-variants")
    return [
        optimize(Checkpoint.open(tiny_bert), load_recipe(name), out, sample_texts=TEXTS, allow_degraded=True,
                 log=lambda *_: None).path
        for name in VARIANTS
    ]  # fmt: skip


def test_ray_measures_every_variant_and_survives_a_worker_dying(
    local_cluster, variant_dirs, eval_jsonl, tmp_path
):
    from slimbench.bench import run_bench
    from slimbench.bench.runner import read_results
    from slimbench.bench.timing import TimingPlan

    dirs = variant_dirs
    results = tmp_path / "results.jsonl"
    killed: list[int] = []
    watcher = kill_once('/onnx"', killed)  # the job's JSON on the command line names its model dir
    logs = []
    records, failures = run_bench(
        dirs, eval_jsonl, [1, 2], [16], results, ray="local", num_threads=1,
        plan=TimingPlan(warmup=1, min_reps=2, min_seconds=0), progress=False, log=logs.append,
    )  # fmt: skip
    watcher.join(timeout=1)
    assert failures == []
    assert killed, "the onnx variant's Ray worker should have been killed once"
    on_disk = read_results(results)
    cells = [(r["variant"], r["batch_size"]) for r in on_disk]
    assert sorted(cells) == sorted((v, b) for v in VARIANTS for b in (1, 2))  # each cell once, none lost
    assert len(records) == 6
    for r in on_disk:
        assert r["status"] == "ok" and r["env"]["python"] and r["metric_name"] == "accuracy"
    base = {r["batch_size"]: r for r in on_disk if r["variant"] == "baseline"}
    assert base[1]["agreement_with_baseline"] == 1.0
    assert any(line.startswith("ray: 1 node(s), 0 GPU(s), 2 CPU(s)") for line in logs)
    # a rerun finds every cell done and starts no task
    again, failures = run_bench(dirs, eval_jsonl, [1, 2], [16], results, ray="local", num_threads=1,
                                progress=False, log=logs.append)  # fmt: skip
    assert again == [] and failures == [] and len(read_results(results)) == 6


def test_ray_flag_without_ray_installed_says_how_to_get_it(monkeypatch):
    import builtins

    from slimbench import SlimbenchError
    from slimbench.backends import Device
    from slimbench.bench.cluster import RayPool

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(SlimbenchError, match=r"--ray needs Ray: pip install 'slimbench\[ray\]'"):
        RayPool(len, "auto", Device.parse("cpu"), 1)
