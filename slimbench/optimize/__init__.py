"""Steps that change a model: quantize, export to ONNX (and, later, prune and recover).

Importing this package registers every step; see slimbench.registry.
"""

from slimbench.optimize import baseline, export, quantize  # noqa: F401
from slimbench.optimize.context import StepContext

__all__ = ["StepContext"]
