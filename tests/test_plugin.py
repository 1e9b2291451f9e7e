pytest_plugins = ["pytester"]

SUITE = """
import pytest

@pytest.mark.slimbench_benchmark
def test_speed():
    pass

def test_unit():
    pass
"""


def test_benchmark_suite_is_skipped_by_default_and_selected_by_flag(pytester):
    pytester.makepyfile(SUITE)
    pytester.runpytest().assert_outcomes(passed=1, skipped=1)
    result = pytester.runpytest("--benchmark")
    result.assert_outcomes(passed=1, deselected=1)
