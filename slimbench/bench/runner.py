"""The runner: every (variant, workload) on one device, a fresh process per variant; one record per
measurement appended to a JSONL file and flushed at once, so a run that dies keeps what it
finished and a rerun skips it. Variants that cannot run on the device are "not run" records."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from slimbench import SlimbenchError
from slimbench.backends import Device, cannot_run
from slimbench.bench.timing import TimingPlan
from slimbench.core import interrupt
from slimbench.core.environment import environment
from slimbench.core.manifest import read_manifest, update_metrics

# 2: status and reason ("not run" records), latency_ms_std, latency_cv, unstable, ttft/tpot
# 3: cuda_graphs, cuda_graph_skips
SCHEMA_VERSION = 3
RECORD_FIELDS = (
    "schema_version", "run_id", "status", "reason", "variant", "recipe", "checkpoint", "task", "device",
    "device_name", "num_threads", "dtype", "batch_size", "seq_len", "reps", "latency_ms_p50", "latency_ms_p90",
    "latency_ms_p99", "latency_ms_mean", "latency_ms_std", "latency_cv", "unstable", "throughput_items_per_s",
    "ttft_ms_p50", "ttft_ms_p99", "tpot_ms_p50", "tpot_ms_p99", "peak_rss_bytes", "gpu_peak_allocated_bytes",
    "gpu_peak_reserved_bytes", "cuda_graphs", "cuda_graph_skips", "size_on_disk_bytes", "metric_name", "metric",
    "metric_ratio_to_baseline", "agreement_with_baseline", "env", "timestamp",
)  # fmt: skip
TIMING_FIELDS = ("reps", "latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "latency_ms_mean", "latency_ms_std",
                 "latency_cv", "throughput_items_per_s", "ttft_ms_p50", "ttft_ms_p99", "tpot_ms_p50", "tpot_ms_p99",
                 "peak_rss_bytes", "gpu_peak_allocated_bytes", "gpu_peak_reserved_bytes", "cuda_graphs",
                 "cuda_graph_skips")  # fmt: skip
UNSTABLE_CV = 0.10  # a record whose latency varies more than this (std / mean) is marked unstable


def default_num_threads() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def read_results(path: Path, torn: list[int] | None = None) -> list[dict]:
    """Records of a results file; a line cut short by a killed run is left out (its number appended to
    `torn`, where given)."""
    records = []
    if Path(path).is_file():
        for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if torn is not None and line.strip():
                    torn.append(number)
    return records


def append_record(path: Path, record: dict) -> bool:
    """Append one record as one whole line, under an exclusive lock: two runs may share a file. A
    measurement whose cell another run has recorded meanwhile is not written twice (returns False)."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
        if record.get("status", "ok") == "ok" and "variant" in record:
            f.seek(0)
            for line in f.read().decode(errors="ignore").splitlines():
                try:
                    other = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if (
                    other.get("status", "ok") == "ok"
                    and "variant" in other
                    and record_key(other) == record_key(record)
                ):
                    return False
        f.seek(0, os.SEEK_END)
        if f.tell():  # a killed run may have left a partial last line: start a fresh one
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write((json.dumps(record) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())
    return True


def cell_key(task, variant: str, device, threads, batch_size, seq_len) -> tuple:
    """A cell: task, variant, device, CPU threads (a CPU's configuration), workload."""
    return (
        task,
        variant,
        str(device),
        None if threads is None else int(threads),
        int(batch_size),
        int(seq_len),
    )


def record_key(r: dict) -> tuple:
    return cell_key(
        r.get("task"), r["variant"], r["device"], r.get("num_threads"), r["batch_size"], r["seq_len"]
    )


# what a measuring process (slimbench.bench.worker, run as a script: the package must not import it) prints
RESULT_PREFIX = "SLIMBENCH_RESULT "
ERROR_PREFIX = "SLIMBENCH_ERROR "


def _die_with_parent() -> None:
    # a worker whose runner was killed would go on measuring and skew the next run's figures
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_worker(job: dict, num_threads: int, on_result: Callable[[dict], None]) -> None:
    """Run one worker process; `on_result` gets each result as the worker prints it. A failure is
    raised as a one-line SlimbenchError (the worker's own message, or the tail of its output)."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(num_threads)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "slimbench.bench.worker", json.dumps(job)],
            stdout=subprocess.PIPE, stderr=stderr, text=True, env=env,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )  # fmt: skip
        error = None
        try:
            interrupt.check()  # a Ctrl-C that landed while the process started
            for line in proc.stdout:
                if line.startswith(RESULT_PREFIX):
                    on_result(json.loads(line[len(RESULT_PREFIX) :]))
                elif line.startswith(ERROR_PREFIX):
                    error = line[len(ERROR_PREFIX) :].strip()
        finally:
            if proc.poll() is None and error is None:
                proc.kill()
            proc.wait()
        if error:
            raise SlimbenchError(error)
        if proc.returncode != 0:
            stderr.seek(0)
            lines = [x for x in stderr.read().strip().splitlines() if x.strip()]
            raise SlimbenchError(
                f"the measuring process exited with code {proc.returncode}: {lines[-1] if lines else 'no output'}"
                " (rerun with --debug for its whole output)"
            )


def _file_sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def check_inputs(
    manifests: dict[Path, dict], eval_path: Path, seq_lens: list[int], eval_seq_len: int
) -> None:
    """Refuse, before any process starts, eval data the variants cannot be scored on and sequence
    lengths beyond what a model can take, or too short to hold text after its special tokens."""
    from transformers import AutoConfig, AutoTokenizer

    from slimbench.core.data import least_seq_len
    from slimbench.tasks import get_task

    checked = set()
    for model_dir, manifest in manifests.items():
        config = AutoConfig.from_pretrained(model_dir)
        limit = getattr(config, "max_position_embeddings", None)
        longest, shortest = max([*seq_lens, eval_seq_len]), min([*seq_lens, eval_seq_len])
        if limit and longest > limit:
            raise SlimbenchError(
                f"sequence length {longest} is longer than {manifest['variant']} takes ({limit} positions): "
                f"use --seq-lens/--eval-seq-len of at most {limit}"
            )
        least = least_seq_len(AutoTokenizer.from_pretrained(model_dir))
        if shortest < least:
            raise SlimbenchError(
                f"sequence length {shortest} holds no text for {manifest['variant']}: its tokenizer adds "
                f"{least - 1} special token(s) to every text; use --seq-lens/--eval-seq-len of at least {least}"
            )
        labels = (manifest["task"], tuple(sorted((getattr(config, "label2id", None) or {}).items())))
        if labels not in checked:
            get_task(manifest["task"]).check_data(eval_path, config)
            checked.add(labels)


def compare(acc: dict | None, base_acc: dict | None) -> tuple[float | None, float | None]:
    """(metric / baseline metric, share of predictions equal to the baseline's)."""
    if acc is None or base_acc is None:
        return None, None
    same = sum(a == b for a, b in zip(acc["predictions"], base_acc["predictions"], strict=True))
    return (acc["metric"] / base_acc["metric"] if base_acc["metric"] else None), same / len(
        acc["predictions"]
    )


def run_bench(
    model_dirs: list[Path],
    eval_path: Path,
    batch_sizes: list[int],
    seq_lens: list[int],
    results_path: Path,
    *,
    device: Device | str = "cpu",
    num_threads: int | None = None,
    baseline: str | None = None,
    plan: TimingPlan | None = None,
    eval_seq_len: int = 128,
    progress: bool = True,
    ray: str | None = None,
    accelerator_type: str | None = None,
    log=print,
) -> tuple[list[dict], list[str]]:
    """Measure every variant x workload not yet in `results_path`, one process per variant: its
    workloads, then its eval-set score (cached beside the results file). A variant that cannot run
    on `device` gets "not run" records with the reason. With `ray` ("local" or a cluster address),
    each variant is a Ray task on whichever node has the device (slimbench.bench.cluster): the
    baseline first, then the others in parallel, each one's records appended as it finishes.
    Returns (new records, failures)."""
    from tqdm.auto import tqdm

    # on a cluster the device is the nodes' (the driver may have none): each task checks it
    device = Device.parse(device) if ray else Device.parse(device).require()
    if not Path(eval_path).is_file():
        raise SlimbenchError(f"eval data {str(eval_path)!r} does not exist")
    listed = [(Path(d).resolve(), read_manifest(Path(d))) for d in model_dirs]
    names = [m["variant"] for _, m in listed]
    manifests = dict(listed)
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
    check_inputs(manifests, Path(eval_path), seq_lens, eval_seq_len)
    num_threads = num_threads or default_num_threads()
    plan = plan or TimingPlan()
    run_id = uuid.uuid4().hex[:12]
    previous = read_results(results_path)
    done = {record_key(r) for r in previous if r.get("status", "ok") == "ok"}
    not_run = {record_key(r): r.get("reason") for r in previous if r.get("status") == "not run"}
    workloads = sorted({(int(b), int(s)) for b in batch_sizes for s in seq_lens})
    todo = {
        d: [w for w in workloads if cell_key(m["task"], m["variant"], device, num_threads, *w) not in done]
        for d, m in manifests.items()
    }
    skipped = sum(len(workloads) - len(t) for t in todo.values())
    if skipped:
        log(f"{skipped} measurement(s) already in {results_path}; skipping them")
    cache_dir = Path(results_path).with_suffix(".predictions")
    eval_sha = _file_sha(eval_path)
    # read once: library versions, and the GPU's configuration through NVML (a cluster's nodes send theirs)
    env = None if ray else record_env(device)

    def cached_accuracy(manifest: dict) -> Path:
        key = f"{manifest['variant']}-{manifest['created']}-{eval_sha}-{eval_seq_len}-{device}"
        return cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"

    def job(model_dir: Path, acc: dict | None) -> dict:
        return {
            "model_dir": str(model_dir), "device": str(device), "num_threads": num_threads,
            "eval_path": str(Path(eval_path).resolve()), "eval_seq_len": eval_seq_len,
            "plan": dataclasses.asdict(plan), "workloads": todo[model_dir], "accuracy": acc is None,
        }  # fmt: skip

    # baseline first: every other variant's agreement is measured against its predictions
    order = sorted(manifests, key=lambda d: manifests[d]["variant"] != baseline)
    base_acc = None
    records, failures = [], []
    bar = tqdm(total=sum(len(t) for t in todo.values()), desc="bench", unit="run", disable=not progress)

    def keep(r: dict) -> None:
        if append_record(results_path, r):
            records.append(r)
        bar.update()

    def settle(model_dir: Path, outcome: dict) -> None:
        """The records of one variant's measurement (`timed`, `accuracy`, `error`, `reason`, `env`)."""
        nonlocal base_acc
        manifest = manifests[model_dir]
        name, is_base = manifest["variant"], manifest["variant"] == baseline
        acc, reason = outcome["accuracy"], outcome.get("reason")
        fill = functools.partial(make_record, manifest, device=device, run_id=run_id, num_threads=num_threads,
                                 env=outcome.get("env") or env or {})  # fmt: skip
        if reason:
            log(f"[{name}] not run on {device}: {reason}")
            for w in todo[model_dir]:
                if not_run.get(cell_key(manifest["task"], name, device, num_threads, *w)) == reason:
                    bar.update()  # already recorded with the same reason
                else:
                    keep(fill(w, None, None, reason=reason))
            return
        if outcome.get("error"):
            failures.append(f"{name}: {outcome['error']}")
            log(f"[{name}] failed: {outcome['error']}")
            bar.update(len(todo[model_dir]) - (len(outcome["timed"]) if acc else 0))
        for out in outcome["timed"]:
            if out.get("cuda_graph_skips"):
                log(graph_skips_line(name, out))
        if acc is not None:
            for out in outcome["timed"]:
                keep(fill(tuple(out["workload"]), acc, acc if is_base else base_acc, timing=out))
        if is_base:
            base_acc = acc
        if acc is not None and (todo[model_dir] or is_base):
            ratio, agreement = compare(acc, acc if is_base else base_acc)
            update_metrics(model_dir, {
                acc["metric_name"]: acc["metric"], "metric_ratio_to_baseline": ratio,
                "agreement_with_baseline": agreement,
                "latency_ms_p50": {
                    f"{r['device']}:b{r['batch_size']}:s{r['seq_len']}": r["latency_ms_p50"]
                    for r in [*previous, *records]
                    if r["variant"] == name and r.get("task") == manifest["task"] and r.get("status", "ok") == "ok"
                },
            })  # fmt: skip

    def cached(model_dir: Path) -> dict | None:
        cache = cached_accuracy(manifests[model_dir])
        return json.loads(cache.read_text()) if cache.is_file() else None

    def needs_worker(model_dir: Path, acc: dict | None) -> bool:
        return bool(todo[model_dir]) or (manifests[model_dir]["variant"] == baseline and acc is None)

    try:
        if ray:
            from slimbench.bench.cluster import RayPool

            pool = RayPool(measure_job, ray, device, num_threads, accelerator_type, log=log)
            for group in (order[:1], order[1:]):  # the baseline, then every other variant at once
                known = {model_dir: cached(model_dir) for model_dir in group}
                jobs = {d: job(d, acc) for d, acc in known.items() if needs_worker(d, acc)}
                for model_dir in group:
                    if model_dir not in jobs:
                        settle(model_dir, {"timed": [], "accuracy": known[model_dir]})
                for model_dir, outcome in pool.as_completed(jobs):
                    bar.set_postfix_str(f"{manifests[model_dir]['variant']} on {outcome.get('node', '?')}")
                    if (
                        outcome["accuracy"] is not None
                    ):  # the node scored it: cache it here, beside the results
                        write_cache(cached_accuracy(manifests[model_dir]), outcome["accuracy"])
                    settle(model_dir, {**outcome, "accuracy": outcome["accuracy"] or known[model_dir]})
        else:
            for model_dir in order:
                interrupt.check()
                reason = cannot_run(manifests[model_dir], device)
                acc = cached(model_dir)
                if reason or not needs_worker(model_dir, acc):
                    settle(model_dir, {"timed": [], "accuracy": acc, "reason": reason})
                    continue
                bar.set_postfix_str(manifests[model_dir]["variant"])
                timed, acc, error = measure_variant(
                    job(model_dir, acc), cached_accuracy(manifests[model_dir]), acc
                )
                settle(model_dir, {"timed": timed, "accuracy": acc, "error": error})
    finally:
        bar.close()  # before any message of an interrupted run, so that message is the last line
    return records, failures


def measure_job(job: dict) -> dict:
    """One variant's whole measurement on this machine, for a cluster node: the capability check, then
    one measuring process. Returns timings, score, error, "not run" reason and this node's environment."""
    import socket

    device = Device.parse(job["device"])
    out = {"timed": [], "accuracy": None, "error": None, "node": socket.gethostname()}
    out["reason"] = cannot_run(read_manifest(Path(job["model_dir"])), device)
    out["env"] = environment() if device.unavailable() else record_env(device)
    if not out["reason"]:
        out["timed"], out["accuracy"], out["error"] = measure_variant(job, None, None)
    return out


def write_cache(cache: Path, acc: dict) -> None:
    """The eval-set score of a variant, beside the results file (written whole, atomically)."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(acc))
    os.replace(tmp, cache)


def measure_variant(
    job: dict, cache: Path | None, acc: dict | None
) -> tuple[list[dict], dict | None, str | None]:
    """Run one worker for a variant: (timed workloads, eval-set score or `acc`, error or None). With
    `cache`, the score is cached there as soon as it arrives."""
    timed = []

    def on_result(out: dict) -> None:
        nonlocal acc
        if "accuracy" not in out:
            timed.append(out)
            return
        acc = out["accuracy"]
        if cache is not None:
            write_cache(cache, acc)  # as soon as it arrives: a run killed after it keeps it

    try:
        run_worker(job, job["num_threads"], on_result)
    except SlimbenchError as e:
        return timed, acc, str(e)
    return timed, acc, None


def graph_skips_line(name: str, timing: dict) -> str:
    """One line for a cell in which torch.compile declined a CUDA graph where it was asked for one."""
    bs, seq = timing["workload"]
    reasons = "; ".join(timing.get("cuda_graph_skip_reasons") or []) or "no reason logged"
    return (f"[{name}] b{bs} s{seq}: torch.compile declined {timing['cuda_graph_skips']} CUDA graph(s) ({reasons}), "
            f"so part of the work ran without one; {timing.get('cuda_graphs', 0)} graph(s) recorded. The record says "
            "so.")  # fmt: skip


def record_env(device: Device) -> dict:
    """The environment fingerprint a record carries, with the device's configuration facts."""
    return {**environment(), **device.facts()}


def make_record(manifest: dict, workload: tuple[int, int], acc: dict | None, base_acc: dict | None, *,
                device: Device, run_id: str, num_threads: int, env: dict, timing: dict | None = None,
                reason: str | None = None) -> dict:  # fmt: skip
    """One result record: a measurement (`timing`), or a "not run" record with its `reason`; metric
    ratio and agreement against `base_acc`, the baseline's score (None where there is none)."""
    ratio, agreement = compare(acc, base_acc)
    timing = timing or {}
    cv = timing.get("latency_cv")
    record = {
        "schema_version": SCHEMA_VERSION, "run_id": run_id, "status": "not run" if reason else "ok",
        "reason": reason, "variant": manifest["variant"], "recipe": manifest["recipe"]["name"],
        "checkpoint": manifest["source"]["path"], "task": manifest["task"], "device": str(device),
        "device_name": timing.get("device_name") or device.name(),
        "num_threads": timing.get("num_threads", num_threads), "dtype": manifest.get("dtype", "float32"),
        "batch_size": workload[0], "seq_len": workload[1], **{k: timing.get(k) for k in TIMING_FIELDS},
        "unstable": None if cv is None else cv > UNSTABLE_CV,
        "size_on_disk_bytes": manifest["size_on_disk_bytes"],
        "metric_name": acc["metric_name"] if acc else None, "metric": acc["metric"] if acc else None,
        "metric_ratio_to_baseline": ratio, "agreement_with_baseline": agreement,
        "env": env,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }  # fmt: skip
    return {k: record[k] for k in RECORD_FIELDS}
