"""The device a variant runs on: parsing `cpu`, `cuda`, `cuda:N`, whether it is here, how a call is
timed on it (perf_counter, or CUDA events) and how its peak memory is read.

Every "is this a GPU" question in slimbench is answered here; imports nothing from slimbench but
its error type, so every other part may ask it.
"""

from __future__ import annotations

import platform
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from slimbench import SlimbenchError

_SPEC = re.compile(r"^(cpu|cuda)(?::(\d+))?$")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@dataclass(frozen=True)
class Device:
    type: str  # "cpu" or "cuda"
    index: int | None = None

    @classmethod
    def parse(cls, spec: str | Device) -> Device:
        if isinstance(spec, Device):
            return spec
        m = _SPEC.match(str(spec).strip())
        if not m:
            raise SlimbenchError(f"device must be cpu, cuda or cuda:N, got {spec!r}")
        if m.group(1) == "cpu" and m.group(2) is not None:
            raise SlimbenchError(f"device 'cpu' takes no index, got {spec!r}")
        return cls(m.group(1), None if m.group(2) is None else int(m.group(2)))

    @classmethod
    def best(cls) -> Device:
        """The first CUDA GPU where there is one, else the CPU."""
        return cls("cuda") if cuda_available() else cls("cpu")

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    @property
    def is_cuda(self) -> bool:
        return self.type == "cuda"

    def unavailable(self) -> str | None:
        """None where this device is here; otherwise the one-line reason."""
        if not self.is_cuda:
            return None
        if not cuda_available():
            return "PyTorch sees no CUDA GPU on this machine"
        import torch

        count = torch.cuda.device_count()
        if (self.index or 0) >= count:
            return f"{self} asked for, but PyTorch sees {count} CUDA GPU(s)"
        return None

    def require(self) -> Device:
        reason = self.unavailable()
        if reason:
            raise SlimbenchError(f"device {str(self)!r}: {reason}")
        return self

    def compute_capability(self) -> tuple[int, int] | None:
        if not self.is_cuda or self.unavailable():
            return None
        import torch

        return torch.cuda.get_device_capability(self.index or 0)

    def lacks_capability(self, need) -> bool:
        """True where `need` ((major, minor), or None for none) asks for a newer CUDA GPU than this device."""
        return bool(need) and (self.compute_capability() or (0, 0)) < tuple(need)

    def name(self) -> str:
        if not self.is_cuda:
            return cpu_model()
        import torch

        return torch.cuda.get_device_name(self.index or 0)

    def facts(self) -> dict:
        """What names this hardware configuration beyond its model: for a GPU, the count visible, MIG
        mode, SM clocks, power limit, memory and compute capability (nvidia-ml-py, where it answers)."""
        if not self.is_cuda or self.unavailable():
            return {}
        import torch

        index = self.index or 0
        props = torch.cuda.get_device_properties(index)
        out = {"gpu_count": torch.cuda.device_count(), "gpu_memory_bytes": props.total_memory,
               "gpu_compute_capability": f"{props.major}.{props.minor}"}  # fmt: skip
        try:
            import pynvml

            pynvml.nvmlInit()
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                out["gpu_sm_clock_mhz"] = pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)
                out["gpu_max_sm_clock_mhz"] = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM)
                out["gpu_power_limit_w"] = pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000
                try:
                    out["gpu_mig_mode"] = bool(pynvml.nvmlDeviceGetMigMode(handle)[0])
                except pynvml.NVMLError:
                    out["gpu_mig_mode"] = None  # not a MIG-capable GPU
            finally:
                pynvml.nvmlShutdown()
        except Exception:  # no NVML here: the figures PyTorch gives stand alone
            pass
        return out

    def activate(self) -> None:
        """Make this the current CUDA device, so that `"cuda"` placements land on it."""
        if self.is_cuda and self.index is not None:
            import torch

            torch.cuda.set_device(self.index)

    def synchronize(self) -> None:
        if self.is_cuda:
            import torch

            torch.cuda.synchronize()

    def timed(self, fn: Callable[[], object]) -> float:
        """Milliseconds one call of `fn` takes: CUDA events around it on a GPU (the work queued by
        the call, not the host's launch time), perf_counter on the CPU."""
        if self.is_cuda:
            import torch

            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            return begin.elapsed_time(end)
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    def reset_peak_memory(self) -> None:
        if self.is_cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()

    def peak_memory(self) -> dict[str, int | None]:
        """GPU peak allocated and reserved bytes since the last reset (None on the CPU, whose peak is
        the measuring process's RSS, read by the bench worker)."""
        if not self.is_cuda:
            return {"gpu_peak_allocated_bytes": None, "gpu_peak_reserved_bytes": None}
        import torch

        return {
            "gpu_peak_allocated_bytes": torch.cuda.max_memory_allocated(),
            "gpu_peak_reserved_bytes": torch.cuda.max_memory_reserved(),
        }


CPU = Device("cpu")


def gpu_facts() -> dict:
    """CUDA version and driver for the environment fingerprint (None without a GPU)."""
    if not cuda_available():
        return {"cuda": None, "gpu_driver": None}
    import torch

    driver = None
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            driver = str(pynvml.nvmlSystemGetDriverVersion())
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        pass
    return {"cuda": torch.version.cuda, "gpu_driver": driver}
