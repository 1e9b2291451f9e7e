"""Steps that change a model: prune, recover, quantize, precision, fused kernels, export to ONNX
(optimum, or an ONNX Runtime GenAI model for causal LMs), a static KV cache for generate();
the recipe runner (apply.py) with its agreement check, and the search planner (search.py).

STEPS is the registry: the one source of truth for what a recipe may name, what the CLI lists and
what the README table is generated from. A new step is one module and one entry here.
"""

from slimbench.optimize import (
    aot,
    baseline,
    export,
    genai,
    generation,
    kernels,
    precision,
    prune,
    quantize,
    recover,
)
from slimbench.optimize.context import StepContext
from slimbench.optimize.registry import Step

STEPS: dict[str, Step] = {
    s.name: s
    for s in (
        baseline.baseline,
        prune.prune,
        recover.recover,
        quantize.dynamic_int8,
        quantize.quantize,
        precision.precision,
        kernels.kernels,
        aot.compile_aot,
        export.export,
        genai.genai,
        generation.static_cache,
    )
}


def steps() -> dict[str, Step]:
    """Every step, by name."""
    return dict(STEPS)


__all__ = ["STEPS", "Step", "StepContext", "steps"]
