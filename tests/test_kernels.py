"""Each Triton kernel against its PyTorch reference, in the Triton interpreter on the CPU
(TRITON_INTERPRET=1), over odd and edge-case shapes and three dtypes. Speed is measured on a
GPU by the benchmark suite, never here."""

import pytest
import torch

from slimbench.kernels import _launch, activations, attention, layer_norm, quant_matmul, rms_norm

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOL = {torch.float32: (1e-5, 1e-5), torch.float16: (2e-3, 2e-3), torch.bfloat16: (2e-2, 2e-2)}


def close(got, want, dtype, scale=1.0):
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(got.float(), want.float(), atol=atol * scale, rtol=rtol * scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 8), (3, 5, 384), (2, 7, 100), (1, 33, 768)])
@pytest.mark.parametrize("residual", [True, False])
def test_add_layer_norm(shape, dtype, residual):
    torch.manual_seed(0)
    x = torch.randn(shape).to(dtype)
    r = torch.randn(shape).to(dtype) if residual else None
    w, b = torch.randn(shape[-1]).to(dtype), torch.randn(shape[-1]).to(dtype)
    close(layer_norm.add_layer_norm(x, r, w, b, 1e-12), layer_norm.reference(x, r, w, b, 1e-12), dtype, 4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 16), (2, 9, 288), (3, 5, 1000)])
def test_rms_norm_with_and_without_residual(shape, dtype):
    torch.manual_seed(0)
    x, r, w = torch.randn(shape).to(dtype), torch.randn(shape).to(dtype), torch.rand(shape[-1]).to(dtype)
    close(rms_norm.rms_norm(x, w, 1e-6), rms_norm.reference(x, w, 1e-6), dtype, 4)
    y, s = rms_norm.rms_norm(x, w, 1e-6, residual=r)
    y_ref, s_ref = rms_norm.reference(x, w, 1e-6, residual=r)
    close(y, y_ref, dtype, 4)
    close(s, s_ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 3, 1536), (5, 7, 1000)])
def test_bias_gelu_and_swiglu(shape, dtype):
    torch.manual_seed(0)
    x, up, bias = (
        torch.randn(shape).to(dtype) * 3,
        torch.randn(shape).to(dtype),
        torch.randn(shape[-1]).to(dtype),
    )
    close(activations.bias_gelu(x, bias), activations.bias_gelu_reference(x, bias), dtype, 2)
    tanh = activations.bias_gelu(x, bias, approximate="tanh")
    close(tanh, activations.bias_gelu_reference(x, bias, approximate="tanh"), dtype, 2)
    close(activations.swiglu(x, up), activations.swiglu_reference(x, up), dtype, 2)


