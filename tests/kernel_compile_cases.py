"""Every Triton kernel of slimbench with every launch its autotuner may choose, compiled ahead of
time for NVIDIA GPUs (Hopper sm_90, Ampere sm_80) without one: Triton compiles to a cubin for a
named target. Run as a script (`python tests/kernel_compile_cases.py OUT.json`) in a process
without TRITON_INTERPRET, since under the interpreter `triton.jit` gives interpreted functions;
test_kernel_compile.py reads its results."""

from __future__ import annotations

import json
import sys
from concurrent.futures import ProcessPoolExecutor

import triton
import triton.language as tl

TARGETS = {"sm90": 90, "sm80": 80}
H100_SHARED_BYTES = 227 * 1024  # the most shared memory one block may use on sm_90


def _matmul_cases():
    from slimbench.kernels import quant_matmul as qm

    for i, config in enumerate(qm.ONE_ROW + qm.SKINNY + qm.WIDE):
        rows = 1 if config in qm.ONE_ROW else 16 if config in qm.SKINNY else 4096
        for bits, group, split_k in [(8, 128, 1), (4, 128, 2 if rows <= 16 else 1), (4, 32, 1)]:
            if config not in qm.candidate_configs(rows, 4096, split_k, bits):
                continue  # never chosen for this product
            types = {"X": "*bf16", "W": "*i8" if bits == 8 else "*u8", "S": "*bf16", "BIAS": "*bf16",
                     "Y": "*bf16" if split_k == 1 else "*fp32", "M": "i32", "N": "i32", "K": "i32", "W_ROW": "i32",
                     "S_ROW": "i32", "M_BUCKET": "i32"}  # fmt: skip
            constants = dict(
                BITS=bits, GROUP=group, HAS_BIAS=True, IEEE=False, SPLIT_K=split_k, **config.kwargs
            )
            yield f"weight_only_matmul[{i}:{_label(config)}]-w{bits}g{group}-split{split_k}", (
                "quant_matmul", "_wq_matmul_kernel", types, constants, config.num_warps, config.num_stages)  # fmt: skip


def _attention_cases():
    from slimbench.kernels import attention

    for i, config in enumerate(attention.PREFILL + attention.DECODE):
        for d in (64, 128):
            if config not in attention.candidate_configs(1 if config in attention.DECODE else 128, d):
                continue  # never chosen at this head dim
            # decode configs also compile with grouped-query heads packed into their rows
            for causal, keep, splits, pack in [
                (True, False, 1, False),
                (False, True, 2, config in attention.DECODE),
            ]:
                types = {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "Out": "*bf16" if splits == 1 else "*fp32",
                         "LSE": "*fp32", "KEEP": "*i8", "qk_scale": "fp32", "H": "i32", "H_KV": "i32", "S_q": "i32",
                         "S_k": "i32", "Q_BUCKET": "i32", "K_BUCKET": "i32"}  # fmt: skip
                constants = dict(HAS_KEEP=keep, CAUSAL=causal, IEEE=False, SPLITS=splits, D=d, PACK_GQA=pack,
                                 **config.kwargs)  # fmt: skip
                name = (
                    f"attention[{i}:{_label(config)}]-d{d}-{'causal' if causal else 'padded'}-splits{splits}"
                )
                yield name + ("-gqa" if pack else ""), (
                    "attention", "_attention_kernel", types, constants, config.num_warps, config.num_stages)  # fmt: skip
    for splits in (2, 16):
        types = {"O_PART": "*fp32", "LSE": "*fp32", "Out": "*bf16", "ROWS": "i32"}
        yield f"attention-combine-splits{splits}", ("attention", "_combine_kernel", types,
                                                    dict(SPLITS=splits, D=128), 4, 3)  # fmt: skip


def _small_cases():
    from slimbench.kernels import _launch, activations

    for config in activations.BLOCKS:
        types = {"X": "*bf16", "B": "*bf16", "Y": "*bf16", "numel": "i32", "N": "i32", "NUMEL_BUCKET": "i32"}
        yield f"bias_gelu[{_label(config)}]", ("activations", "_bias_gelu_kernel", types,
                                              dict(TANH=False, **config.kwargs), config.num_warps, 3)  # fmt: skip
        types = {"G": "*bf16", "U": "*bf16", "Y": "*bf16", "numel": "i32", "NUMEL_BUCKET": "i32"}
        yield f"swiglu[{_label(config)}]", ("activations", "_swiglu_kernel", types, dict(config.kwargs),
                                           config.num_warps, 3)  # fmt: skip
    for hidden in (384, 4096, 8192):
        launch = _launch.row_launch(hidden)
        constants = dict(HAS_RESIDUAL=True, BLOCK=launch["BLOCK"])
        types = {
            "X": "*bf16",
            "R": "*bf16",
            "W": "*bf16",
            "B": "*bf16",
            "Y": "*bf16",
            "N": "i32",
            "eps": "fp32",
        }
        yield f"add_layer_norm-{hidden}", ("layer_norm", "_add_layer_norm_kernel", types, constants,
                                           launch["num_warps"], 3)  # fmt: skip
        types = {
            "X": "*bf16",
            "R": "*bf16",
            "W": "*bf16",
            "Y": "*bf16",
            "S": "*bf16",
            "N": "i32",
            "eps": "fp32",
        }
        yield f"rms_norm-{hidden}", ("rms_norm", "_rms_norm_kernel", types, constants, launch["num_warps"], 3)


