"""The runner: every (variant, workload) on one device, each in a fresh process; one record per
measurement appended to a JSONL file and flushed at once, so a run that dies keeps what it
finished and a rerun skips it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from slimbench import SlimbenchError
from slimbench.artifacts import read_manifest, update_metrics
from slimbench.bench.timing import TimingPlan
from slimbench.bench.worker import RESULT_PREFIX
from slimbench.environment import environment

SCHEMA_VERSION = 1
RECORD_FIELDS = (
    "schema_version", "run_id", "variant", "recipe", "checkpoint", "task", "device", "device_name",
    "num_threads", "dtype", "batch_size", "seq_len", "reps", "latency_ms_p50", "latency_ms_p90",
    "latency_ms_p99", "latency_ms_mean", "throughput_items_per_s", "peak_rss_bytes",
    "gpu_peak_allocated_bytes", "gpu_peak_reserved_bytes", "size_on_disk_bytes", "metric_name", "metric",
    "metric_ratio_to_baseline", "agreement_with_baseline", "env", "timestamp",
)  # fmt: skip


def default_num_threads() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def read_results(path: Path) -> list[dict]:
    """Records of a results file; a line cut short by a killed run is ignored."""
    records = []
    if Path(path).is_file():
        for line in Path(path).read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def append_record(path: Path, record: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell():  # a killed run may have left a partial last line: start a fresh one
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write((json.dumps(record) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())


def _key(task: str, variant: str, device: str, batch_size: int, seq_len: int) -> tuple:
    return (task, variant, device, int(batch_size), int(seq_len))


def _die_with_parent() -> None:
    # a worker whose runner was killed would go on measuring and skew the next run's figures
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _run_worker(job: dict, num_threads: int) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(num_threads)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    proc = subprocess.run(
        [sys.executable, "-m", "slimbench.bench.worker", json.dumps(job)],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
    raise SlimbenchError(f"measuring {Path(job['model_dir']).name} ({job['mode']}) failed:\n{tail}")


def _file_sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _accuracy(model_dir: Path, manifest: dict, cache_dir: Path, base_job: dict, eval_seq_len: int) -> dict:
    """Predictions of `model_dir` on the eval set, cached beside the results file."""
    key = f"{manifest['variant']}-{manifest['created']}-{_file_sha(base_job['eval_path'])}-{eval_seq_len}"
    cached = cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    out = _run_worker({**base_job, "mode": "accuracy", "model_dir": str(model_dir), "seq_len": eval_seq_len},
                      base_job["num_threads"])  # fmt: skip
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp")
    tmp.write_text(json.dumps(out))
    os.replace(tmp, cached)
    return out


def run_bench(
    model_dirs: list[Path],
    eval_path: Path,
    batch_sizes: list[int],
    seq_lens: list[int],
    results_path: Path,
    *,
    device: str = "cpu",
    num_threads: int | None = None,
    baseline: str | None = None,
    plan: TimingPlan | None = None,
    eval_seq_len: int = 128,
    progress: bool = True,
    log=print,
) -> tuple[list[dict], list[str]]:
    """Measure every variant x workload not yet in `results_path`. Returns (new records, failures)."""
    from tqdm.auto import tqdm

    if device not in ("cpu", "cuda"):
        raise SlimbenchError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SlimbenchError("device 'cuda' asked for, but PyTorch sees no CUDA GPU")
    if not Path(eval_path).is_file():
        raise SlimbenchError(f"eval data {str(eval_path)!r} does not exist")
    manifests = {Path(d): read_manifest(Path(d)) for d in model_dirs}
    names = [m["variant"] for m in manifests.values()]
    if len(set(names)) != len(names):
        raise SlimbenchError(f"two variants share a name: {names}")
    if baseline is None:
        baseline = next(
            (m["variant"] for m in manifests.values() if m["recipe"]["name"] == "baseline"), names[0]
        )
    elif baseline not in names:
        raise SlimbenchError(
            f"baseline {baseline!r} is not among the variants benchmarked ({', '.join(names)})"
        )
    num_threads = num_threads or default_num_threads()
    plan = plan or TimingPlan()
    run_id = uuid.uuid4().hex[:12]
    previous = read_results(results_path)
    done = {_key(r.get("task"), r["variant"], r["device"], r["batch_size"], r["seq_len"]) for r in previous}
    workloads = sorted({(int(b), int(s)) for b in batch_sizes for s in seq_lens})
    todo = {
        d: [w for w in workloads if _key(m["task"], m["variant"], device, *w) not in done]
        for d, m in manifests.items()
    }
    skipped = sum(len(workloads) - len(t) for t in todo.values())
    if skipped:
        log(f"{skipped} measurement(s) already in {results_path}; skipping them")
    base_job = {
        "eval_path": str(eval_path), "device": device, "num_threads": num_threads,
        "plan": dataclasses.asdict(plan),
    }  # fmt: skip
    cache_dir = Path(results_path).with_suffix(".predictions")
    # baseline first: every other variant's agreement is measured against its predictions
    order = sorted(manifests, key=lambda d: manifests[d]["variant"] != baseline)
    base_dir = order[0] if manifests[order[0]]["variant"] == baseline else None
    base_acc = None
    records, failures = [], []
    bar = tqdm(total=sum(len(t) for t in todo.values()), desc="bench", unit="run", disable=not progress)
    for model_dir in order:
        manifest = manifests[model_dir]
        name = manifest["variant"]
        if not todo[model_dir]:
            continue
        try:
            if base_acc is None and base_dir is not None:
                base_acc = _accuracy(base_dir, manifests[base_dir], cache_dir, base_job, eval_seq_len)
            acc = _accuracy(model_dir, manifest, cache_dir, base_job, eval_seq_len)
        except SlimbenchError as e:
            failures.append(str(e))
            log(f"[{name}] skipped: {e}")
            bar.update(len(todo[model_dir]))
            continue
        agreement = ratio = None
        if base_acc is not None:
            agreement = sum(
                a == b for a, b in zip(acc["predictions"], base_acc["predictions"], strict=True)
            ) / len(acc["predictions"])
            ratio = acc["metric"] / base_acc["metric"] if base_acc["metric"] else None
        for bs, seq_len in todo[model_dir]:
            bar.set_postfix_str(f"{name} b{bs} s{seq_len}")
            try:
                timing = _run_worker(
                    {
                        **base_job,
                        "mode": "latency",
                        "model_dir": str(model_dir),
                        "batch_size": bs,
                        "seq_len": seq_len,
                    },
                    num_threads,
                )
            except SlimbenchError as e:
                failures.append(str(e))
                log(f"[{name}] b{bs} s{seq_len} failed: {e}")
                bar.update()
                continue
            record = {
                "schema_version": SCHEMA_VERSION,
                "run_id": run_id,
                "variant": name,
                "recipe": manifest["recipe"]["name"],
                "checkpoint": manifest["source"]["path"],
                "task": manifest["task"],
                "device": device,
                "device_name": timing["device_name"],
                "num_threads": timing["num_threads"],
                "dtype": manifest.get("dtype", "float32"),
                "batch_size": bs,
                "seq_len": seq_len,
                **{k: timing[k] for k in ("reps", "latency_ms_p50", "latency_ms_p90", "latency_ms_p99",
                                          "latency_ms_mean", "throughput_items_per_s", "peak_rss_bytes",
                                          "gpu_peak_allocated_bytes", "gpu_peak_reserved_bytes")},
                "size_on_disk_bytes": manifest["size_on_disk_bytes"],
                "metric_name": acc["metric_name"],
                "metric": acc["metric"],
                "metric_ratio_to_baseline": ratio,
                "agreement_with_baseline": agreement,
                "env": environment(),
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }  # fmt: skip
            append_record(results_path, record)
            records.append(record)
            bar.update()
        update_metrics(
            model_dir,
            {
                acc["metric_name"]: acc["metric"],
                "metric_ratio_to_baseline": ratio,
                "agreement_with_baseline": agreement,
                "latency_ms_p50": {
                    f"{device}:b{r['batch_size']}:s{r['seq_len']}": r["latency_ms_p50"]
                    for r in [*previous, *records]
                    if r["variant"] == name and r["device"] == device and r.get("task") == manifest["task"]
                },
            },
        )
    bar.close()
    return records, failures
