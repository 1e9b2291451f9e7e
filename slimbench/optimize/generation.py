"""The `static-cache` step (generating models: causal LMs, seq2seq): `generate()` with a static KV cache,
preallocated once per batch and length, whose decode step transformers compiles on a GPU (torch.compile, mode
"reduce-overhead": CUDA graphs).
The choice is saved in generation_config.json, so a plain `from_pretrained` + `generate()` deploys it.
"""

from __future__ import annotations

from dataclasses import dataclass

from slimbench.optimize.registry import register
from slimbench.tasks import TASKS


@dataclass(frozen=True)
class StaticCacheConfig:
    """generate() with a static KV cache; on a GPU its decode step compiled to CUDA graphs."""

    compile: bool = True  # false: the static cache alone (generation_config.disable_compile)


@register("static-cache", StaticCacheConfig, takes=("torch",),
          tasks=tuple(name for name, task in TASKS.items() if task.generates))  # fmt: skip
def static_cache(model, config: StaticCacheConfig, ctx):
    """generate() with a static KV cache and a compiled decode step (CUDA graphs on GPUs)."""
    generation = model.generation_config
    generation.cache_implementation = "static"
    generation.disable_compile = not config.compile
    ctx.notes["generation"] = {
        "cache_implementation": "static",
        "decode_step": "torch.compile (reduce-overhead) on CUDA" if config.compile else "eager",
    }
    return model
