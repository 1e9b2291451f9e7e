"""pytest plugin (entry point `pytest11`): `pytest --benchmark` runs slimbench's benchmark suite.

Tests marked `slimbench_benchmark` are skipped unless `--benchmark` is given; with it, only they
run. Kept free of heavy imports: pytest loads it in every session.
"""

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("slimbench")
    group.addoption(
        "--benchmark",
        action="store_true",
        default=False,
        help="run slimbench's benchmark suite (tests marked slimbench_benchmark) instead of the unit tests",
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "slimbench_benchmark: part of the suite `pytest --benchmark` runs")


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
