"""Steps that change a model: prune, recover, quantize, fused kernels, export to ONNX.

Importing this package registers every step; see slimbench.registry.
"""

from slimbench.optimize import baseline, export, kernels, prune, quantize, recover  # noqa: F401
from slimbench.optimize.context import StepContext

__all__ = ["StepContext"]
