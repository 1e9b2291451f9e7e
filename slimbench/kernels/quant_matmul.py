"""Weight-only quantized matmul, dequantizing inside the kernel: W8A16 (int8, one scale per
output channel) and W4A16 (int4 packed two per byte along K, one scale per group of K).
`QuantLinear` replaces an nn.Linear with either.

The product is memory-bound wherever the activations are few (decoding, small batches): its time
is the time to read the weight, so the kernel exists to read fewer bytes than a bf16 Linear and
do nothing else slowly. Each program computes a (BM, BN) tile of the output over its share of K:
- int4 is unpacked in registers: a (BK/2, BN) tile of packed bytes gives the low nibbles (the
  first half of each group of K) and the high nibbles (the second half), each multiplied by the
  matching contiguous columns of the activations, so every load is a whole vector, no byte is
  read twice and nothing is unpacked through memory;
- scales are applied to the partial product where a tile lies inside one group (exact: the
  integer weights are representable in fp16/bf16), else one scale row per group is broadcast
  over the tile before the product;
- skinny products whose output tiles would leave most of the GPU's SMs idle split K across
  programs (split-K), which add their partial sums into an fp32 buffer;
- a single row (decoding one token) may also run as multiply-and-sum tiles on the CUDA cores rather
  than a tensor-core product padded to 16 rows: the autotuner times both;
- the tile shapes, warps and pipeline depth are autotuned per shape on the GPU (Triton's
  autotuner, results kept in Triton's cache directory so later processes do not tune again).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import nn

from slimbench.kernels._launch import autotuned, chosen_launch, f32_dot, splits_to_fill, use_triton


@triton.jit
def _dot(x, w, IEEE: tl.constexpr, ROWS: tl.constexpr):
    """x (ROWS, k) @ w (k, n) in fp32. One row (decoding one token): a multiply and a sum on the CUDA
    cores, not a tensor-core product padded to 16 rows; else tensor cores in x's dtype, or IEEE fp32."""
    if ROWS == 1:
        xv = tl.reshape(x, (x.shape[1],)).to(tl.float32)
        return tl.reshape(tl.sum(xv[:, None] * w.to(tl.float32), axis=0), (1, w.shape[1]))
    elif IEEE:
        return tl.dot(x.to(tl.float32), w.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(x, w.to(x.dtype))


@triton.jit
def _wq_matmul_kernel(
    X, W, S, BIAS, Y, M, N, K, W_ROW, S_ROW, M_BUCKET,
    BITS: tl.constexpr, GROUP: tl.constexpr, HAS_BIAS: tl.constexpr, IEEE: tl.constexpr,
    SPLIT_K: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):  # fmt: skip
    # W_ROW: bytes per weight row (K, or K // 2 packed); S_ROW: scales per row (int4: K // GROUP). Passed
    # rather than computed so Triton sees their alignment and loads whole 16-byte vectors.
    # M_BUCKET only keys the autotuner's choice (one tuning per power of two of M).
    pid_k = tl.program_id(2)
    rm = tl.program_id(0) * BM + tl.arange(0, BM)
    rn = tl.program_id(1) * BN + tl.arange(0, BN)
    m_ok, n_ok = rm < M, rn < N
    x_rows = X + rm[:, None].to(tl.int64) * K
    w_cols = W + rn[None, :].to(tl.int64) * W_ROW
    # this program's share of K, in whole tiles: a tile never straddles two splits, nor (BK <= GROUP) two groups
    tiles_per_split = tl.cdiv(tl.cdiv(K, BK), SPLIT_K)
    acc = tl.zeros((BM, BN), tl.float32)
    if BITS == 8:
        k_lo = pid_k * tiles_per_split * BK
        k_hi = tl.minimum(K, k_lo + tiles_per_split * BK)
        rk = tl.arange(0, BK)
        for k0 in range(k_lo, k_hi, BK):
            kk = k0 + rk
            k_ok = kk < k_hi
            x = tl.load(x_rows + kk[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
            w = tl.load(w_cols + kk[:, None], mask=k_ok[:, None] & n_ok[None, :], other=0)
            acc += _dot(x, w, IEEE, BM)
        acc = acc * tl.load(S + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    else:
        # in packed bytes: a tile is BK // 2 bytes of each row; byte p holds, of group p // (GROUP / 2),
        # weight p % (GROUP / 2) in its low nibble and weight p % (GROUP / 2) + GROUP / 2 in its high one
        p_lo = pid_k * tiles_per_split * (BK // 2)
        p_hi = tl.minimum(W_ROW, p_lo + tiles_per_split * (BK // 2))
        rp = tl.arange(0, BK // 2)
        s_cols = S + rn[None, :].to(tl.int64) * S_ROW
        for p0 in range(p_lo, p_hi, BK // 2):
            p = p0 + rp
            p_ok = p < p_hi
            packed = tl.load(w_cols + p[:, None], mask=p_ok[:, None] & n_ok[None, :], other=0)
            # int8 in [-8, 7]: exact in fp16/bf16, half the registers of fp32
            lo = (packed & 0xF).to(tl.int8) - 8
            hi = (packed >> 4).to(tl.int8) - 8
            k_low = (p // (GROUP // 2)) * GROUP + p % (GROUP // 2)  # runs of GROUP / 2 contiguous columns
            xm = m_ok[:, None] & p_ok[None, :]
            x_low = tl.load(x_rows + k_low[None, :], mask=xm, other=0.0)
            x_high = tl.load(x_rows + k_low[None, :] + GROUP // 2, mask=xm, other=0.0)
            if GROUP % BK == 0:  # the tile lies in one group: scale its partial product
                s = tl.load(s_cols + p0 // (GROUP // 2), mask=n_ok[None, :], other=0.0).to(tl.float32)
                acc += (_dot(x_low, lo, IEEE, BM) + _dot(x_high, hi, IEEE, BM)) * s
            else:  # BK // GROUP groups in the tile: one scale row each, over its GROUP // 2 bytes
                g = p0 // (GROUP // 2) + tl.arange(0, BK // GROUP)
                s = tl.load(s_cols + g[:, None], mask=(g[:, None] < S_ROW) & n_ok[None, :], other=0.0)
                s = s.to(tl.float32)[:, None, :]
                lo = tl.reshape(
                    tl.reshape(lo.to(tl.float32), (BK // GROUP, GROUP // 2, BN)) * s, (BK // 2, BN)
                )
                hi = tl.reshape(
                    tl.reshape(hi.to(tl.float32), (BK // GROUP, GROUP // 2, BN)) * s, (BK // 2, BN)
                )
                acc += _dot(x_low, lo, IEEE, BM) + _dot(x_high, hi, IEEE, BM)
    if HAS_BIAS:  # added once, by the first split
        acc += tl.load(BIAS + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :] * (pid_k == 0).to(tl.float32)
    y_ptrs = Y + rm[:, None].to(tl.int64) * N + rn[None, :]
    if SPLIT_K == 1:
        tl.store(y_ptrs, acc.to(Y.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])
    else:
        tl.atomic_add(y_ptrs, acc, mask=m_ok[:, None] & n_ok[None, :])


def _config(bm, bn, bk, warps, stages):
    return triton.Config({"BM": bm, "BN": bn, "BK": bk}, num_warps=warps, num_stages=stages)


# (BM, BN, BK, warps, stages). Skinny (M <= 16): narrow, deep tiles, many programs, deep pipelines to
# keep enough bytes in flight; wider M: ordinary GEMM tiles.
SKINNY = [_config(*c) for c in [
    (16, 16, 256, 2, 4), (16, 16, 512, 4, 3), (16, 32, 128, 2, 4), (16, 32, 256, 4, 4),
    (16, 32, 512, 4, 3), (16, 64, 128, 4, 4), (16, 64, 256, 4, 3), (16, 128, 128, 4, 3),
]]  # fmt: skip
# one row (decoding a single token): multiply-and-sum tiles, no tensor-core padding
ONE_ROW = [
    _config(*c) for c in [(1, 64, 128, 4, 3), (1, 128, 64, 4, 3), (1, 32, 256, 4, 3), (1, 64, 256, 8, 3)]
]
WIDE = [_config(*c) for c in [(32, 64, 128, 4, 4), (64, 64, 64, 4, 4), (64, 128, 64, 4, 4), (128, 64, 64, 8, 3),
                              (128, 128, 64, 8, 3), (128, 128, 32, 8, 4)]]  # fmt: skip


def candidate_configs(m: int, k: int, split_k: int, bits: int = 8) -> list[triton.Config]:
    """The configs worth timing for an (m, k) product split split_k ways: tiles no taller than M
    needs and no deeper than one split's share of K; for int4, no 128x128 tiles (unpacking two
    nibble tiles per step spills registers there)."""
    if m == 1:
        configs = ONE_ROW + SKINNY
    elif m <= 16:
        configs = SKINNY
    else:
        configs = [c for c in WIDE if c.kwargs["BM"] <= max(32, triton.next_power_of_2(m))]
        if bits == 4:
            configs = [c for c in configs if c.kwargs["BM"] * c.kwargs["BN"] < 128 * 128]
    depth = max(32, triton.next_power_of_2(triton.cdiv(k, split_k)))
    return [c for c in configs if c.kwargs["BK"] <= depth] or configs[:1]


def _prune(configs, named_args, **kwargs):
    return candidate_configs(named_args["M"], named_args["K"], kwargs["SPLIT_K"], kwargs["BITS"])


_tuned_kernel = autotuned(
    _wq_matmul_kernel, ONE_ROW + SKINNY + WIDE, key=["M_BUCKET", "N", "K", "SPLIT_K"], prune=_prune,
    reset_to_zero=["Y"],
)  # fmt: skip


def tuned_launch() -> dict:
    """The launch the autotuner chose last; empty before its first launch."""
    return chosen_launch(_tuned_kernel)


def split_k_for(m: int, n: int, k: int, device: torch.device) -> int:
    """How many ways to split K: 1 unless the product is skinny (M <= 16) and its output, in
    16-column tiles (the narrowest), leaves SMs idle; each split keeps at least 512 of K."""
    return 1 if m > 16 else splits_to_fill(triton.cdiv(n, 16), k, 512, device)


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: weight ~ q * scale[:, None]."""
    scale = weight.float().abs().amax(dim=1).clamp(min=1e-8) / 127
    q = torch.round(weight.float() / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def quantize_int4(weight: torch.Tensor, group_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric group-wise int4 stored with an offset of 8 in [0, 15], two per byte: byte j of a
    group holds the group's weight j in its low nibble and weight j + group_size / 2 in its high one
    (so the kernel reads both halves of the activations contiguously); one scale per (output
    channel, group of K)."""
    n, k = weight.shape
    if k % group_size or group_size % 2:
        raise ValueError(f"in_features {k} must be a multiple of group_size {group_size}")
    groups = weight.float().reshape(n, k // group_size, group_size)
    scale = groups.abs().amax(dim=2).clamp(min=1e-8) / 7
    q = (torch.round(groups / scale[..., None]).clamp(-8, 7) + 8).to(torch.uint8)
    half = group_size // 2
    return (q[..., :half] | (q[..., half:] << 4)).reshape(n, k // 2).contiguous(), scale


def dequantize(qweight, scale, bits: int, group_size: int = 128) -> torch.Tensor:
    if bits == 8:
        return qweight.float() * scale[:, None]
    n = qweight.shape[0]
    packed = qweight.reshape(n, -1, group_size // 2)
    q = torch.cat([packed & 0xF, packed >> 4], dim=-1).float() - 8
    return (q * scale[..., None]).reshape(n, -1)


def _check_group(bits: int, group_size: int) -> None:
    if bits == 4 and (group_size < 32 or group_size & (group_size - 1)):
        raise ValueError(f"the int4 kernel needs group_size a power of two of 32 or more, got {group_size}")


def weight_only_matmul(x, qweight, scale, bias=None, bits: int = 8, group_size: int = 128, config=None):
    """x @ dequantize(qweight, scale).T + bias, for x (..., K).

    `config` ({"BM", "BN", "BK", "SPLIT_K"}, optionally "num_warps"/"num_stages") fixes the launch
    instead of the autotuner's choice and split_k_for's: the tests use it to reach every path."""
    if not use_triton(x):
        return reference(x, qweight, scale, bias, bits, group_size)
    _check_group(bits, group_size)
    shape = x.shape
    x2 = x.reshape(-1, shape[-1]).contiguous()
    m, k = x2.shape
    n = qweight.shape[0]
    config = dict(config or {})
    split_k = config.pop("SPLIT_K", None) or split_k_for(m, n, k, x2.device)
    y = (
        torch.zeros(m, n, dtype=torch.float32, device=x2.device)
        if split_k > 1
        else torch.empty(m, n, dtype=x.dtype, device=x2.device)
    )
    w_row, s_row = (k, 1) if bits == 8 else (k // 2, k // group_size)
    args = (x2, qweight, scale, bias if bias is not None else scale, y, m, n, k, w_row, s_row,
            1 if m == 1 else max(16, triton.next_power_of_2(m)))  # fmt: skip
    meta = dict(
        BITS=bits, GROUP=group_size, HAS_BIAS=bias is not None, IEEE=f32_dot(x.dtype), SPLIT_K=split_k
    )

    def grid(c):
        return triton.cdiv(m, c["BM"]), triton.cdiv(n, c["BN"]), split_k

    if config:
        _wq_matmul_kernel[grid(config)](*args, **meta, **config)
    else:
        _tuned_kernel[grid](*args, **meta)
    return y.to(x.dtype).reshape(*shape[:-1], n)


def reference(x, qweight, scale, bias=None, bits: int = 8, group_size: int = 128):
    w = dequantize(qweight, scale, bits, group_size)
    return F.linear(x.float(), w, None if bias is None else bias.float()).to(x.dtype)


def _weight_only_matmul_op(x, qweight, scale, bias, bits: int, group_size: int):
    return weight_only_matmul(x, qweight, scale, bias, bits, group_size)


# torch.compile and CUDA graphs capture the custom op whole (see slimbench.kernels.ops)
weight_only_matmul_op = torch.library.custom_op(
    "slimbench::weight_only_matmul",
    _weight_only_matmul_op,
    mutates_args=(),
    schema="(Tensor x, Tensor qweight, Tensor scale, Tensor? bias, int bits, int group_size) -> Tensor",
)
weight_only_matmul_op.register_fake(reference)


class QuantLinear(nn.Module):
    """A Linear whose weight is int8 (per channel) or int4 (per group), dequantized in the kernel."""

    def __init__(self, linear: nn.Linear, bits: int = 8, group_size: int = 128):
        super().__init__()
        if bits not in (4, 8):
            raise ValueError(f"bits must be 4 or 8, got {bits}")
        _check_group(bits, group_size)
        self.in_features, self.out_features, self.bits, self.group_size = (
            linear.in_features, linear.out_features, bits, group_size,
        )  # fmt: skip
        q, s = (
            quantize_int8(linear.weight.detach())
            if bits == 8
            else quantize_int4(linear.weight.detach(), group_size)
        )
        self.register_buffer("qweight", q)
        self.register_buffer("scale", s.to(linear.weight.dtype))
        self.bias = (
            None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        )

    def forward(self, x):
        return weight_only_matmul_op(x, self.qweight, self.scale, self.bias, self.bits, self.group_size)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, bits={self.bits}, group={self.group_size}"


def dequantized_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with every QuantLinear written back as a plain `weight`, so that
    `from_pretrained` loads it; quantizing those weights again gives the same int8/int4 values."""
    state = model.state_dict()
    for name, module in model.named_modules():
        if isinstance(module, QuantLinear):
            qweight, scale = state.pop(f"{name}.qweight"), state.pop(f"{name}.scale")
            state[f"{name}.weight"] = dequantize(qweight, scale.float(), module.bits, module.group_size).to(
                scale.dtype
            )
    return state