@triton.jit
def _mismatched_dot(X, BLOCK: tl.constexpr):  # a kernel the GPU compiler must refuse: (B, B) @ (2B, B)
    a = tl.zeros((BLOCK, BLOCK), tl.float16)
    b = tl.zeros((2 * BLOCK, BLOCK), tl.float16)
    tl.store(X + tl.arange(0, BLOCK), tl.sum(tl.dot(a, b), axis=0))


BROKEN = "mismatched-dot@sm90"
TRITON_VERSION = "triton-version"  # the results' entry naming the Triton that compiled them


def _label(config) -> str:
    return "-".join(f"{v}" for v in config.kwargs.values()) + f"-w{config.num_warps}s{config.num_stages}"


def cases() -> dict[str, tuple]:
    """name -> (module, kernel, argument types, constexprs, warps, stages), per target."""
    found = {**dict(_matmul_cases()), **dict(_attention_cases()), **dict(_small_cases())}
    found = {f"{name}@{target}": (f"slimbench.kernels.{spec[0]}", *spec[1:]) for name, spec in found.items()
             for target in TARGETS}  # fmt: skip
    return {**found, BROKEN: ("kernel_compile_cases", "_mismatched_dot", {"X": "*fp32"}, {"BLOCK": 16}, 4, 3)}


# arguments a real launch finds divisible by 16 (pointers from PyTorch are; these sizes are at the
# benchmark's shapes), so the compiled code takes the same vectorized paths as on the GPU
ALIGNED_INTS = {"N", "K", "W_ROW", "S_ROW", "M_BUCKET", "numel", "NUMEL_BUCKET", "K_BUCKET"}


def compile_case(name: str, spec: tuple) -> dict:
    """Compile one case; with ptxas's report of its registers and spills where Triton's ptxas is found."""
    import importlib
    import re
    import subprocess
    import tempfile

    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    module, kernel, types, constants, warps, stages = spec
    fn = getattr(importlib.import_module(module), kernel)
    names = fn.arg_names
    signature = {arg: types.get(arg, "constexpr") for arg in names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, arg in enumerate(names)
             if arg in types and (types[arg].startswith("*") or arg in ALIGNED_INTS)}  # fmt: skip
    src = ASTSource(
        fn, signature, constexprs={(names.index(k),): v for k, v in constants.items()}, attrs=attrs
    )
    arch = TARGETS[name.rsplit("@", 1)[1]]
    try:
        compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                                  options={"num_warps": warps, "num_stages": stages})  # fmt: skip
    except Exception as e:  # noqa: BLE001 - the message is the result
        return {"ok": False, "error": f"{type(e).__name__}: {e}"[:2000]}
    ptx = compiled.asm["ptx"]
    result = {
        "ok": True,
        "shared": compiled.metadata.shared,
        "byte_loads": len(re.findall(r"ld\.global[\w:.]*\.b8\b", ptx)),
        "async_copies": ptx.count("cp.async.cg") + ptx.count("cp.async.ca"),
        "vector_loads": len(re.findall(r"ld\.global[\w:.]*\.v[24]\.", ptx)),
    }
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        ptxas = get_ptxas(arch).path
    except (ImportError, AttributeError):  # a Triton without it: no register report
        return result
    with tempfile.TemporaryDirectory() as tmp:
        with open(f"{tmp}/kernel.ptx", "w") as f:
            f.write(ptx)
        gpu = re.search(r"\.target (sm_\w+)", ptx).group(1)
        report = subprocess.run([ptxas, "-v", "--gpu-name", gpu, f"{tmp}/kernel.ptx", "-o", f"{tmp}/kernel.cubin"],
                                capture_output=True, text=True).stderr  # fmt: skip
    registers, spills = (
        re.search(r"Used (\d+) registers", report),
        re.search(r"(\d+) bytes spill stores", report),
    )
    if registers and spills:
        result.update(registers=int(registers.group(1)), spill_bytes=int(spills.group(1)))
    return result


def main(out: str, names: list[str] | None = None) -> None:
    import os

    assert os.environ.get("TRITON_INTERPRET") != "1", "compile without the interpreter"
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    todo = {n: s for n, s in cases().items() if not names or n in names}
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        results = dict(zip(todo, pool.map(compile_case, todo, todo.values()), strict=True))
    results[TRITON_VERSION] = triton.__version__
    with open(out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
