"""What became of CUDA graphs while a cell ran: how many were recorded on the device (by torch.compile's
cudagraph trees, and by slimbench's own capture of compiled packages), and how many times torch.compile
declined to record one.

torch.compile's CUDA graphs (mode "reduce-overhead", the `cudagraphs` backend, transformers' compiled decode
step for a static KV cache) fall back to running without a graph where they cannot capture one (an input on
the CPU, an input mutated in place that is not a static buffer, too many re-recordings), and only log why:
the figures then belong to a model without graphs, measured under a name that says graphs. Torch counts
most of these skips (`counters["inductor"]["cudagraph_skips"]`, also some it does not log; a graph that
Inductor's graph partitioning leaves without one is neither logged nor counted), and the graphs it recorded
stay in the device's tree manager: a cell's record says both, so that a skip shows in one or the other."""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass, field

_captured = [0]  # graphs slimbench's loaders captured themselves (torch.cuda.CUDAGraph, compiled packages)


def note_capture() -> None:
    """Count a CUDA graph a slimbench loader captured itself, beside torch.compile's."""
    _captured[0] += 1


def recorded_graphs(device_index: int) -> int:
    """CUDA graphs recorded in this process: torch.compile's cudagraph trees' on this device (in this
    thread), and slimbench's own captures."""
    trees = sys.modules.get("torch._inductor.cudagraph_trees")  # not imported: torch.compile recorded none
    manager = trees.get_manager(device_index, create_if_none_exists=False) if trees else None
    nodes, count = list(manager.get_roots()) if manager is not None else [], _captured[0]
    while nodes:
        node = nodes.pop()
        count += 1
        nodes.extend(child for children in node.children.values() for child in children)
    return count


def skips() -> int:
    """The CUDA graphs torch.compile declined to record where asked for them, in this process (each time, part
    of the work runs without a graph)."""
    from torch._dynamo.utils import counters

    return counters["inductor"]["cudagraph_skips"]


# torch's logger of those skips, by name: importing Inductor's CUDA graph modules to reach it would cost
# every GPU worker about a second, also for models that torch.compile never sees
SKIP_LOGGER = "torch._inductor.cudagraph_utils.__cudagraphs"


def skip_reason(message: str) -> str | None:
    """The reason in torch's "skipping cudagraphs due to ..." message, on one line; None if not one."""
    found = re.search(r"(?:skipping cudagraphs due to )+(.*?)(?:\. Found from|\n|$)", message)
    return found.group(1).strip() if found else None


class _Reasons(logging.Handler):
    def __init__(self, into: list[str]):
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        reason = skip_reason(record.getMessage())
        if reason and reason not in self.into:
            self.into.append(reason)


@dataclass
class GraphWatch:
    """Counts from `start()` on: graphs recorded and skips on `device_index`, with the reasons torch logged.

    `facts()` gives the record's fields `cuda_graphs` and `cuda_graph_skips`, and `cuda_graph_skip_reasons`
    for the bench's log (not kept in the record)."""

    device_index: int
    reasons: list[str] = field(default_factory=list)
    _start: tuple[int, int] = (0, 0)
    _handler: logging.Handler | None = None

    def start(self) -> GraphWatch:
        self.stop()
        self.reasons.clear()
        self._handler = _Reasons(self.reasons)
        logging.getLogger(SKIP_LOGGER).addHandler(self._handler)
        self._start = (recorded_graphs(self.device_index), skips())
        return self

    def stop(self) -> None:
        if self._handler is not None:
            logging.getLogger(SKIP_LOGGER).removeHandler(self._handler)
            self._handler = None

    def facts(self) -> dict:
        facts = {
            # torch drops a device's tree manager once no compiled function that uses it is alive
            "cuda_graphs": max(0, recorded_graphs(self.device_index) - self._start[0]),
            "cuda_graph_skips": skips() - self._start[1],
            "cuda_graph_skip_reasons": list(self.reasons),
        }
        self.stop()
        return facts


def watch(device) -> GraphWatch | None:
    """A started watch over a GPU's CUDA graphs (`device` a slimbench Device); None off a GPU."""
    if not device.is_cuda:
        return None
    import torch

    return GraphWatch(torch.cuda.current_device() if device.index is None else device.index).start()
