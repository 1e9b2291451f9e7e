"""Every Triton kernel, with every launch its autotuner may choose, compiles for Hopper (sm_90) and
Ampere (sm_80) GPUs and fits in their shared memory: the interpreter tests check the arithmetic,
these check what only the GPU compiler sees (layouts, dot shapes, reshapes, pipelining). No GPU is
needed: Triton compiles to a cubin for a named target, in one subprocess without the interpreter
(kernel_compile_cases.py), whose results each case reads; ptxas reports each one's registers and
spills.

The compile runs with the installed Triton and, where SLIMBENCH_EXTRA_TRITON names a directory that
holds another (`pip install --target DIR triton==X`), with that one too: CI adds the Triton of the GPU
machines slimbench is measured on, whose code generation differs (registers, spills) from the newest."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kernel_compile_cases import BROKEN, TRITON_VERSION, cases

SHARED_BYTES = {"sm90": 227 * 1024, "sm80": 163 * 1024}  # H100, A100: the most one block may use
# On Hopper (the GPUs slimbench is measured on) a launch may spill a few words, once, outside its loop;
# a tile too big for the registers spills hundreds of bytes in the loop and is left out of the configs.
HOPPER_SPILL_BYTES = 16


def _tritons() -> dict[str, str | None]:
    """Label -> directory to put first on the path (None: the installed Triton)."""
    found: dict[str, str | None] = {"installed-triton": None}
    extra = os.environ.get("SLIMBENCH_EXTRA_TRITON")
    if extra:
        dist = sorted(Path(extra).glob("triton-*.dist-info"))
        assert dist, (
            f"SLIMBENCH_EXTRA_TRITON={extra} holds no Triton (pip install --target {extra} triton==X)"
        )
        found[dist[-1].name.removesuffix(".dist-info")] = extra
    return found


TRITONS = _tritons()


@pytest.fixture(scope="module", params=list(TRITONS.items()), ids=list(TRITONS))
def compiled(request, tmp_path_factory):
    label, path = request.param
    out = tmp_path_factory.mktemp("compile") / "results.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if path:  # that Triton first, and a cache of its own
        env["PYTHONPATH"] = os.pathsep.join([path, *filter(None, [env.get("PYTHONPATH")])])
        env["TRITON_CACHE_DIR"] = str(tmp_path_factory.mktemp("triton-cache"))
    script = Path(__file__).with_name("kernel_compile_cases.py")
    subprocess.run([sys.executable, str(script), str(out)], env=env, check=True, timeout=1200)
    results = json.loads(out.read_text())
    if path:
        assert label == f"triton-{results[TRITON_VERSION]}", (
            f"{label} asked, {results[TRITON_VERSION]} compiled"
        )
    return results


@pytest.mark.parametrize("name", sorted(set(cases()) - {BROKEN}))
def test_kernel_compiles_for_the_gpu(compiled, name):
    result = compiled[name]
    assert result["ok"], result["error"]
    target = name.rsplit("@", 1)[1]
    assert result["shared"] <= SHARED_BYTES[target]
    if target == "sm90":
        assert "spill_bytes" in result, "ptxas gave no register report"
        assert result["spill_bytes"] <= HOPPER_SPILL_BYTES, (
            f"{result['spill_bytes']} bytes of registers spilled"
        )


def test_a_kernel_the_gpu_compiler_refuses_is_reported(compiled):
    assert not compiled[BROKEN]["ok"] and "dot" in compiled[BROKEN]["error"].lower()


@pytest.mark.parametrize(
    "name", sorted(n for n in cases() if n.startswith("weight_only_matmul") and n.endswith("@sm90"))
)
def test_weight_only_matmul_streams_its_weights(compiled, name):
    """What a memory-bound kernel lives on: the weights (int8, or int4 packed) move in vectors, never
    byte by byte: 16-byte async copies pipelined through shared memory for tensor-core tiles, vector
    loads straight into registers for one-row (multiply-and-sum) tiles."""
    result = compiled[name]
    assert result["byte_loads"] == 0, result
    one_row = cases()[name][3]["BM"] == 1
    assert result["vector_loads"] > 0 if one_row else result["async_copies"] > 0, result


ELEMENTWISE_AND_NORMS = ("bias_gelu", "swiglu", "add_layer_norm", "rms_norm")


@pytest.mark.parametrize(
    "name",
    sorted(
        n for n in cases() if n.endswith("@sm90") and n.split("[")[0].split("-")[0] in ELEMENTWISE_AND_NORMS
    ),
)
def test_elementwise_and_norm_kernels_load_whole_vectors(compiled, name):
    assert compiled[name]["vector_loads"] > 0 and compiled[name]["byte_loads"] == 0, compiled[name]
