from dataclasses import dataclass
from typing import Literal

import pytest

from slimbench.optimize import steps
from slimbench.optimize.registry import Step, build_config, coerce, config_fields


@dataclass(frozen=True)
class Cfg:
    bits: Literal[4, 8] = 8
    ratio: float = 0.5
    name: str | None = None
    flag: bool = False
    sizes: tuple[int, ...] = (1,)

    def __post_init__(self):
        if not 0 <= self.ratio < 1:
            raise ValueError(f"ratio must be in [0, 1), got {self.ratio}")


STEP = Step("demo-step", Cfg, lambda m, c, ctx: m, ("torch",), None, "")


def test_coerce_accepts_allowed_values():
    assert coerce(3, float) == 3.0 and isinstance(coerce(3, float), float)
    assert coerce(None, str | None) is None
    assert coerce([1, 2], tuple[int, ...]) == (1, 2)
    assert coerce(4, Literal[4, 8]) == 4
    assert coerce("1e-4", float) == 1e-4  # how YAML 1.1 reads 1e-4


@pytest.mark.parametrize(
    "value, tp",
    [(True, int), (1, bool), ("8", int), (3, Literal[4, 8]), (1.5, int), ("x", float), (5, str | None)],
)
def test_coerce_rejects(value, tp):
    with pytest.raises(ValueError, match="must be"):
        coerce(value, tp)


def test_build_config_names_the_field():
    assert build_config(STEP, {"bits": 4, "ratio": 0.25}) == Cfg(bits=4, ratio=0.25)
    with pytest.raises(ValueError, match=r"bits must be 4 \| 8, got 3"):
        build_config(STEP, {"bits": 3})
    with pytest.raises(ValueError, match=r"unknown field 'bitz' \(allowed: bits, ratio, name, flag, sizes\)"):
        build_config(STEP, {"bitz": 4})
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\), got 1.5"):
        build_config(STEP, {"ratio": 1.5})


def test_config_fields_lists_types_and_defaults():
    assert ("bits", "4 | 8", 8) in config_fields(Cfg)
    assert ("name", "str | null", None) in config_fields(Cfg)


def test_registry_has_the_spine_steps():
    registry = steps()
    assert {"baseline", "dynamic-int8", "export"} <= set(registry)
    assert registry["export"].gives == "onnx"
    assert registry["dynamic-int8"].takes == ("torch",)
    for step in registry.values():
        assert step.summary, f"step {step.name} has no one-line summary"
