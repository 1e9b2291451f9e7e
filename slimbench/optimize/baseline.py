"""The checkpoint unchanged: fp32 eager PyTorch, the reference every variant is judged against."""

from dataclasses import dataclass

from slimbench.optimize.registry import register


@dataclass(frozen=True)
class BaselineConfig:
    """No parameters."""


@register("baseline", BaselineConfig)
def baseline(model, config: BaselineConfig, ctx):
    """The checkpoint unchanged, fp32 eager PyTorch."""
    return model
