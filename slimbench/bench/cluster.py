"""Many machines: each (variant, device) of a bench run as a Ray task (the optional `ray` extra).

A task asks for a GPU on CUDA (optionally a given accelerator type) or `num_threads` CPUs, runs the same
measuring process the local runner runs on whichever node Ray places it, and returns the timings, the
eval-set score and that node's environment; the driver appends the records to one JSONL as each task
finishes. A task whose worker process dies (node lost, killed, out of memory) is retried by Ray
(`max_retries`); records already appended stay. Model directories and the eval data must be at the
same paths on every node (a shared filesystem).
"""

from __future__ import annotations

from collections.abc import Iterator

from slimbench import SlimbenchError

MAX_RETRIES = 3


class RayPool:
    """Submits measuring jobs as Ray tasks and yields their outcomes as they finish."""

    def __init__(self, measure, address: str, device, num_threads: int, accelerator_type: str | None = None,
                 log=print):  # fmt: skip
        """`measure(job) -> outcome` runs on the nodes (a module-level function Ray can import there)."""
        try:
            import ray
        except ImportError:
            raise SlimbenchError("--ray needs Ray: pip install 'slimbench[ray]'") from None
        self.ray = ray
        if not ray.is_initialized():
            import os

            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine
            local = (
                {"address": None, "_node_ip_address": "127.0.0.1"}
                if address == "local"
                else {"address": address}
            )
            ray.init(log_to_driver=False, include_dashboard=False, **local)
        resources = {"num_gpus": 1} if device.is_cuda else {"num_cpus": num_threads}
        if accelerator_type:
            resources["accelerator_type"] = accelerator_type
        self.remote = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False, **resources)(measure)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        log(f"ray: {len(nodes)} node(s), {ray.cluster_resources().get('GPU', 0):g} GPU(s), "
            f"{ray.cluster_resources().get('CPU', 0):g} CPU(s)")  # fmt: skip

    def as_completed(self, jobs: dict) -> Iterator[tuple[object, dict]]:
        """`jobs`: key -> job. Yields (key, outcome) in the order the tasks finish."""
        pending = {self.remote.remote(job): key for key, job in jobs.items()}
        while pending:
            done, _ = self.ray.wait(list(pending), num_returns=1)
            for ref in done:
                key = pending.pop(ref)
                try:
                    yield key, self.ray.get(ref)
                except self.ray.exceptions.RayError as e:  # retries spent: the variant fails, the run goes on
                    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    yield key, {"timed": [], "accuracy": None, "reason": None, "env": {},
                                "error": f"ray task failed after {MAX_RETRIES} retries: {first}"}  # fmt: skip
