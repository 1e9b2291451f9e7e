"""The measurements of one variant on one device, in a fresh process, so its memory figures are its own.

`python -m slimbench.bench.worker '<job json>'` loads the variant once, then times every workload
of the job (smallest first; the peak RSS is reset before each, so each workload's peak is read on
its own, and the GPU's peak counters likewise), then scores the eval set if asked. It prints one
line per result, as soon as it has it:
    SLIMBENCH_RESULT {"workload": [batch, seq], ...}   a timed workload
    SLIMBENCH_RESULT {"accuracy": {...}}               the eval-set score
    SLIMBENCH_ERROR <one line>                         a failure meant for a person
The parent sets the thread count in the environment before this process starts.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

from slimbench.bench.runner import ERROR_PREFIX, RESULT_PREFIX


def peak_rss_bytes() -> int:
    """Peak resident memory of this process since it started (or since `reset_peak_rss`).

    On Linux, VmHWM of the current address space: ru_maxrss would also count the parent's
    pages, since it survives fork and exec."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def reset_peak_rss() -> bool:
    """Set the peak RSS back to the current RSS (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def reset_cell(device):
    """Start a cell's figures afresh: the process's peak RSS, the GPU's peak counters, and on a GPU the
    count of CUDA graphs torch.compile records and skips (returned, for `cell_facts`)."""
    from slimbench.backends.cudagraphs import watch

    reset_peak_rss()
    device.reset_peak_memory()
    return watch(device)


def cell_facts(device, graphs=None) -> dict:
    """What a timed cell records beside its times: peak memory since the last reset (RSS, and the
    GPU's counters), the thread count, the device's name, and on a GPU the CUDA graphs torch.compile
    recorded and those it declined to record (`graphs`, from `reset_cell`)."""
    import torch

    return {**device.peak_memory(), "peak_rss_bytes": peak_rss_bytes(), "num_threads": torch.get_num_threads(),
            "device_name": device.name(), **(graphs.facts() if graphs else {})}  # fmt: skip


def generation_latency(task, loaded, texts, bs, seq_len, plan, device, whole: dict) -> dict:
    """Time to first token (the prefill and one token, timed on its own) and time per output
    token, derived: (whole generate - first token) / (new tokens - 1), at p50 and p99."""
    from slimbench.bench.timing import summarize, time_calls
    from slimbench.tasks.base import NEW_TOKENS

    first = task.first_token(loaded, texts, bs, seq_len)
    if first is None:
        return {}
    ttft = summarize(time_calls(first, plan, device), bs)
    return {
        "ttft_ms_p50": ttft["latency_ms_p50"],
        "ttft_ms_p99": ttft["latency_ms_p99"],
        "tpot_ms_p50": (whole["latency_ms_p50"] - ttft["latency_ms_p50"]) / (NEW_TOKENS - 1),
        "tpot_ms_p99": (whole["latency_ms_p99"] - ttft["latency_ms_p50"]) / (NEW_TOKENS - 1),
    }


def emit(payload: dict) -> None:
    print(RESULT_PREFIX + json.dumps(payload), flush=True)


def run(job: dict) -> None:
    from slimbench.backends import Device, load
    from slimbench.bench.timing import TimingPlan, summarize, time_calls
    from slimbench.tasks import get_task

    device = Device.parse(job["device"])
    loaded = load(Path(job["model_dir"]), device, job["num_threads"])
    task = get_task(loaded.manifest["task"])
    texts = task.latency_texts(job["eval_path"])
    plan = TimingPlan(**job["plan"])
    for bs, seq_len in sorted(job["workloads"], key=lambda w: w[0] * w[1]):
        graphs = reset_cell(device)
        call, items = task.workload(loaded, texts, bs, seq_len)
        out = summarize(time_calls(call, plan, device), items)
        out.update(generation_latency(task, loaded, texts, bs, seq_len, plan, device, out))
        out.update(cell_facts(device, graphs), workload=[bs, seq_len])
        emit(out)
    if job.get("accuracy"):
        emit({"accuracy": task.score(loaded, job["eval_path"], job["eval_seq_len"])})


def main(argv: list[str]) -> int:
    from slimbench import SlimbenchError

    job = json.loads(argv[1])
    try:
        run(job)
    except SlimbenchError as e:
        print(ERROR_PREFIX + " ".join(str(e).split()), flush=True)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
