"""pytest plugin (entry point `pytest11`): `pytest --benchmark` runs slimbench's benchmark suites.

Tests marked `slimbench_benchmark` are skipped unless `--benchmark` is given; with it, only they
run, together with the variant suite that ships in the package (slimbench/bench/suite.py: every
variant x workload x device of the `--slimbench-*` options below; `--slimbench-no-variants` leaves
it out). Kept free of heavy imports: pytest loads it in every session.
"""

from pathlib import Path

import pytest

SUITE = Path(__file__).with_name("suite.py")


def pytest_addoption(parser):
    from slimbench.tasks import DATA_FORMATS

    group = parser.getgroup("slimbench")
    group.addoption(
        "--benchmark",
        action="store_true",
        default=False,
        help="run slimbench's benchmark suites (tests marked slimbench_benchmark, and the variant suite) instead "
        "of the unit tests",
    )
    add = group.addoption
    add(
        "--slimbench-checkpoint",
        default=None,
        help="model directory to benchmark (default: the embedded default)",
    )
    add(
        "--slimbench-recipes",
        default=None,
        help="comma-separated built-in recipes or YAML files (default: the demo's recipes for each device)",
    )
    add(
        "--slimbench-devices",
        default=None,
        help="comma-separated cpu, cuda, cuda:N (default: cuda if any, else cpu)",
    )
    add("--slimbench-batch-sizes", default="1,32", help="comma-separated (default: 1,32)")
    add("--slimbench-seq-lens", default="128", help="comma-separated (default: 128)")
    add("--slimbench-eval-data", default=None, help=f"{DATA_FORMATS} (default: the default's)")
    add("--slimbench-train-data", default=None, help=f"{DATA_FORMATS}, for recipes that train")
    add(
        "--slimbench-out",
        default="slimbench-bench",
        help="variants and results.jsonl (default: ./slimbench-bench)",
    )
    add("--slimbench-rounds", default=20, type=int, help="timed calls per cell (default: 20)")
    add("--slimbench-warmup", default=3, type=int, help="untimed calls first (default: 3)")
    add("--slimbench-threads", default=None, type=int, help="CPU threads (default: PyTorch's)")
    add("--slimbench-no-variants", action="store_true", default=False,
        help="with --benchmark, leave the variant suite out (only the tests marked slimbench_benchmark)")  # fmt: skip


def pytest_configure(config):
    config.addinivalue_line("markers", "slimbench_benchmark: part of the suite `pytest --benchmark` runs")
    if config.getoption("--benchmark") and not config.getoption("--slimbench-no-variants"):
        config.args.append(str(SUITE))  # collected beside the paths given (or the testpaths)
        _check_recipes(config.getoption("--slimbench-recipes"))
        _check_numbers(config)


def split_csv(text: str | None) -> list[str]:
    """The items of a comma-separated option (none where it is not given)."""
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def _check_recipes(text: str | None) -> None:
    """A misspelt recipe stops the run in one line, before anything is built."""
    names = split_csv(text)
    if not names:
        return
    from slimbench import RecipeError
    from slimbench.optimize.recipes import load_recipe

    for name in names:
        try:
            load_recipe(name)
        except RecipeError as e:
            raise pytest.UsageError(f"--slimbench-recipes: {e}") from None


def _check_numbers(config) -> None:
    """Workloads and timing options out of range stop the run in one line, before anything is built."""
    for name in ("batch-sizes", "seq-lens"):
        text = config.getoption(f"--slimbench-{name}")
        try:
            values = [int(x) for x in split_csv(text)]
        except ValueError:
            values = []
        if not values or min(values) < 1:
            raise pytest.UsageError(f"--slimbench-{name} takes positive integers like 1,32, got {text!r}")
    for name, least in (("rounds", 1), ("warmup", 0), ("threads", 1)):
        value = config.getoption(f"--slimbench-{name}")
        if value is not None and value < least:
            raise pytest.UsageError(f"--slimbench-{name} takes an integer of at least {least}, got {value}")


def pytest_collection_modifyitems(config, items):
    run_bench = config.getoption("--benchmark")
    skip = pytest.mark.skip(reason="benchmark suite: run with `pytest --benchmark`")
    selected, deselected = [], []
    for item in items:
        is_bench = item.get_closest_marker("slimbench_benchmark") is not None
        if run_bench and not is_bench:
            deselected.append(item)
        else:
            if is_bench and not run_bench:
                item.add_marker(skip)
            selected.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected
