"""Kernel speed on a CUDA GPU: each Triton kernel against PyTorch eager and torch.compile, with
achieved GB/s (memory-bound ops) or TFLOP/s (attention) and their fraction of the device's peak
in pytest-benchmark's extra_info; and whole models, patched against unpatched eager and
torch.compile. Run with `pytest --benchmark --slimbench-no-variants --benchmark-json=FILE`.

Timing: pytest-benchmark's clock is replaced by one that reads CUDA events (the GPU's time between
the events recorded around each call, not the host's time to synchronize), and a 256 MiB buffer is
written before every round so no call finds its inputs in L2 (as triton.testing.do_bench does).
pytest-benchmark's statistics, --benchmark-json and --benchmark-compare work on those figures."""

import os

import pytest
import torch

from slimbench.kernels import activations, attention, layer_norm, quant_matmul, rms_norm

pytestmark = [
    pytest.mark.slimbench_benchmark,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="kernel speed is measured on a CUDA GPU; none here"
    ),
    pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="interpreter timings are not speed"),
]

# name fragment -> (peak HBM GB/s, dense bf16 TFLOP/s), from the vendors' data sheets
PEAKS = {
    "H200": (4800, 989), "H100 SXM": (3350, 989), "H100 PCIe": (2000, 756), "H100": (3350, 989),
    "A100-SXM4-80GB": (2039, 312), "A100": (1555, 312), "L4": (300, 121), "T4": (320, 65),
}  # fmt: skip


def peak():
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAKS.items() if k in name), (None, None))


class CudaClock:
    """Seconds on the GPU's own clock: each reading records a CUDA event and waits for it, so the
    difference of two readings is the GPU time of the work queued between them."""

    def __init__(self):
        self.origin = torch.cuda.Event(enable_timing=True)
        self.origin.record()
        torch.cuda.synchronize()

    def __call__(self) -> float:
        now = torch.cuda.Event(enable_timing=True)
        now.record()
        now.synchronize()
        return self.origin.elapsed_time(now) / 1e3


L2_FLUSH_BYTES = 256 * 2**20  # larger than any current GPU's L2


def run(benchmark, fn, bytes_moved=None, flops=None, rounds=100):
    fn()
    torch.cuda.synchronize()
    flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.int8, device="cuda")
    benchmark._timer = CudaClock()  # pytest-benchmark reads this clock around each round
    benchmark.pedantic(fn, setup=flush.zero_, rounds=rounds, warmup_rounds=10, iterations=1)
    seconds = benchmark.stats.stats.median
    gbps, tflops = peak()
    benchmark.extra_info.update({"device": torch.cuda.get_device_name(), "median_s": seconds,
                                 "timer": "CUDA events, L2 flushed before each round"})  # fmt: skip
    if gbps is None:
        benchmark.extra_info["peak"] = (
            f"unknown GPU {torch.cuda.get_device_name()!r}: no peak to compare with"
        )
    if bytes_moved:
        benchmark.extra_info["GB/s"] = bytes_moved / seconds / 1e9
        benchmark.extra_info["fraction_of_peak_bandwidth"] = gbps and benchmark.extra_info["GB/s"] / gbps
    if flops:
        benchmark.extra_info["TFLOP/s"] = flops / seconds / 1e12
        benchmark.extra_info["fraction_of_peak_flops"] = tflops and benchmark.extra_info["TFLOP/s"] / tflops


def impls(triton_fn, eager_fn):
    return {"triton": triton_fn, "eager": eager_fn, "compile": torch.compile(eager_fn)}


@pytest.mark.parametrize("impl", ["triton", "eager", "compile"])
@pytest.mark.parametrize("tokens, hidden", [(1, 4096), (4096, 768), (8192, 4096), (4096, 8192)])
def test_add_layer_norm_speed(benchmark, impl, tokens, hidden):
    x, r = (torch.randn(tokens, hidden, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    w, b = (
        torch.ones(hidden, device="cuda", dtype=torch.bfloat16),
        torch.zeros(hidden, device="cuda", dtype=torch.bfloat16),
    )
    fn = impls(layer_norm.add_layer_norm, layer_norm.reference)[impl]
    run(benchmark, lambda: fn(x, r, w, b, 1e-12), bytes_moved=3 * x.numel() * 2)


@pytest.mark.parametrize("impl", ["triton", "eager", "compile"])
@pytest.mark.parametrize("tokens, hidden", [(1, 4096), (4096, 4096), (8192, 8192)])
def test_rms_norm_speed(benchmark, impl, tokens, hidden):
    x, r = (torch.randn(tokens, hidden, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    w = torch.ones(hidden, device="cuda", dtype=torch.bfloat16)
    fn = impls(rms_norm.rms_norm, rms_norm.reference)[impl]
    run(benchmark, lambda: fn(x, w, 1e-6, residual=r), bytes_moved=4 * x.numel() * 2)


@pytest.mark.parametrize("impl", ["triton", "eager", "compile"])
@pytest.mark.parametrize("tokens, hidden", [(4096, 3072), (8192, 14336)])
def test_swiglu_speed(benchmark, impl, tokens, hidden):
    g, u = (torch.randn(tokens, hidden, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    fn = impls(activations.swiglu, activations.swiglu_reference)[impl]
    run(benchmark, lambda: fn(g, u), bytes_moved=3 * g.numel() * 2)


@pytest.mark.parametrize("impl", ["triton", "eager", "compile"])
@pytest.mark.parametrize("tokens, hidden", [(4096, 3072), (8192, 16384)])
def test_bias_gelu_speed(benchmark, impl, tokens, hidden):
    x = torch.randn(tokens, hidden, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(hidden, device="cuda", dtype=torch.bfloat16)
    fn = impls(activations.bias_gelu, activations.bias_gelu_reference)[impl]
    run(benchmark, lambda: fn(x, b), bytes_moved=2 * x.numel() * 2)


@pytest.mark.parametrize("impl", ["triton", "sdpa-flash"])
@pytest.mark.parametrize(
    "B, H, S, D, causal", [(8, 16, 1024, 64, False), (4, 32, 4096, 128, True), (1, 32, 8192, 128, True)]
)
def test_attention_speed(benchmark, impl, B, H, S, D, causal):
    q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    flops = 4 * B * H * S * S * D / (2 if causal else 1)
    if impl == "triton":
        run(benchmark, lambda: attention.flash_attention(q, k, v, causal=causal), flops=flops)
        benchmark.extra_info["launch"] = attention.tuned_launch()
    else:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def fn():
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)

        run(benchmark, fn, flops=flops)


@pytest.mark.parametrize("impl", ["triton", "sdpa-flash"])
@pytest.mark.parametrize("B, H, S, D", [(32, 32, 4096, 128), (1, 32, 8192, 128), (64, 12, 1024, 64)])
def test_decode_attention_speed(benchmark, impl, B, H, S, D):
    """Decode-shaped: one query per sequence against a long KV cache (memory-bound: K and V read once)."""
    q = torch.randn(B, H, 1, D, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    kv_bytes = 2 * k.numel() * 2
    if impl == "triton":
        run(benchmark, lambda: attention.flash_attention(q, k, v, causal=False), bytes_moved=kv_bytes)
        benchmark.extra_info["launch"] = {"kv_splits": attention.kv_splits_for(B * H, 1, S, q.device),
                                          **attention.tuned_launch()}  # fmt: skip
    else:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def fn():
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                torch.nn.functional.scaled_dot_product_attention(q, k, v)

        run(benchmark, fn, bytes_moved=kv_bytes)


@pytest.mark.parametrize("impl", ["triton", "eager-dequant", "bf16-linear"])
@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("M", [1, 16])
@pytest.mark.parametrize("K, N", [(4096, 4096), (8192, 28672), (4096, 14336)])
def test_weight_only_matmul_speed(benchmark, impl, bits, M, K, N):
    """Decode-sized products (M = 1 and 16 tokens), the shapes of #11's targets: W8A16 >= 1.7x and
    W4A16 >= 3x the bf16 Linear at M = 1, W4A16 >= 2.5x at M = 16."""
    linear = torch.nn.Linear(K, N, bias=False, device="cuda", dtype=torch.bfloat16)
    module = quant_matmul.QuantLinear(linear, bits=bits)
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    weight_bytes = module.qweight.numel() * module.qweight.element_size() + module.scale.numel() * 2
    fn = {
        "triton": lambda: module(x),
        "eager-dequant": lambda: quant_matmul.reference(x, module.qweight, module.scale, None, bits, 128),
        "bf16-linear": lambda: linear(x),
    }[impl]
    run(benchmark, fn, bytes_moved=weight_bytes if impl != "bf16-linear" else K * N * 2)
    if impl == "triton":  # the launch the autotuner chose, for the record
        benchmark.extra_info["launch"] = {"split_k": quant_matmul.split_k_for(M, N, K, x.device),
                                          **quant_matmul.tuned_launch()}  # fmt: skip


# ------------------------------------------------------------------------ whole models, end to end


def llama_config(layers: int = 12):
    """A Llama-shaped model of about 300M parameters (random weights): what a kernel must win inside."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=layers,
                       num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=2048)  # fmt: skip


# patched: slimbench's kernels, eager; patched-graphs: the same replayed as CUDA graphs, as the kernels
# variant's loader runs it; graphs: the unpatched model replayed the same way (launch overhead gone on
# both sides); eager and compile (Inductor): the unpatched model
MODEL_IMPLS = ["patched", "patched-graphs", "eager", "graphs", "compile"]


def forward_for(model, impl):
    from slimbench.backends.triton_kernels import graph_replayed
    from slimbench.kernels.patch import apply_kernels

    torch._dynamo.reset()
    if impl.startswith("patched"):
        apply_kernels(model)
    if impl.endswith("graphs"):
        return graph_replayed(model)
    return torch.compile(model) if impl == "compile" else model


@pytest.mark.parametrize("impl", MODEL_IMPLS)
@pytest.mark.parametrize("batch", [1, 32])
def test_llama_300m_forward_speed(benchmark, impl, batch):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config()).to("cuda", torch.bfloat16).eval()
    ids = torch.randint(0, 32000, (batch, 128), device="cuda")
    forward = forward_for(model, impl)

    def fn():
        with torch.inference_mode():
            forward(input_ids=ids)

    run(benchmark, fn, rounds=30)
    benchmark.extra_info["parameters"] = sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("impl", MODEL_IMPLS)
@pytest.mark.parametrize("batch", [1, 32])
def test_minilm_forward_speed(benchmark, impl, batch):
    """The embedded default's architecture (all-MiniLM-L6-v2 with a 5-way head), bf16, seq 128."""
    from transformers import AutoModelForSequenceClassification

    from slimbench.defaults import minilm_dir

    model = AutoModelForSequenceClassification.from_pretrained(minilm_dir(), num_labels=5)
    model = model.to("cuda", torch.bfloat16).eval()
    ids = torch.randint(1000, 20000, (batch, 128), device="cuda")
    mask = torch.ones_like(ids)
    forward = forward_for(model, impl)

    def fn():
        with torch.inference_mode():
            forward(input_ids=ids, attention_mask=mask)

    run(benchmark, fn, rounds=50)