def test_bias_gelu_tanh_is_gpt2_gelu_new():
    from transformers.activations import NewGELUActivation

    x, bias = torch.randn(3, 5, 64) * 3, torch.randn(64)
    close(activations.bias_gelu(x, bias, approximate="tanh"), NewGELUActivation()(x + bias), torch.float32, 2)
    with pytest.raises(ValueError, match="approximate"):
        activations.bias_gelu(x, bias, approximate="sigmoid")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "B, H, S_q, S_k, D, causal",
    [(1, 1, 1, 1, 32, False), (2, 3, 17, 17, 64, False), (1, 2, 33, 33, 128, True), (2, 1, 5, 70, 32, True),
     (1, 2, 70, 70, 64, True)],
)  # fmt: skip
def test_attention_matches_reference(B, H, S_q, S_k, D, causal, dtype):
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, s, D).to(dtype) for s in (S_q, S_k, S_k))
    keep = torch.ones(B, S_k, dtype=torch.bool)
    keep[-1, : S_k // 3] = False  # left padding in the last sequence
    got = attention.flash_attention(q, k, v, keep, causal=causal)
    close(got, attention.reference(q, k, v, keep, causal=causal), dtype, 5)


def test_attention_fully_padded_row_gives_zeros():
    q, k, v = (torch.randn(2, 2, 9, 32) for _ in range(3))
    keep = torch.ones(2, 9, dtype=torch.bool)
    keep[1] = False
    got = attention.flash_attention(q, k, v, keep)
    assert torch.equal(got[1], torch.zeros_like(got[1]))
    torch.testing.assert_close(got, attention.reference(q, k, v, keep))


# Launches the autotuner may choose on a GPU, fixed here so each path runs: tiles smaller and larger
# than the sequences, causal blocks with and without a mask-free part, keys split 2 and 4 ways
# (flash-decoding, some splits left without keys) and combined by the second kernel.
ATTENTION_LAUNCHES = [
    {"BLOCK_M": 16, "BLOCK_N": 16, "SPLITS": 1},
    {"BLOCK_M": 64, "BLOCK_N": 32, "SPLITS": 1, "num_warps": 8},
    {"BLOCK_M": 16, "BLOCK_N": 32, "SPLITS": 4},
    {"BLOCK_M": 32, "BLOCK_N": 16, "SPLITS": 2},
]


@pytest.mark.parametrize("launch", range(len(ATTENTION_LAUNCHES)))
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize(
    "B, H, S_q, S_k, D, causal",
    [(2, 2, 1, 100, 64, False), (2, 2, 1, 100, 64, True), (1, 2, 70, 70, 32, True), (1, 1, 40, 20, 32, True),
     (2, 1, 17, 50, 16, False)],
)  # fmt: skip
def test_attention_every_launch(B, H, S_q, S_k, D, causal, padded, launch):
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, s, D) for s in (S_q, S_k, S_k))
    keep = None
    if padded:
        keep = torch.ones(B, S_k, dtype=torch.bool)
        keep[-1, : S_k // 3] = False
    got = attention.flash_attention(q, k, v, keep, causal=causal, config=ATTENTION_LAUNCHES[launch])
    close(got, attention.reference(q, k, v, keep, causal=causal), torch.float32, 5)


@pytest.mark.parametrize(
    "launch", [None, ATTENTION_LAUNCHES[2], {**ATTENTION_LAUNCHES[0], "PACK_GQA": False}]
)
@pytest.mark.parametrize("H_kv", [1, 2])
@pytest.mark.parametrize("S_q, causal", [(1, True), (5, True), (33, True), (20, False)])
def test_attention_grouped_query_heads_read_their_kv_head(S_q, causal, H_kv, launch):
    """Grouped-query attention (Llama 3, Mistral...): 4 query heads on 1 or 2 K/V heads, read in place;
    decode-sized queries packed one program per K/V head (its rows: every head's queries), or not."""
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, S_q, 32), torch.randn(2, H_kv, 70, 32), torch.randn(2, H_kv, 70, 32)
    keep = torch.ones(2, 70, dtype=torch.bool)
    keep[1, :20] = False
    got = attention.flash_attention(q, k, v, keep, causal=causal, config=launch)
    want = attention.reference(
        q, k.repeat_interleave(4 // H_kv, 1), v.repeat_interleave(4 // H_kv, 1), keep, causal
    )
    close(got, want, torch.float32, 5)
    with pytest.raises(ValueError, match="query heads cannot share"):
        attention.flash_attention(q, torch.randn(2, 3, 70, 32), torch.randn(2, 3, 70, 32))


def test_attention_splits_keys_only_for_short_queries_that_leave_sms_idle(monkeypatch):
    monkeypatch.setattr(_launch, "sm_count", lambda device: 132)
    gpu = torch.device("cuda")
    assert attention.kv_splits_for(32, 1, 8192, gpu) == 8  # 1 x 32 heads: x8 fills 132 SMs
    assert attention.kv_splits_for(32, 1, 1024, gpu) == 4  # stops where a split would hold < 256 keys
    assert attention.kv_splits_for(64 * 12, 1, 1024, gpu) == 1  # enough heads already
    assert attention.kv_splits_for(32, 128, 8192, gpu) == 1  # prefill
    assert attention.kv_splits_for(32, 1, 8192, torch.device("cpu")) == 1


def test_attention_rejects_unsupported_head_dims():
    q = torch.randn(1, 1, 4, 48)
    with pytest.raises(ValueError, match="head dim"):
        attention.flash_attention(q, q, q)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bits, group", [(8, 128), (4, 32), (4, 128)])
@pytest.mark.parametrize("M, K, N", [(1, 128, 64), (7, 256, 100), (33, 384, 96)])
def test_weight_only_matmul(M, K, N, bits, group, dtype):
    torch.manual_seed(0)
    linear = torch.nn.Linear(K, N).to(dtype)
    module = quant_matmul.QuantLinear(linear, bits=bits, group_size=group)
    x = torch.randn(2, M, K).to(dtype)
    want = quant_matmul.reference(x, module.qweight, module.scale, module.bias, bits, group)
    close(module(x), want, dtype, 20 if dtype != torch.float32 else 10)
    # the quantization itself (fp32 scales) is within half a step of the weights
    w = linear.weight.detach().float()
    q, scale = quant_matmul.quantize_int8(w) if bits == 8 else quant_matmul.quantize_int4(w, group)
    step = scale[:, None] if bits == 8 else scale.repeat_interleave(group, dim=1)
    assert bool(((quant_matmul.dequantize(q, scale, bits, group) - w).abs() <= step / 2 + 1e-7).all())


# Launches the autotuner may choose on a GPU, fixed here so each path runs: one K tile per group or
# several groups per tile (int4), K split across programs (2, and 3 with a split left without work),
# tiles deeper than K, wide-M tiles.
LAUNCHES = [
    {"BM": 16, "BN": 16, "BK": 32, "SPLIT_K": 1},
    {"BM": 16, "BN": 32, "BK": 64, "SPLIT_K": 2},
    {"BM": 32, "BN": 64, "BK": 128, "SPLIT_K": 3},
    {"BM": 16, "BN": 16, "BK": 256, "SPLIT_K": 1, "num_warps": 2},
    {"BM": 1, "BN": 32, "BK": 64, "SPLIT_K": 2},  # one row: multiply-and-sum, no tensor cores
]


# The one-row launch only ever serves M = 1 (candidate_configs; the autotuner keys on M's power of two).
LAUNCH_SHAPES = [
    (M, K, N, launch)
    for M, K, N in [(1, 256, 64), (33, 384, 96)]
    for launch in range(len(LAUNCHES))
    if M == 1 or LAUNCHES[launch]["BM"] > 1
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bits, group", [(8, 128), (4, 32), (4, 128)])
@pytest.mark.parametrize("M, K, N, launch", LAUNCH_SHAPES)
def test_weight_only_matmul_every_launch(M, K, N, bits, group, dtype, launch):
    torch.manual_seed(0)
    module = quant_matmul.QuantLinear(torch.nn.Linear(K, N).to(dtype), bits=bits, group_size=group)
    x = torch.randn(M, K).to(dtype)
    got = quant_matmul.weight_only_matmul(x, module.qweight, module.scale, module.bias, bits, group,
                                          config=LAUNCHES[launch])  # fmt: skip
    close(got, quant_matmul.reference(x, module.qweight, module.scale, module.bias, bits, group), dtype, 20)


def test_weight_only_matmul_splits_k_only_for_skinny_products_that_leave_sms_idle(monkeypatch):
    monkeypatch.setattr(_launch, "sm_count", lambda device: 132)
    gpu = torch.device("cuda")
    assert quant_matmul.split_k_for(1, 4096, 4096, gpu) == 1  # 256 narrow tiles fill 132 SMs
    assert quant_matmul.split_k_for(1, 1024, 8192, gpu) == 4  # 64 tiles: x4 fills them
    assert quant_matmul.split_k_for(16, 384, 1536, gpu) == 2  # stops where a split would hold < 512 of K
    assert quant_matmul.split_k_for(17, 384, 8192, gpu) == 1  # not skinny
    assert quant_matmul.split_k_for(1, 384, 8192, torch.device("cpu")) == 1


def test_weight_only_matmul_candidate_configs_fit_the_shape():
    def tiles(m, k, split):
        return {(c.kwargs["BM"], c.kwargs["BK"]) for c in quant_matmul.candidate_configs(m, k, split)}

    assert {bm for bm, _ in tiles(1, 4096, 1)} == {1, 16}  # one row: multiply-and-sum tiles timed too
    assert {bm for bm, _ in tiles(2, 4096, 1)} == {16}
    assert max(bm for bm, _ in tiles(40, 4096, 1)) == 64 and min(bm for bm, _ in tiles(40, 4096, 1)) == 32
    assert max(bk for _, bk in tiles(1, 128, 1)) == 128 and max(bk for _, bk in tiles(1, 4096, 16)) == 256
    assert quant_matmul.candidate_configs(1, 16, 1)  # never empty


def test_int4_kernel_needs_a_power_of_two_group():
    with pytest.raises(ValueError, match="power of two"):
        quant_matmul.QuantLinear(torch.nn.Linear(96, 8), bits=4, group_size=48)


def test_int4_packing_round_trips():
    w = torch.randn(8, 64)
    q, s = quant_matmul.quantize_int4(w, 32)
    assert q.dtype == torch.uint8 and q.shape == (8, 32) and s.shape == (8, 2)
    deq = quant_matmul.dequantize(q, s, 4, 32)
    assert float((deq - w).abs().max()) <= float(s.max()) / 2 + 1e-6
    with pytest.raises(ValueError, match="multiple of group_size"):
        quant_matmul.quantize_int4(torch.randn(4, 40), 32)
