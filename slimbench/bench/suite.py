"""The variant suite `pytest --benchmark` collects: one test per variant x workload x device, timed
by pytest-benchmark's `benchmark` fixture, so `--benchmark-json`, `--benchmark-compare` and
`--benchmark-only` work as they do for functions.

The checkpoint (default: the embedded default), recipes, devices and workloads come from the
`--slimbench-*` options. Each variant is built once (an up-to-date one is reused), loaded once per
device, scored once per device; each cell's slimbench record (memory, accuracy, agreement, device,
environment) goes into the benchmark's `extra_info` and is appended to `<out>/results.jsonl`, so
`slimbench report` reads either. A variant that cannot run on a device is a "not run" record and a
skipped test whose reason says why; a recipe this machine cannot build (fp8 without an fp8 GPU, a package
missing) is tried once, and its cells are skipped with the reason, as the demo's "not built" line.

Timing here is pytest-benchmark's: the pytest process itself, the device synchronized after every
call on a GPU. Memory is this process's (GPU peak counters and peak RSS reset before each cell);
`slimbench bench` measures each variant in a fresh process of its own.
"""

from __future__ import annotations

import itertools
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from slimbench.bench.plugin import split_csv

pytestmark = pytest.mark.slimbench_benchmark


@dataclass
class Plan:
    checkpoint: Path | None
    recipes: list[str] | None
    devices: list[str]
    batch_sizes: list[int]
    seq_lens: list[int]
    eval_data: Path | None
    train_data: Path | None
    out: Path
    rounds: int
    warmup: int
    threads: int | None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @classmethod
    def from_config(cls, config) -> Plan:
        from slimbench.backends import Device

        opt = config.getoption
        devices = split_csv(opt("--slimbench-devices"))
        if not devices:
            devices = [str(Device.best())]
        # checked in pytest_configure (slimbench.bench.plugin)
        sizes = [int(x) for x in split_csv(opt("--slimbench-batch-sizes"))]
        lens = [int(x) for x in split_csv(opt("--slimbench-seq-lens"))]
        path = opt("--slimbench-checkpoint")
        return cls(
            checkpoint=Path(path) if path else None,
            recipes=split_csv(opt("--slimbench-recipes")) or None,
            devices=[str(Device.parse(d)) for d in devices],
            batch_sizes=sizes, seq_lens=lens,
            eval_data=Path(opt("--slimbench-eval-data")) if opt("--slimbench-eval-data") else None,
            train_data=Path(opt("--slimbench-train-data")) if opt("--slimbench-train-data") else None,
            out=Path(opt("--slimbench-out")), rounds=int(opt("--slimbench-rounds")),
            warmup=int(opt("--slimbench-warmup")), threads=opt("--slimbench-threads"),
        )  # fmt: skip

    def recipes_for(self, device: str) -> list[str]:
        """The recipes given, else the demo's for the checkpoint's task on that kind of device (a task the demo
        has no default for: the text classifier's)."""
        from slimbench import SlimbenchError
        from slimbench.cli import DEMO_RECIPES, GPU_DEMO_RECIPES
        from slimbench.core.checkpoint import Checkpoint

        if self.recipes:
            return self.recipes
        task = "text-classification"
        if self.checkpoint is not None:
            try:
                task = Checkpoint.open(self.checkpoint).task
            except SlimbenchError as e:
                raise pytest.UsageError(f"--slimbench-checkpoint: {e}") from None
        demo = GPU_DEMO_RECIPES if device.startswith("cuda") else DEMO_RECIPES
        return list(demo.get(task, demo["text-classification"]))


def pytest_generate_tests(metafunc):
    if "cell" not in metafunc.fixturenames:
        return
    plan = Plan.from_config(metafunc.config)
    cells = [
        (recipe, device, bs, seq)
        for device in plan.devices
        for recipe in plan.recipes_for(device)
        for bs in plan.batch_sizes
        for seq in plan.seq_lens
    ]
    names = [f"{Path(r).stem}-{d}-b{bs}-s{s}" for r, d, bs, s in cells]
    metafunc.parametrize("cell", cells, ids=names)


@pytest.fixture(scope="session")
def plan(pytestconfig) -> Plan:
    return Plan.from_config(pytestconfig)


