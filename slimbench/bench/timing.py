"""Timing: warm-up first, then repetitions until both a count and a duration are reached.
CPU: perf_counter. GPU: CUDA events around each call, synchronized before reading."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TimingPlan:
    warmup: int = 3
    min_reps: int = 10
    min_seconds: float = 2.0
    max_reps: int = 1000
    max_seconds: float = 120.0


def time_calls(fn: Callable[[int], object], plan: TimingPlan, cuda: bool = False) -> list[float]:
    """Milliseconds per call of `fn(i)`, i counting calls (to cycle through real batches)."""
    for i in range(plan.warmup):
        fn(i)
    if cuda:
        import torch

        torch.cuda.synchronize()
    times: list[float] = []
    started = time.perf_counter()
    i = plan.warmup
    while True:
        if cuda:
            import torch

            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn(i)
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn(i)
            times.append((time.perf_counter() - t0) * 1e3)
        i += 1
        elapsed = time.perf_counter() - started
        enough = len(times) >= plan.min_reps and elapsed >= plan.min_seconds
        if enough or len(times) >= plan.max_reps or (elapsed >= plan.max_seconds and len(times) >= 3):
            return times


def summarize(times_ms: list[float], batch_size: int) -> dict[str, float]:
    arr = np.asarray(times_ms, dtype=np.float64)
    mean = float(arr.mean())
    return {
        "reps": int(arr.size),
        "latency_ms_p50": float(np.percentile(arr, 50)),
        "latency_ms_p90": float(np.percentile(arr, 90)),
        "latency_ms_p99": float(np.percentile(arr, 99)),
        "latency_ms_mean": mean,
        "throughput_items_per_s": batch_size / (mean / 1e3),
    }
