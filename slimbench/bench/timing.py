"""Timing: warm-up first, then repetitions until both a count and a duration are reached; each call
timed as its device times one (slimbench.backends.device: perf_counter, or CUDA events)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from slimbench.backends.device import CPU, Device


@dataclass(frozen=True)
class TimingPlan:
    warmup: int = 3
    min_reps: int = 10
    min_seconds: float = 2.0
    max_reps: int = 1000
    max_seconds: float = 120.0


def time_calls(fn: Callable[[int], object], plan: TimingPlan, device: Device = CPU) -> list[float]:
    """Milliseconds per call of `fn(i)`, i counting calls (to cycle through real batches), each
    timed as `device` times a call."""
    for i in range(plan.warmup):
        fn(i)
    device.synchronize()
    times: list[float] = []
    started = time.perf_counter()
    i = plan.warmup
    while True:
        times.append(device.timed(lambda i=i: fn(i)))
        i += 1
        elapsed = time.perf_counter() - started
        enough = len(times) >= plan.min_reps and elapsed >= plan.min_seconds
        if enough or len(times) >= plan.max_reps or (elapsed >= plan.max_seconds and len(times) >= 3):
            return times


def summarize(times_ms: list[float], batch_size: int) -> dict[str, float]:
    arr = np.asarray(times_ms, dtype=np.float64)
    mean = float(arr.mean())
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return {
        "reps": int(arr.size),
        "latency_ms_p50": float(np.percentile(arr, 50)),
        "latency_ms_p90": float(np.percentile(arr, 90)),
        "latency_ms_p99": float(np.percentile(arr, 99)),
        "latency_ms_mean": mean,
        "latency_ms_std": std,
        "latency_cv": std / mean if mean else 0.0,
        "throughput_items_per_s": batch_size / (mean / 1e3),
    }