class Workbench:
    """The variants of the plan, built on first use; one loaded variant at a time; scores cached."""

    def __init__(self, plan: Plan):
        from slimbench.core.checkpoint import Checkpoint
        from slimbench.tasks import DATA_FORMATS, get_task

        self.plan = plan
        if plan.checkpoint is None:
            from slimbench.defaults import default_encoder

            # built (on first use) where the plan measures: on its first GPU if it has one
            default = default_encoder(device=next((d for d in plan.devices if d.startswith("cuda")), "cpu"))
            plan.checkpoint = default.path
            plan.eval_data = plan.eval_data or default.eval_path
            plan.train_data = plan.train_data or default.train_path
        if plan.eval_data is None:
            raise pytest.UsageError(f"--slimbench-checkpoint needs --slimbench-eval-data ({DATA_FORMATS})")
        self.checkpoint = Checkpoint.open(plan.checkpoint)
        task = get_task(self.checkpoint.task)
        self.samples = task.latency_texts(plan.eval_data)[:16]
        self.train = (
            task.read_train(plan.train_data, self.checkpoint.load_config()) if plan.train_data else None
        )
        self.variants: dict[str, Path] = {}
        self.not_built: dict[str, str] = {}
        self.loaded = (None, None)
        self.scores: dict[tuple, dict] = {}

    def variant(self, recipe: str) -> Path:
        """The recipe's variant, built on first use; where it cannot be built here, the calling test is
        skipped with the one-line reason (the build is not tried again for the recipe's other cells)."""
        from slimbench import SlimbenchError
        from slimbench.optimize.recipes import load_recipe
        from slimbench.pipeline import optimize

        if recipe not in self.variants and recipe not in self.not_built:
            try:
                variant = optimize(self.checkpoint, load_recipe(recipe), self.plan.out / "models",
                                   sample_texts=self.samples, train_data=self.train, progress=False,
                                   log=lambda *_: None)  # fmt: skip
                self.variants[recipe] = variant.path
            except SlimbenchError as e:
                self.not_built[recipe] = " ".join(str(e).splitlines())
        if recipe in self.not_built:
            pytest.skip(f"{Path(recipe).stem} not built here: {self.not_built[recipe]}")
        return self.variants[recipe]

    def load(self, path: Path, device: str):
        from slimbench.backends import load

        if self.loaded[0] != (path, device):
            self.loaded = (None, None)  # the previous variant is released first
            self.loaded = ((path, device), load(path, device, self.plan.threads))
        return self.loaded[1]

    def score(self, path: Path, device: str, seq_len: int = 128) -> dict:
        from slimbench.tasks import get_task

        key = (path, device)
        if key not in self.scores:
            loaded = self.load(path, device)
            self.scores[key] = get_task(loaded.manifest["task"]).score(loaded, self.plan.eval_data, seq_len)
        return self.scores[key]


@pytest.fixture(scope="session")
def workbench(plan) -> Workbench:
    return Workbench(plan)


def test_variant(cell, workbench, plan, benchmark):
    from slimbench.backends import Device, cannot_run
    from slimbench.bench.runner import append_record, make_record, record_env
    from slimbench.bench.timing import summarize
    from slimbench.bench.worker import cell_facts, reset_cell
    from slimbench.core.manifest import read_manifest
    from slimbench.tasks import get_task

    recipe, device_spec, bs, seq = cell
    device = Device.parse(device_spec).require()
    path = workbench.variant(recipe)
    manifest = read_manifest(path)
    results = plan.out / "results.jsonl"
    fill = dict(device=device, run_id=plan.run_id, num_threads=plan.threads or 0, env=record_env(device))
    reason = cannot_run(manifest, device)
    if reason:
        record = make_record(manifest, (bs, seq), None, None, reason=reason, **fill)
        append_record(results, record)
        benchmark.extra_info.update({k: v for k, v in record.items() if k != "env"})
        pytest.skip(f"not run on {device}: {reason}")
    base = workbench.score(workbench.variant("baseline"), str(device))
    acc = workbench.score(path, str(device))
    loaded = workbench.load(path, str(device))
    task = get_task(manifest["task"])
    call, items = task.workload(loaded, task.latency_texts(plan.eval_data), bs, seq)
    counter = itertools.count()

    def run():
        call(next(counter))
        device.synchronize()

    graphs = reset_cell(device)
    benchmark.pedantic(run, rounds=plan.rounds, warmup_rounds=plan.warmup, iterations=1)
    if benchmark.stats is None:  # --benchmark-disable: run once, nothing to record
        if graphs:
            graphs.stop()
        return
    timing = summarize([t * 1e3 for t in benchmark.stats.stats.data], items)
    timing.update(cell_facts(device, graphs))
    fill["num_threads"] = timing["num_threads"]
    record = make_record(manifest, (bs, seq), acc, base, timing=timing, **fill)
    append_record(results, record)
    benchmark.extra_info.update(json.loads(json.dumps(record, default=str)))
